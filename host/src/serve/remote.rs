//! `disco remote`: the Survivor scheduler's remote line protocol ("sr", protocol v2,
//! protocol.md §8) on stdin and stdout, so that a scheduler can run `ssh HOST disco remote`.
//!
//! ```text
//! C: fix MODULE          S: OK send SurvivorFixData
//! C: BEGIN DATA
//! C: <SurvivorFixData>
//! C: END DATA            S: BEGIN RESPONSE / <SurvivorFixResult> / END RESPONSE
//! C: version             S: OK v2
//! C: exit                S: OK Goodbye
//! ```
//!
//! A module NAME is only ever `DIR/fix/NAME`; the fix runs through the host with all its rules
//! (lock, timeout from the request, leak and escape detection), in this process: a remote
//! session runs one fix at a time, so the host's orphan tracking is exact.

use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::{Document, FixData, FixResult, ReturnCode};

use crate::supervise::{self, FixSpec};

/// How a remote session runs fixes.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The module directory (`DIR/fix/NAME`).
    pub module_dir: PathBuf,
    /// The host's lock directory.
    pub lock_dir: PathBuf,
    /// The host name fixes are for (`DISCO_HOST`, the lock).
    pub host: String,
    /// The largest request document read, in bytes.
    pub max_request: usize,
}

/// Reads one line without its `\n` and with every CR removed; `None` at end of input. Lines
/// are bounded: a longer one is cut (and cannot be a valid command anyway).
fn line(input: &mut impl BufRead, max: usize) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = Read::take(&mut *input, max as u64).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() as u64 >= max as u64 {
        // Discard the rest of an overlong line.
        let mut rest = Vec::new();
        input.read_until(b'\n', &mut rest)?;
    }
    buf.retain(|&b| b != b'\r');
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

fn respond(out: &mut impl Write, result: &FixResult) -> io::Result<()> {
    let xml = result.to_xml().unwrap_or_else(|_| {
        FixResult::new(ReturnCode::PROBLEM, "")
            .to_xml()
            .unwrap_or_default()
    });
    out.write_all(b"BEGIN RESPONSE\n")?;
    out.write_all(&xml)?;
    if !xml.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    out.write_all(b"END RESPONSE\n")?;
    out.flush()
}

/// Why `sr fix NAME` names no module to run; its text is the protocol's `ERROR` line.
#[derive(Debug, thiserror::Error)]
enum BadModule {
    /// No name was given.
    #[error("ERROR sr not given module name")]
    NoName,
    /// The name holds a `/`.
    #[error("ERROR Module name may not include '/'")]
    Slash,
    /// No executable module of that name.
    #[error("ERROR {} is not executable", .0.display())]
    NotExecutable(PathBuf),
}

impl Remote {
    /// Serves one session until `exit` or end of input.
    pub fn session(&self, input: &mut impl BufRead, out: &mut impl Write) -> io::Result<()> {
        while let Some(cmd) = line(input, 64 * 1024)? {
            let (word, arg) = match cmd.split_once(' ') {
                Some((w, a)) => (w, a.trim()),
                None => (cmd.as_str(), ""),
            };
            match word {
                "exit" => {
                    out.write_all(b"OK Goodbye\n")?;
                    return out.flush();
                }
                "version" => out.write_all(b"OK v2\n")?,
                "fix" => self.fix(arg, input, out)?,
                // A blank line is not a command; the original answered it like any other.
                _ => writeln!(out, "ERROR Unknown command '{cmd}'")?,
            }
            out.flush()?;
        }
        Ok(())
    }

    fn module_path(&self, name: &str) -> Result<PathBuf, BadModule> {
        if name.is_empty() {
            return Err(BadModule::NoName);
        }
        if name.contains('/') {
            return Err(BadModule::Slash);
        }
        let path = self.module_dir.join("fix").join(name);
        if !is_executable(&path) {
            return Err(BadModule::NotExecutable(path));
        }
        Ok(path)
    }

    fn fix(&self, name: &str, input: &mut impl BufRead, out: &mut impl Write) -> io::Result<()> {
        let module = match self.module_path(name) {
            Ok(p) => p,
            Err(why) => return writeln!(out, "{why}"),
        };
        out.write_all(b"OK send SurvivorFixData\n")?;
        out.flush()?;
        // BEGIN DATA, the document's lines, END DATA.
        let mut doc = Vec::new();
        let mut began = false;
        loop {
            let Some(l) = line(input, self.max_request)? else {
                // The scheduler went away mid-request: nothing to run, nobody to answer.
                return Ok(());
            };
            if !began {
                began = l == "BEGIN DATA";
                if began {
                    continue;
                }
                // Anything else instead of BEGIN DATA: no document was provided.
                return respond(
                    out,
                    &FixResult::new(ReturnCode::MISCONFIG, "Valid XML document not provided"),
                );
            }
            if l == "END DATA" {
                break;
            }
            if doc.len() + l.len() + 1 > self.max_request {
                doc.clear();
                // Keep reading to END DATA, then refuse.
                while let Some(l) = line(input, self.max_request)? {
                    if l == "END DATA" {
                        break;
                    }
                }
                return respond(
                    out,
                    &FixResult::new(ReturnCode::MISCONFIG, "Valid XML document not provided"),
                );
            }
            doc.extend_from_slice(l.as_bytes());
            doc.push(b'\n');
        }
        let result = self.run(&module, name, doc);
        respond(out, &result)
    }

    fn run(&self, module: &Path, name: &str, doc: Vec<u8>) -> FixResult {
        let data = match FixData::parse(&doc) {
            Ok(p) => p.doc,
            Err(_) => {
                return FixResult::new(ReturnCode::MISCONFIG, "Valid XML document not provided")
            }
        };
        let mut spec = FixSpec::new(module, doc, self.host.clone(), name.to_owned());
        spec.timeout = data
            .timeout
            .filter(|&t| t > 0)
            .map_or(supervise::DEFAULT_TIMEOUT, Duration::from_secs);
        spec.lock_dir = self.lock_dir.clone();
        match supervise::run(&spec) {
            Ok(o) if o.timed_out => FixResult::new(ReturnCode::TIMEDOUT, "Timed out"),
            Ok(o) => o.result(),
            Err(e) => FixResult::new(e.return_code(), e.to_string()),
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(input: &str) -> String {
        let r = Remote {
            module_dir: PathBuf::from("/nonexistent"),
            lock_dir: std::env::temp_dir(),
            host: "h".into(),
            max_request: 1 << 20,
        };
        let mut out = Vec::new();
        r.session(&mut input.as_bytes(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_original_error_lines() {
        assert_eq!(
            session("version\r\nfix\nfix a/b\nfix x\nbogus 1\nexit\nversion\n"),
            "OK v2\nERROR sr not given module name\nERROR Module name may not include '/'\n\
             ERROR /nonexistent/fix/x is not executable\nERROR Unknown command 'bogus 1'\n\
             OK Goodbye\n"
        );
    }
}

//! Before running: is the module there, executable, a script (rule 3), and which lock does its
//! header ask for (rule 1)?

use std::io::Read;
use std::path::Path;

use super::cgroup::{parse_bytes, parse_percent, parse_pids};
use super::{Limits, LockLevel, SuperviseError};
use crate::sys;

/// How many bytes of the module are read: enough for the ELF magic and a header of ~20 lines.
const HEAD: usize = 4096;
/// How many lines may come before a `# survivor-lock:` header.
const HEADER_LINES: usize = 20;

/// What the host learned from the module file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inspection {
    /// The file is an ELF executable.
    pub compiled: bool,
    /// The lock its `# survivor-lock:` header asks for.
    pub header_lock: Option<LockLevel>,
    /// The limits its `# survivor-memory-max:`, `# survivor-pids-max:` and
    /// `# survivor-cpu-max:` headers ask for.
    pub header_limits: Limits,
}

/// Looks at `module` without running it: a module that is executed itself (`executed`), or
/// read by an interpreter the host runs (a dance's template, `bash FILE`), which needs no x bit.
pub fn inspect(module: &Path, executed: bool) -> Result<Inspection, SuperviseError> {
    let meta = std::fs::metadata(module).map_err(|source| SuperviseError::ModuleNotFound {
        module: module.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(SuperviseError::NotAFile {
            module: module.to_owned(),
        });
    }
    // access(2) alone is not enough: root may "execute" a file without any x bit.
    use std::os::unix::fs::PermissionsExt;
    if executed && (meta.permissions().mode() & 0o111 == 0 || !sys::executable(module)) {
        return Err(SuperviseError::NotExecutable {
            module: module.to_owned(),
        });
    }
    let mut head = Vec::with_capacity(HEAD);
    std::fs::File::open(module)
        .and_then(|f| f.take(HEAD as u64).read_to_end(&mut head))
        .map_err(|source| SuperviseError::ReadModule {
            module: module.to_owned(),
            source,
        })?;
    Ok(Inspection {
        compiled: head.starts_with(b"\x7fELF"),
        header_lock: header_lock(&head),
        header_limits: header_limits(&head).map_err(|source| SuperviseError::Cgroup {
            module: module.to_owned(),
            source,
        })?,
    })
}

/// The level named by a `# survivor-lock: LEVEL` line among the first lines of `head`.
pub fn header_lock(head: &[u8]) -> Option<LockLevel> {
    let text = String::from_utf8_lossy(head);
    text.lines().take(HEADER_LINES).find_map(|line| {
        let rest = line.trim_start().strip_prefix('#')?.trim_start();
        let level = rest.strip_prefix("survivor-lock:")?.trim();
        level.parse().ok()
    })
}

/// The limits named by `# survivor-memory-max: BYTES`, `# survivor-pids-max: N` and
/// `# survivor-cpu-max: PERCENT` lines among the first lines of `head` (the syntax of
/// `disco fix --memory-max` and its siblings).
pub fn header_limits(head: &[u8]) -> Result<Limits, super::CgroupError> {
    let text = String::from_utf8_lossy(head);
    let mut limits = Limits::default();
    for line in text.lines().take(HEADER_LINES) {
        let Some(rest) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        let Some((key, value)) = rest.trim_start().split_once(':') else {
            continue;
        };
        match key.trim_end() {
            "survivor-memory-max" => {
                limits.memory_max = Some(parse_bytes("# survivor-memory-max:", value)?)
            }
            "survivor-pids-max" => {
                limits.pids_max = Some(parse_pids("# survivor-pids-max:", value)?)
            }
            "survivor-cpu-max" => {
                limits.cpu_max = Some(parse_percent("# survivor-cpu-max:", value)?)
            }
            _ => {}
        }
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_found_near_the_top() {
        let script = b"#!/bin/sh\n# a fix\n# survivor-lock: host\nexit 0\n";
        assert_eq!(header_lock(script), Some(LockLevel::Host));
        assert_eq!(header_lock(b"#!/bin/sh\nexit 0\n"), None);
        let late = format!("#!/bin/sh\n{}# survivor-lock: host\n", "#\n".repeat(30));
        assert_eq!(header_lock(late.as_bytes()), None);
    }

    #[test]
    fn limit_headers_are_read() {
        let script = b"#!/bin/sh\n# survivor-lock: host\n# survivor-memory-max: 64M\n\
            # survivor-pids-max: 32\n#survivor-cpu-max: 50%\nexit 0\n";
        let l = header_limits(script).unwrap();
        assert_eq!(l.memory_max, Some(64 << 20));
        assert_eq!(l.pids_max, Some(32));
        assert_eq!(l.cpu_max, Some(50));
        assert!(header_limits(b"# survivor-pids-max: many\n").is_err());
    }
}

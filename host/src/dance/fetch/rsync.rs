//! One rsync: its command line (the parameter's, with `--delete`), run with its stderr kept,
//! reaped with wait4(2) for its figures, and its failure told in its own words.

use std::fs::{self, File};
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::sys::{self, Ended};

use super::{FetchError, Fetched, Fetcher, Usage};

/// The rsync command used when the parameter `disco/client/cmds/rsync` is not set.
pub const DEFAULT_RSYNC: &str = "rsync -aHAX --delete";

/// A fresh, already unlinked file in `dir` for one rsync's stderr.
pub(super) fn stderr_file(dir: &Path) -> io::Result<File> {
    static N: AtomicU64 = AtomicU64::new(0);
    fs::create_dir_all(dir)?;
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!(".rsync-stderr-{}-{n}", std::process::id()));
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    fs::remove_file(&path)?;
    Ok(file)
}

/// rsync's stderr as one line: its own messages, without the generic `rsync error: ... (code
/// N)` summary when something more specific precedes it, joined by `; `. The line rsync-ssl's
/// `openssl s_client` prints on every connection (`verify depth is N`) says nothing about a
/// failure and is left out.
pub fn rsync_message(stderr: &str, ended: Ended) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("verify depth is "))
        .collect();
    let specific: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.starts_with("rsync error:"))
        .collect();
    let chosen = if specific.is_empty() { lines } else { specific };
    if !chosen.is_empty() {
        return chosen.join("; ");
    }
    match ended {
        Ended::Exited(code) => format!("rsync exited with status {code} and said nothing"),
        Ended::Signaled(sig) => format!("rsync was killed by signal {sig}"),
    }
}

impl Fetcher {
    /// Runs the rsync command with `extra` options, the sources `from` and `dest/`, and reaps
    /// it with wait4 for its usage. `writes` are the folders it may write (none may be or lie
    /// below a symlink within the cache).
    pub(super) fn rsync(
        &self,
        what: &str,
        extra: &[&str],
        from: &[String],
        writes: &[PathBuf],
        dest: PathBuf,
        start: Instant,
    ) -> Result<Fetched, FetchError> {
        let io_err = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| FetchError::Io {
                what: what.to_owned(),
                from: self.source.to_string(),
                action,
                path,
                source,
            }
        };
        // A symlink here would let --delete reach outside the cache.
        // (The cache itself may be a symlink: the user put it there.)
        let below_cache = writes
            .iter()
            .flat_map(|w| w.ancestors().take_while(|dir| *dir != self.cache));
        for dir in below_cache {
            if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(FetchError::Symlink {
                    what: what.to_owned(),
                    from: self.source.to_string(),
                    path: dir.to_path_buf(),
                });
            }
        }
        fs::create_dir_all(&dest).map_err(io_err("create", &dest))?;
        let mut stderr =
            stderr_file(&self.cache).map_err(io_err("create a file in", &self.cache))?;
        let program = Path::new(&self.rsync_cmd[0]);
        let child = Command::new(program)
            .args(&self.rsync_cmd[1..])
            .args(extra)
            .args(from)
            // rsync reads `DIR/` as "into DIR"; the path is ours and absolute or cache-relative.
            .arg(format!("{}/", dest.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr.try_clone().map_err(io_err("dup", &self.cache))?)
            .spawn()
            .map_err(io_err("run", program))?;
        // std's Child is dropped unreaped on purpose: wait4 on its pid reaps it and gives the
        // rusage of rsync and of the children it waited for (ssh), per fetch even when several
        // run at once (getrusage(RUSAGE_CHILDREN) deltas would mix parallel fetches up).
        let pid = child.id() as i32;
        drop(child);
        let (ended, raw) = sys::wait4(pid, false)
            .map_err(io_err("wait for", program))?
            .expect("a blocking wait4 returns the process");
        let elapsed = start.elapsed();
        let status = match ended {
            Ended::Exited(0) => {
                return Ok(Fetched {
                    path: dest,
                    rusage: Some(Usage::from_raw(&raw, elapsed)),
                    elapsed,
                })
            }
            Ended::Exited(code) => code,
            Ended::Signaled(sig) => 128 + sig,
        };
        // stderr is a file, not a pipe: a process rsync leaves behind (an ssh control master)
        // cannot keep us waiting for an end of file.
        let mut text = String::new();
        let _ = stderr.rewind();
        let _ = stderr.read_to_string(&mut text);
        Err(FetchError::Rsync {
            what: what.to_owned(),
            from: self.source.to_string(),
            message: rsync_message(&text, ended),
            status,
            rusage: Box::new(Usage::from_raw(&raw, elapsed)),
            elapsed,
        })
    }
}

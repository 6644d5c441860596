//! What `/proc` says about processes and this machine (no system call beyond reading files).

use std::fs;
use std::io;
use std::path::Path;

/// One process as `/proc/PID/stat` describes it. See proc_pid_stat(5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id.
    pub pid: i32,
    /// The short command name (`comm`).
    pub comm: String,
    /// State letter (`R`, `S`, `Z`...).
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// Process group.
    pub pgrp: i32,
    /// Session.
    pub session: i32,
    /// Start time in clock ticks since boot: with the pid, it names a process across pid reuse.
    pub start_time: u64,
}

impl ProcStat {
    /// Whether the process has ended and waits to be reaped.
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parses the text of `/proc/PID/stat`. The command name is in parentheses and may itself hold
/// spaces and parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); start time is field 22.
    Some(ProcStat {
        pid,
        comm,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        pgrp: rest.get(2)?.parse().ok()?,
        session: rest.get(3)?.parse().ok()?,
        start_time: rest.get(19)?.parse().ok()?,
    })
}

/// Reads `/proc/PID/stat`; `None` when the process is gone.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Every process on the system now (those that vanish while we read are skipped).
pub fn proc_table() -> Vec<ProcStat> {
    proc_table_in(Path::new("/proc"))
}

/// Every process that the procfs mounted at `proc` shows: the processes of the PID namespace
/// it was mounted from, numbered as there (which `/proc` may not be, for a process that
/// entered a PID namespace but still sees the host's tree).
pub fn proc_table_in(proc: &Path) -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir(proc) else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        entry.file_name().to_str()?.parse::<i32>().ok()?;
        parse_stat(&fs::read_to_string(entry.path().join("stat")).ok()?)
    })
    .collect()
}

/// The command line of `pid`, arguments joined by spaces; `[comm]` when it has none (a kernel
/// thread or a zombie), empty when the process is gone.
pub fn proc_cmdline(pid: i32) -> String {
    match fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(bytes) if !bytes.is_empty() => {
            let trimmed = bytes.strip_suffix(&[0]).unwrap_or(&bytes);
            String::from_utf8_lossy(trimmed).replace('\0', " ")
        }
        _ => proc_stat(pid)
            .map(|s| format!("[{}]", s.comm))
            .unwrap_or_default(),
    }
}

/// The pipe inodes `pid` holds open, as `(fd, inode)`, from the `pipe:[INODE]` links in
/// `/proc/PID/fd`. A process we may not look into holds nothing as far as we can tell.
pub fn proc_pipe_fds(pid: i32) -> Vec<(i32, u64)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let fd: i32 = entry.file_name().to_str()?.parse().ok()?;
        let target = fs::read_link(entry.path()).ok()?;
        let target = target.to_str()?;
        let inode = target
            .strip_prefix("pipe:[")?
            .strip_suffix(']')?
            .parse()
            .ok()?;
        Some((fd, inode))
    })
    .collect()
}

/// The machine's host name, from the kernel (`/proc/sys/kernel/hostname`).
pub fn hostname() -> io::Result<String> {
    let name = fs::read_to_string(Path::new("/proc/sys/kernel/hostname"))?;
    Ok(name.trim().to_owned())
}

/// This boot's ID (`/proc/sys/kernel/random/boot_id`): device numbers and mount IDs are
/// compared only within one boot.
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::getpid;

    #[test]
    fn stat_with_parentheses_in_the_name() {
        let s = parse_stat(
            "42 (a) b (c)) S 1 42 42 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 55762 3133440 379",
        )
        .unwrap();
        assert_eq!(s.pid, 42);
        assert_eq!(s.comm, "a) b (c)");
        assert_eq!((s.state, s.ppid, s.pgrp, s.session), ('S', 1, 42, 42));
        assert_eq!(s.start_time, 55762);
    }

    #[test]
    fn own_stat_is_read() {
        let me = proc_stat(getpid()).unwrap();
        assert_eq!(me.pid, getpid());
        assert!(!me.is_zombie());
    }
}

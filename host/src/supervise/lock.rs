//! Rule 1: the same fix never runs twice at once for the same target (protocol.md §6).
//!
//! Kernel file locks (`File::lock`, flock(2) on Linux) in a lock directory, so a host that dies
//! releases them. A standard lock takes shared locks on `host/HOST` and `service/SERVICE` and an
//! exclusive lock on `SERVICE@HOST`; a host lock an exclusive lock on `host/HOST`; a service lock
//! an exclusive lock on `service/SERVICE`. That gives exactly Survivor's conflicts, and taking
//! the files always in that order means two fixes never wait for each other in a cycle.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use super::SuperviseError;

/// How long to sleep between two tries for a busy lock: short against a fix's timeout, long
/// enough that eight waiting hosts cost nothing.
const RETRY: Duration = Duration::from_millis(5);

/// Which lock a fix holds while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum LockLevel {
    /// No lock.
    None,
    /// The standard lock: this service on this host (`SERVICE@HOST`).
    #[default]
    ServiceAtHost,
    /// Everything on this host (`*@HOST`).
    Host,
    /// This service on every host (`SERVICE@*`).
    Service,
}

/// A lock level that is none of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown lock level '{0}' (service@host, host, service or none)")]
pub struct BadLockLevel(pub String);

impl FromStr for LockLevel {
    type Err = BadLockLevel;

    fn from_str(s: &str) -> Result<LockLevel, BadLockLevel> {
        match s {
            "none" => Ok(LockLevel::None),
            "service@host" => Ok(LockLevel::ServiceAtHost),
            "host" => Ok(LockLevel::Host),
            "service" => Ok(LockLevel::Service),
            _ => Err(BadLockLevel(s.to_owned())),
        }
    }
}

impl fmt::Display for LockLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockLevel::None => "none",
            LockLevel::ServiceAtHost => "service@host",
            LockLevel::Host => "host",
            LockLevel::Service => "service",
        })
    }
}

/// How one lock file is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
enum Mode {
    #[default]
    Free,
    Shared,
    Exclusive,
}

/// The lock files a fix takes: the union of the levels asked for. Host and service locks are not
/// comparable, so "the stricter of the two" of them is both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LockPlan {
    host: Mode,
    service: Mode,
    pair: Mode,
}

impl LockPlan {
    /// The plan that satisfies every level in `levels`.
    pub fn of(levels: &[LockLevel]) -> LockPlan {
        let mut plan = LockPlan::default();
        for level in levels {
            let (host, service, pair) = match level {
                LockLevel::None => (Mode::Free, Mode::Free, Mode::Free),
                LockLevel::ServiceAtHost => (Mode::Shared, Mode::Shared, Mode::Exclusive),
                LockLevel::Host => (Mode::Exclusive, Mode::Free, Mode::Free),
                LockLevel::Service => (Mode::Free, Mode::Exclusive, Mode::Free),
            };
            plan.host = plan.host.max(host);
            plan.service = plan.service.max(service);
            plan.pair = plan.pair.max(pair);
        }
        plan
    }

    /// Whether the plan takes no lock at all.
    pub fn is_empty(&self) -> bool {
        *self == LockPlan::default()
    }
}

/// Held locks; dropping the guard closes the files, which releases them.
#[derive(Debug)]
pub struct LockGuard {
    _files: Vec<File>,
}

/// The result of waiting for a lock.
#[derive(Debug)]
pub enum Acquired {
    /// All the plan's locks are held until the guard is dropped.
    Held(LockGuard),
    /// The deadline passed while this lock file was busy.
    TimedOut {
        /// The busy lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
}

/// Checks that `name` can be part of a lock file name: no path separators, no `..`, and no
/// `@` in a host (it would make `SERVICE@HOST` ambiguous).
pub fn check_name(what: &'static str, name: &str) -> Result<(), SuperviseError> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.contains('/') || name.contains('\0') {
        Some("it holds '/' or NUL")
    } else if name == "." || name == ".." || name.starts_with('.') {
        Some("it starts with '.'")
    } else if what == "host" && name.contains('@') {
        Some("it holds '@'")
    } else {
        None
    };
    match why {
        Some(why) => Err(SuperviseError::BadLockName {
            what,
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

fn open(path: &Path) -> Result<File, SuperviseError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| SuperviseError::Lock {
            path: path.to_owned(),
            source,
        })
}

/// Takes the locks of `plan` for `service@host` under `dir`, in the fixed order host, service,
/// pair, waiting until `deadline` at most.
pub fn acquire(
    dir: &Path,
    host: &str,
    service: &str,
    plan: LockPlan,
    deadline: Instant,
) -> Result<Acquired, SuperviseError> {
    let started = Instant::now();
    if plan.is_empty() {
        return Ok(Acquired::Held(LockGuard { _files: Vec::new() }));
    }
    check_name("host", host)?;
    check_name("service", service)?;
    let mkdir = |d: &Path| {
        std::fs::create_dir_all(d).map_err(|source| SuperviseError::Lock {
            path: d.to_owned(),
            source,
        })
    };
    let steps = [
        (plan.host, dir.join("host"), host),
        (plan.service, dir.join("service"), service),
        (plan.pair, dir.to_owned(), ""),
    ];
    let mut files = Vec::new();
    for (mode, parent, name) in steps {
        if mode == Mode::Free {
            continue;
        }
        mkdir(&parent)?;
        let path = if name.is_empty() {
            parent.join(format!("{service}@{host}"))
        } else {
            parent.join(name)
        };
        let file = open(&path)?;
        loop {
            let tried = match mode {
                Mode::Shared => file.try_lock_shared(),
                _ => file.try_lock(),
            };
            match tried {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(Acquired::TimedOut {
                            path,
                            waited: now - started,
                        });
                    }
                    std::thread::sleep(RETRY.min(deadline - now));
                }
                Err(TryLockError::Error(source)) => {
                    return Err(SuperviseError::Lock { path, source });
                }
            }
        }
        files.push(file);
    }
    Ok(Acquired::Held(LockGuard { _files: files }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_service_combine_to_both() {
        let plan = LockPlan::of(&[LockLevel::Host, LockLevel::Service]);
        assert_eq!(plan.host, Mode::Exclusive);
        assert_eq!(plan.service, Mode::Exclusive);
        assert_eq!(plan.pair, Mode::Free);
        assert!(LockPlan::of(&[LockLevel::None]).is_empty());
    }

    #[test]
    fn names_with_paths_are_refused() {
        assert!(check_name("service", "a/b").is_err());
        assert!(check_name("service", "..").is_err());
        assert!(check_name("host", "a@b").is_err());
        assert!(check_name("service", "web@1").is_ok());
        assert!(check_name("host", "db1.example.org").is_ok());
    }

    #[test]
    fn exclusive_conflicts_until_dropped() {
        let dir = std::env::temp_dir().join(format!("disco-lock-unit-{}", std::process::id()));
        let plan = LockPlan::of(&[LockLevel::ServiceAtHost]);
        let soon = || Instant::now() + Duration::from_millis(30);
        let Acquired::Held(first) = acquire(&dir, "h", "s", plan, soon()).unwrap() else {
            panic!("first lock not taken");
        };
        assert!(matches!(
            acquire(&dir, "h", "s", plan, soon()).unwrap(),
            Acquired::TimedOut { .. }
        ));
        // A different service on the same host shares the host file and does not conflict.
        assert!(matches!(
            acquire(&dir, "h", "t", plan, soon()).unwrap(),
            Acquired::Held(_)
        ));
        let host = LockPlan::of(&[LockLevel::Host]);
        assert!(matches!(
            acquire(&dir, "h", "u", host, soon()).unwrap(),
            Acquired::TimedOut { .. }
        ));
        drop(first);
        assert!(matches!(
            acquire(&dir, "h", "s", plan, soon()).unwrap(),
            Acquired::Held(_)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

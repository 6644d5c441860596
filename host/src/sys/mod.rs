//! Every raw syscall and every `/proc` read of the host, behind small safe functions: the one
//! syscall seam.
//!
//! The supervisor (`supervise/`) speaks in pids, fds and [`ProcStat`]s, and the seams here are
//! what a test or a port would replace. `nix` is used wherever it has the call; a raw `libc`
//! call is made only where it has none (clone3, wait4 with its rusage, pidfd_open,
//! pidfd_getfd, close_range, statx, getrandom, seccomp, the terminal and interface ioctls) or
//! in a freshly cloned child, where only async-signal-safe calls on prepared data are allowed;
//! each sits here with a `SAFETY:` comment. (The sandbox's `fork` and `sigaction`, which nix
//! makes `unsafe` itself, are next to the recipes they belong to; loading sink plugins is in
//! `serve/sinks.rs`.) The mounts of a sandbox go through the seam of `sandbox/mounts.rs`.
//! Errors are `std::io::Error`s from `errno`; callers add the context (which module, which pid).
//!
//! One file a concept: `process` (reaping, signals), `proc` (reading `/proc`), `fds`
//! (descriptors, poll, what crosses an exec), `terminal`, `mounts` (namespaces, overlay
//! options), `fs` (where a file lives, private folders, random names), `watch` (what the
//! connect watcher needs: loopback, another process's memory and sockets, seccomp) and
//! `spawn` (clone3 into a cgroup).

mod fds;
mod fs;
mod mounts;
mod proc;
mod process;
mod spawn;
mod terminal;
mod watch;

pub use fds::*;
pub use fs::*;
pub use mounts::*;
pub use proc::*;
pub use process::*;
pub use spawn::*;
pub use terminal::*;
pub use watch::*;

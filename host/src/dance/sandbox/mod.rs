//! The dance's sandbox: one set of namespaces for the whole dance, a root per module.
//!
//! Setting up namespaces, `/dev`, `/proc` and `/sys` is most of what a sandbox costs, and a
//! dance of small modules would pay it for every module and template. So the dance starts one
//! `disco __dance-sandbox` (new mount, UTS and IPC namespaces; a new PID namespace in noop),
//! whose worker (PID 1 there) prepares `/dev`, `/proc` and `/sys` once and then serves the
//! dance's modules one at a time, over a pipe. For each, it forks the module's runner, which
//! gets a mount namespace of its own, and there:
//!
//! 1. the templates: mounts a throwaway root (the module's files stacked on everything before
//!    it) and renders each template through the fix-module host in a child confined to it
//!    (chroot, without the capabilities noop drops nor `CAP_SYS_CHROOT`); writes each rendered
//!    file into the module's folder, which the next root shows read-only;
//! 2. the pieces: mounts the module's root (its own scratch layer on the ones before it), and
//!    in a child confined the same way (live: with every capability) delivers the files and
//!    runs the scripts through the host;
//! 3. the diff: the module's scratch layer against a read-only view of what lies beneath it.
//!
//! The runner says it is done, then exits, and its namespace takes every mount of the module
//! with it while the worker goes on. Between modules, nothing a module started survives: in
//! noop the worker, PID 1, kills every other process of its namespace; live, it kills whatever
//! was re-parented to it. The worker and the runners see the host's tree and are not dumpable,
//! so no script can reach it through `/proc/PID/root`; every mount dies with the namespaces when
//! the dance ends, however it ends.
//!
//! The files, in the order a module travels: `wire` (what the dance and the sandbox say to
//! each other, and the records a module's processes report), `client` (the dance's side),
//! `init` (the namespaces and the worker, PID 1, with its request loop), `runner` (a module's
//! runner and its confined children), `roots` (mounting a module's roots), `differ` (its diff).

mod client;
mod differ;
mod init;
mod roots;
mod runner;
mod wire;

pub use client::{Worker, WorkerError};
pub use init::sandbox_main;
pub use wire::{
    read_setup, DiffFailed, DiffJob, Diffed, ModuleRequest, Ran, Record, Records, Reply, Request,
    Setup,
};

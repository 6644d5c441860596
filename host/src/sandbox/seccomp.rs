//! Noop's seccomp filter, compiled by libseccomp from a list of system calls rather than
//! written as BPF by hand. It refuses, with EPERM, what no namespace or capability keeps inside
//! the sandbox: the kernel's keyrings (`add_key`, `keyctl`, `request_key`: a key added to, or
//! cleared from, root's keyrings is the host's) and io_uring (its operations run in kernel
//! workers, past the checks a system call meets). In the dance it also notifies "Would connect"
//! (see `connect`) of each `connect`, addressed `sendto` and `sendmsg`. It fails closed:
//! libseccomp compiles it for the architecture it runs on or not at all, and a system call of
//! another ABI (a 32-bit program, an x32 one) kills its process.
//!
//! A dance loads it in two processes per module: it is compiled once, by the dance's worker
//! ([`Program::compile`]), and each confined process only loads the compiled program, in one
//! system call ([`Program::load`]), where libseccomp would build it again and probe the
//! kernel's API a dozen times.

use std::os::fd::OwnedFd;

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use nix::libc;

use super::SandboxError;

/// The system calls noop refuses (see the module's documentation).
pub const DENIED: &[&str] = &[
    "add_key",
    "keyctl",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
];

/// The error of failing to `what` (compile, install) a filter.
pub(crate) fn failed<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> SandboxError {
    move |e| SandboxError::Seccomp {
        what,
        source: std::io::Error::other(e),
    }
}

/// Noop's filter for this machine's architecture, not yet compiled; with `watch`, it also
/// notifies the calls "Would connect" reports.
pub(crate) fn filter(watch: bool) -> Result<ScmpFilterContext, SandboxError> {
    let mut ctx = ScmpFilterContext::new(ScmpAction::Allow).map_err(failed("compile"))?;
    // Loaded while CAP_SYS_ADMIN is still held: no `no_new_privs`, so setuid programs keep
    // working.
    ctx.set_ctl_nnp(false).map_err(failed("compile"))?;
    ctx.set_act_badarch(ScmpAction::KillProcess)
        .map_err(failed("compile"))?;
    let call = |name: &str| ScmpSyscall::from_name(name).map_err(failed("compile"));
    for name in DENIED {
        ctx.add_rule(ScmpAction::Errno(libc::EPERM), call(name)?)
            .map_err(failed("compile"))?;
    }
    if watch {
        ctx.add_rule(ScmpAction::Notify, call("connect")?)
            .map_err(failed("compile"))?;
        // A datagram sent to an address: the address is the fifth argument.
        ctx.add_rule_conditional(
            ScmpAction::Notify,
            call("sendto")?,
            &[ScmpArgCompare::new(4, ScmpCompareOp::NotEqual, 0)],
        )
        .map_err(failed("compile"))?;
        ctx.add_rule(ScmpAction::Notify, call("sendmsg")?)
            .map_err(failed("compile"))?;
    }
    Ok(ctx)
}

/// Noop's filter, compiled: classic BPF, to load in any process of this machine.
#[derive(Clone, Debug)]
pub struct Program {
    bpf: Vec<libc::sock_filter>,
    watch: bool,
}

impl Program {
    /// Compiles noop's filter (with `watch`, the notifying one: see [`filter`]).
    pub fn compile(watch: bool) -> Result<Program, SandboxError> {
        let ctx = filter(watch)?;
        let memfd =
            nix::sys::memfd::memfd_create(c"disco-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .map_err(failed("compile"))?;
        ctx.export_bpf(&memfd).map_err(failed("compile"))?;
        let mut file = std::fs::File::from(memfd);
        let mut bytes = Vec::new();
        std::io::Seek::rewind(&mut file)
            .and_then(|()| std::io::Read::read_to_end(&mut file, &mut bytes))
            .map_err(failed("compile"))?;
        Ok(Program {
            bpf: instructions(&bytes)?,
            watch,
        })
    }

    /// Installs the filter on this thread (and what it starts); for a notifying one, returns
    /// the descriptor its notifications are read from.
    pub fn load(&self) -> Result<Option<OwnedFd>, SandboxError> {
        // Without it the kernel would also turn on its speculative-store-bypass mitigation for
        // every process under the filter, which slows all of them (the filter guards against a
        // dry run's mistakes, not against side channels).
        let mut flags = libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW;
        if self.watch {
            flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
        }
        crate::sys::seccomp_load(&self.bpf, flags).map_err(failed("install"))
    }
}

/// The instructions of an exported program (each `code`, `jt`, `jf`, `k` in the machine's
/// byte order, as the kernel reads them).
fn instructions(bytes: &[u8]) -> Result<Vec<libc::sock_filter>, SandboxError> {
    const SIZE: usize = std::mem::size_of::<libc::sock_filter>();
    if bytes.is_empty() || !bytes.len().is_multiple_of(SIZE) {
        return Err(failed("compile")(std::io::Error::other(format!(
            "libseccomp exported {} bytes, not whole instructions",
            bytes.len()
        ))));
    }
    Ok(bytes
        .chunks_exact(SIZE)
        .map(|i| libc::sock_filter {
            code: u16::from_ne_bytes([i[0], i[1]]),
            jt: i[2],
            jf: i[3],
            k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compiled program, as libseccomp's pseudo-code.
    fn pfc(ctx: &ScmpFilterContext) -> String {
        let mut out = Vec::new();
        let (rx, tx) = std::io::pipe().unwrap();
        ctx.export_pfc(&tx).unwrap();
        drop(tx);
        std::io::Read::read_to_end(&mut { rx }, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_filter_compiles_and_refuses_each_call() {
        for watch in [false, true] {
            let ctx = filter(watch).unwrap();
            assert_eq!(
                ctx.get_act_badarch().unwrap(),
                ScmpAction::KillProcess,
                "fails closed on another ABI"
            );
            // The compiled program names each refused call.
            let pfc = pfc(&ctx);
            for name in DENIED {
                assert!(pfc.contains(name), "{name} missing from:\n{pfc}");
            }
            for name in ["connect", "sendto", "sendmsg"] {
                assert_eq!(pfc.contains(name), watch, "{name} in:\n{pfc}");
            }
        }
    }

    #[test]
    fn the_exported_program_is_whole_instructions_ending_in_a_return() {
        for watch in [false, true] {
            let program = Program::compile(watch).unwrap();
            assert!(program.bpf.len() > DENIED.len(), "{:?}", program.bpf);
            // BPF_RET | BPF_K: every path of a seccomp program ends in a return.
            assert_eq!(program.bpf.last().unwrap().code, 0x06);
        }
        assert!(instructions(&[0; 7]).is_err());
        assert!(instructions(&[]).is_err());
    }
}

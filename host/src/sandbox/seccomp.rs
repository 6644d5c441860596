//! Noop's seccomp filter, compiled by libseccomp (the crate that also gives "Would connect" its
//! notifications, see `connect`) from a list of system calls rather than written as BPF by
//! hand. It refuses, with EPERM, what no namespace or capability keeps inside the sandbox: the
//! kernel's keyrings (`add_key`, `keyctl`, `request_key`: a key added to, or cleared from,
//! root's keyrings is the host's) and io_uring (its operations run in kernel workers, past the
//! checks a system call meets). It fails closed: libseccomp compiles it for the architecture
//! it runs on or not at all, and a system call of another ABI (a 32-bit program, an x32 one)
//! kills its process.

use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};

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

/// The error of libseccomp failing to `what` (compile, install) a filter.
pub(crate) fn failed(
    what: &'static str,
) -> impl FnOnce(libseccomp::error::SeccompError) -> SandboxError {
    move |e| SandboxError::Seccomp {
        what,
        source: std::io::Error::other(e),
    }
}

/// Noop's filter for this machine's architecture, not yet installed.
pub(crate) fn filter() -> Result<ScmpFilterContext, SandboxError> {
    let mut ctx = ScmpFilterContext::new(ScmpAction::Allow).map_err(failed("compile"))?;
    // Installed while CAP_SYS_ADMIN is still held: no `no_new_privs`, so setuid programs keep
    // working.
    ctx.set_ctl_nnp(false).map_err(failed("compile"))?;
    ctx.set_act_badarch(ScmpAction::KillProcess)
        .map_err(failed("compile"))?;
    // Without it the kernel would also turn on its speculative-store-bypass mitigation for
    // every process under the filter, which slows all of them (the filter guards against a
    // dry run's mistakes, not against side channels).
    ctx.set_ctl_ssb(true).map_err(failed("compile"))?;
    for name in DENIED {
        let call = ScmpSyscall::from_name(name).map_err(failed("compile"))?;
        ctx.add_rule(ScmpAction::Errno(nix::libc::EPERM), call)
            .map_err(failed("compile"))?;
    }
    Ok(ctx)
}

/// Installs noop's filter on this thread (and what it starts).
pub(crate) fn install() -> Result<(), SandboxError> {
    filter()?.load().map_err(failed("install"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_and_refuses_each_call() {
        let ctx = filter().unwrap();
        assert_eq!(
            ctx.get_act_badarch().unwrap(),
            ScmpAction::KillProcess,
            "fails closed on another ABI"
        );
        // The compiled program names each refused call.
        let pfc = {
            let mut out = Vec::new();
            let (rx, tx) = std::io::pipe().unwrap();
            ctx.export_pfc(&tx).unwrap();
            drop(tx);
            std::io::Read::read_to_end(&mut { rx }, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        for name in DENIED {
            assert!(pfc.contains(name), "{name} missing from:\n{pfc}");
        }
    }
}

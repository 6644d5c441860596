//! Noop's seccomp filter, compiled by `seccompiler` from a list of system calls rather than
//! written as BPF by hand. It refuses, with EPERM, what no namespace or capability keeps inside
//! the sandbox: the kernel's keyrings (`add_key`, `keyctl`, `request_key`: a key added to, or
//! cleared from, root's keyrings is the host's) and io_uring (its operations run in kernel
//! workers, past the checks a system call meets). It fails closed: on an architecture it does
//! not know, noop refuses to start; a system call of another ABI than the sandbox's (a 32-bit
//! program) kills its process; x32 calls (the x86_64 ABI with bit 30 set) are refused too.

use std::collections::BTreeMap;

use nix::libc;
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

use super::SandboxError;

/// The system calls noop refuses (see the module's documentation). (`c_long` is `i64` on
/// every architecture seccompiler knows.)
const DENIED: &[i64] = &[
    libc::SYS_add_key,
    libc::SYS_keyctl,
    libc::SYS_request_key,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
];

/// The bit that marks an x32 system call on x86_64 (`__X32_SYSCALL_BIT`): x32 numbers the
/// calls above as x86_64 does, plus this bit.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

/// Noop's filter for this machine's architecture.
pub(crate) fn program() -> Result<BpfProgram, SandboxError> {
    let failed = |e: seccompiler::BackendError| SandboxError::Seccomp {
        what: "compile",
        source: std::io::Error::other(e),
    };
    // Fails closed: an architecture seccompiler does not know is an error, not an open door.
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(failed)?;
    let mut rules = BTreeMap::new();
    for nr in DENIED {
        // No condition: the call is refused whatever its arguments.
        rules.insert(*nr, Vec::new());
        #[cfg(target_arch = "x86_64")]
        rules.insert(*nr | X32_SYSCALL_BIT, Vec::new());
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(failed)?;
    BpfProgram::try_from(filter).map_err(failed)
}

/// Installs noop's filter on this thread (and what it starts). Called while `CAP_SYS_ADMIN`
/// is still held, so `no_new_privs` is not needed and setuid programs keep working
/// (`seccompiler::apply_filter` would set it).
pub(crate) fn install() -> Result<(), SandboxError> {
    let mut prog: Vec<libc::sock_filter> = program()?
        .into_iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).map_err(|_| SandboxError::Seccomp {
            what: "compile",
            source: std::io::Error::other("the filter is too long"),
        })?,
        filter: prog.as_mut_ptr(),
    };
    // Without SPEC_ALLOW the kernel would also turn on its speculative-store-bypass
    // mitigation for every process under the filter, which slows all of them (the filter
    // guards against a dry run's mistakes, not against side channels). Kernels before 4.17
    // know no flags.
    let install = |flags: libc::c_ulong| {
        // SAFETY: fprog points at `prog`, alive for the call; the kernel copies the filter.
        unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
                flags,
                &fprog as *const libc::sock_fprog,
            )
        }
    };
    let mut rc = install(libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW as libc::c_ulong);
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        rc = install(0);
    }
    if rc != 0 {
        return Err(SandboxError::Seccomp {
            what: "install",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_and_checks_the_architecture_first() {
        let prog = program().unwrap();
        // seccompiler's preamble: load the architecture, compare, kill on a mismatch.
        assert_eq!(prog[0].k, 4, "loads seccomp_data.arch");
        assert!(prog.iter().any(|i| i.k == libc::SECCOMP_RET_KILL_PROCESS));
        // Each refused call (and its x32 twin) appears as a comparison.
        for nr in DENIED {
            assert!(prog.iter().any(|i| i.k == *nr as u32), "{nr}");
            #[cfg(target_arch = "x86_64")]
            assert!(prog
                .iter()
                .any(|i| i64::from(i.k) == (*nr | X32_SYSCALL_BIT)));
        }
    }
}

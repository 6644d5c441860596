//! The capabilities a noop sandbox drops, and dropping them.

use super::SandboxError;

/// Capabilities dropped in noop: each reaches outside the sandbox's namespaces (modules,
/// clock, raw I/O, device nodes, file handles, other processes, mounts, immutable flags that
/// would pin the scratch layer, raw and packet sockets, the host's scheduler and memory, the
/// audit log, leases on live files). What noop keeps, and why, is listed in ARCHITECTURE.md.
const DROPPED: &[caps::Capability] = {
    use caps::Capability::*;
    &[
        CAP_SYS_MODULE,
        CAP_SYS_BOOT,
        CAP_SYS_TIME,
        CAP_NET_ADMIN,
        // Raw and packet sockets: they see (and forge) traffic, and are no dry run's business.
        CAP_NET_RAW,
        CAP_SYS_RAWIO,
        CAP_MKNOD,
        // open_by_handle_at: reaches any file of a filesystem something of it is bound from.
        CAP_DAC_READ_SEARCH,
        CAP_SYS_PTRACE,
        CAP_SYS_ADMIN,
        // Real-time scheduling and priorities of the host's CPUs; locked memory of its RAM;
        // limits above the hard ones and reserved disk space: no namespace bounds them.
        CAP_SYS_NICE,
        CAP_IPC_LOCK,
        CAP_SYS_RESOURCE,
        CAP_LINUX_IMMUTABLE,
        // Leases on files that may be the host's (a read-only filesystem's).
        CAP_LEASE,
        CAP_MAC_ADMIN,
        CAP_MAC_OVERRIDE,
        CAP_SYSLOG,
        CAP_WAKE_ALARM,
        CAP_BLOCK_SUSPEND,
        // The host's audit log and its rules.
        CAP_AUDIT_CONTROL,
        CAP_AUDIT_WRITE,
        CAP_AUDIT_READ,
        CAP_SYS_PACCT,
        CAP_SYS_TTY_CONFIG,
        CAP_BPF,
        CAP_PERFMON,
        CAP_CHECKPOINT_RESTORE,
    ]
};

/// Drops, for good, the capabilities that reach outside a noop sandbox ([`DROPPED`]). Its
/// callers load noop's seccomp filter first (the keyring calls and io_uring, which no
/// capability or namespace keeps inside; see [`super::seccomp`]), while they may.
pub(crate) fn drop_capabilities() -> Result<(), SandboxError> {
    use caps::CapSet;
    let err = SandboxError::Caps;
    for cap in DROPPED {
        // The bounding set is what limits root after exec.
        caps::drop(None, CapSet::Bounding, *cap).map_err(err)?;
    }
    // The others for this process, a set at a time; effective first, as it must stay
    // within permitted.
    for set in [CapSet::Effective, CapSet::Inheritable, CapSet::Permitted] {
        let mut have = caps::read(None, set).map_err(err)?;
        for cap in DROPPED {
            have.remove(cap);
        }
        caps::set(None, set, &have).map_err(err)?;
    }
    caps::clear(None, CapSet::Ambient).map_err(err)
}

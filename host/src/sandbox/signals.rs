//! Signals of a sandbox's waiting parent: caught without `SA_RESTART`, forwarded to the
//! payload, and the wait that forwards them.

use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::enter::{sys, EXIT_SANDBOX};
use super::SandboxError;

static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: i32) {
    PENDING.store(sig, Ordering::Relaxed);
}

/// Catches the signals a supervisor or a terminal sends, without SA_RESTART, so that `waitpid`
/// returns and the signal can be forwarded to the payload.
pub(crate) fn forward_signals() -> Result<(), SandboxError> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }.map_err(sys("install", "signal handlers"))?;
    }
    Ok(())
}

/// Waits for `child`, forwarding signals to it; with `reap_all` (PID 1) also reaps orphans.
pub(crate) fn wait_for(child: Pid, reap_all: bool) -> i32 {
    let target = if reap_all { None } else { Some(child) };
    loop {
        match waitpid(target, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => return code,
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => return 128 + sig as i32,
            Ok(_) => {}
            Err(Errno::EINTR) => {
                let sig = PENDING.swap(0, Ordering::Relaxed);
                if let Ok(sig) = Signal::try_from(sig) {
                    // The payload may already be gone; nothing to do then.
                    let _ = kill(child, sig);
                }
            }
            Err(_) => return EXIT_SANDBOX,
        }
    }
}

//! `disco recover [--discard]`: finish the merges a killed live dance left (what the next dance
//! does first anyway), or set them aside. No other command waits for this.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::apply::RecoverMode;
use crate::error::Result;

/// Arguments of `disco recover`.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Only this journal (its name in STATE/journal, without `.json`, or its path).
    pub journal: Option<String>,
    /// Apply nothing more: set every pending journal aside (under STATE/journal/aside), saying
    /// what of its merge was and was not applied. The way out when a merge cannot finish.
    #[arg(long)]
    pub discard: bool,
    /// Where the fix locks of deferred commands are [default: STATE/locks].
    #[arg(long, value_name = "DIR")]
    pub lock_dir: Option<PathBuf>,
    /// Exit at once, instead of waiting, when a dance is running.
    #[arg(long)]
    pub no_wait: bool,
}

pub(super) fn exec(args: RecoverArgs, global: &super::GlobalArgs) -> Result<ExitCode> {
    let state = &global.state_dir;
    if crate::apply::pending(state).is_none() {
        crate::output::info("no interrupted merge is pending");
        return Ok(ExitCode::SUCCESS);
    }
    let _lock = crate::dance::run::state_lock(state, !args.no_wait)?;
    let mode = if args.discard {
        RecoverMode::Discard
    } else {
        RecoverMode::Finish
    };
    let lock_dir = args.lock_dir.unwrap_or_else(|| state.join("locks"));
    for line in crate::apply::recover(state, &lock_dir, None, mode, args.journal.as_deref())? {
        crate::output::info(&line);
    }
    Ok(match crate::apply::pending(state) {
        None => ExitCode::SUCCESS,
        Some(left) => {
            crate::output::error(&format!("still pending: {}", left.display()));
            ExitCode::from(crate::error::EXIT_FAILURE)
        }
    })
}

//! `disco rollback [DANCE] [--noop] [--force]`: undo a live dance's merges, file for file, from
//! the undo records its merges kept (see `apply::rollback`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::apply::rollback::{self, Request};
use crate::error::{Error, Result};

/// Arguments of `disco rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The dance to undo, by id (`disco report` lists those that can be; default: the newest
    /// live dance onto the root).
    pub dance: Option<String>,
    /// Change nothing: print, as a dance's diff, what the rollback would change.
    #[arg(long)]
    pub noop: bool,
    /// Roll back paths changed since the dance too, keeping each newer version beside it
    /// (`NAME.disco-newer-DANCE`).
    #[arg(long)]
    pub force: bool,
    /// The root the dance changed.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// With a root other than `/`, run the modules' deferred service commands anyway (chrooted).
    #[arg(long)]
    pub run_deferred: bool,
    /// Where the fix locks of deferred commands are [default: STATE/locks].
    #[arg(long, value_name = "DIR")]
    pub lock_dir: Option<PathBuf>,
    /// Exit at once (status 75), instead of waiting, when a dance runs on the root.
    #[arg(long)]
    pub no_wait: bool,
}

pub(super) fn exec(args: RollbackArgs, global: &super::GlobalArgs) -> Result<ExitCode> {
    let state = &global.state_dir;
    let root = args.root.canonicalize().map_err(|source| Error::Read {
        path: args.root.clone(),
        source,
    })?;
    let lock_dir = args.lock_dir.unwrap_or_else(|| state.join("locks"));
    // The locks a live dance takes: no dance (or other rollback) runs meanwhile.
    let _state_lock = crate::dance::run::state_lock(state, !args.no_wait)?;
    let _root_lock = crate::apply::lock::lock_root_path(&root, !args.no_wait)?;
    if args.noop {
        if let Some(journal) = crate::apply::journal::pending_for_root(state, &root) {
            crate::output::warning(&format!(
                "an interrupted merge is pending ({}): `disco recover` finishes it",
                journal.display()
            ));
        }
    } else {
        // An interrupted merge is finished (and recorded) before anything is undone.
        for line in crate::apply::recover(
            state,
            &lock_dir,
            Some(&root),
            crate::apply::RecoverMode::Finish,
            None,
        )? {
            crate::output::info(&line);
        }
    }
    let req = Request {
        dance: args.dance,
        noop: args.noop,
        force: args.force,
        run_deferred: args.run_deferred,
        diff: crate::diff::DiffOptions {
            names_root: root.clone(),
            ..Default::default()
        },
    };
    let out = rollback::rollback(state, &root, &lock_dir, &req)?;
    if args.noop {
        print!("{}", crate::diff::render_text(&out.changes));
        for (path, why) in &out.changed {
            crate::output::warning(&format!(
                "{} {why}: the rollback stops there unless --force",
                path.display()
            ));
        }
        let (c, m, d) = crate::diff::summary(&out.changes);
        crate::output::info(&format!(
            "Rollback of dance {} would change {} path(s): {c} created, {m} modified, {d} deleted",
            out.dance,
            out.changes.len()
        ));
        return Ok(ExitCode::SUCCESS);
    }
    for (path, why) in &out.changed {
        crate::output::warning(&format!("{} {why}: forced", path.display()));
    }
    for (path, kept) in &out.kept {
        crate::output::warning(&format!(
            "kept the newer version of {} as {}",
            path.display(),
            kept.display()
        ));
    }
    for (module, n) in &out.modules {
        crate::output::info(&format!("Rolled back {module}: {n} path(s)"));
    }
    for w in &out.warnings {
        crate::output::warning(w);
    }
    let mut failed = false;
    for run in &out.deferred {
        match &run.result {
            None => crate::output::warning(&format!(
                "{}: Not executing deferred (the root is not /; --run-deferred runs it): {}",
                run.module, run.command
            )),
            Some(Ok(o)) => {
                crate::output::info(&format!(
                    "Executing deferred : {}: ReturnCode {}",
                    run.command, o.return_code
                ));
                failed |= o.return_code != protocol::ReturnCode::OK;
            }
            Some(Err(e)) => {
                crate::output::error(&format!("{}: {e}", run.module));
                failed = true;
            }
        }
    }
    crate::output::info(&format!("Rolled back dance {}", out.dance));
    Ok(if failed {
        ExitCode::from(crate::error::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

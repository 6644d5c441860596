//! A module's diff: its scratch layers against read-only views of what lies beneath them (the
//! kept modules' layers and the live tree), made by its runner (live) or, in noop, by a differ
//! the worker forks beside the next module's run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sched::{unshare, CloneFlags};
use nix::unistd::{fork, ForkResult, Pid};

use super::init::Shared;
use super::roots::live_base;
use super::runner::wait_bounded;
use super::wire::{differ_limit, DiffFailed, DiffJob, Diffed, Setup};
use crate::dance::report::{SelfUsage, Usage};
use crate::diff::{self, Change, DiffOptions, Layer};
use crate::sandbox::enter::{prep, sys};
use crate::sandbox::mounts::Kernel;
use crate::sandbox::{LayerInfo, SandboxError};

/// Makes `job`'s diff (in a mount namespace of this process's own, where its views go).
pub(super) fn make_diff(
    setup: &Setup,
    shared: &Shared,
    job: &DiffJob,
) -> Result<Diffed, SandboxError> {
    let start = SelfUsage::now();
    let changes = module_diff(setup, shared, job)?;
    Ok(Diffed {
        diff: diff::render_text(&changes),
        summary: diff::summary(&changes),
        changes,
        usage: Usage::of_self_since(start),
    })
}

/// A differ at work: its pid, its "done" pipe, where it writes the diff, how long it may take.
pub(super) type Differ = (Pid, std::io::PipeReader, PathBuf, Duration);

/// Why the worker could not start a differ or read what it made (what the differ itself met
/// comes as [`DiffFailed::Differ`]).
#[derive(Debug, thiserror::Error)]
pub(super) enum DifferError {
    /// The differ's "done" pipe could not be made.
    #[error("pipe: {0}")]
    Pipe(#[source] std::io::Error),
    /// The differ could not be forked.
    #[error("cannot fork the differ: {0}")]
    Fork(#[source] nix::errno::Errno),
    /// What the differ wrote cannot be read (it died, or was killed past its bound).
    #[error("the diff: {}: {source}", path.display())]
    Read {
        /// Its `diff.json`.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// What the differ wrote cannot be decoded (a write cut short).
    #[error("the diff: {}: {source}", path.display())]
    Decode {
        /// Its `diff.json`.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl From<DifferError> for DiffFailed {
    /// Only the words cross to the dance: the reply is a line of JSON.
    fn from(e: DifferError) -> DiffFailed {
        DiffFailed::Worker(e.to_string())
    }
}

/// Forks a child that makes `job`'s diff into `DIR/diff.json`.
pub(super) fn start_differ(
    setup: &Setup,
    shared: &Shared,
    job: &DiffJob,
) -> Result<Differ, DifferError> {
    let out = job.dir.join("diff.json");
    let (done_rx, done_tx) = std::io::pipe().map_err(DifferError::Pipe)?;
    // SAFETY: the worker is single-threaded.
    match unsafe { fork() }.map_err(DifferError::Fork)? {
        ForkResult::Child => {
            drop(done_rx);
            let made = unshare(CloneFlags::CLONE_NEWNS)
                .map_err(sys("unshare", "a mount namespace"))
                .and_then(|()| make_diff(setup, shared, job))
                .map_err(|e| DiffFailed::Differ(e.to_string()));
            // The worker reads a missing or cut file as the differ's failure.
            let written = serde_json::to_vec(&made)
                .ok()
                .is_some_and(|json| std::fs::write(&out, json).is_ok());
            let mut done_tx = done_tx;
            let _ = done_tx.write_all(b"done\n");
            std::process::exit(i32::from(!written));
        }
        ForkResult::Parent { child } => Ok((child, done_rx, out, differ_limit(job))),
    }
}

/// Waits for a differ (bounded) and reads what it made: its diff, or why it could not make it.
pub(super) fn finish_differ(
    (child, done, out, limit): Differ,
) -> Result<Result<Diffed, DiffFailed>, DifferError> {
    wait_bounded(child, &done, limit);
    let bytes = std::fs::read(&out).map_err(|source| DifferError::Read {
        path: out.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| DifferError::Decode { path: out, source })
}

/// What a module's scratch layers change against everything beneath them: the live tree and
/// the layers of the modules kept before it, seen through read-only overlays.
fn module_diff(setup: &Setup, shared: &Shared, r: &DiffJob) -> Result<Vec<Change>, SandboxError> {
    let views = &r.dir.join("views");
    std::fs::create_dir_all(views).map_err(prep(views))?;
    let opts = DiffOptions {
        names_root: setup.root.clone(),
        // Counted from here: the views below are mounted within it too.
        deadline: r.timeout.map(|t| std::time::Instant::now() + t),
        ..DiffOptions::default()
    };
    let mut layers = Vec::new();
    for (i, layer) in r.layers.iter().enumerate() {
        // An empty scratch layer changes nothing: no view to mount for it.
        let untouched = std::fs::read_dir(&layer.upper).is_ok_and(|mut d| d.next().is_none());
        if untouched {
            continue;
        }
        let beneath = r.beneath.get(i).cloned().unwrap_or_default();
        let lower = if beneath.is_empty() {
            layer.lower.clone()
        } else {
            let probe = LayerInfo {
                lowers_above: beneath.clone(),
                ..layer.clone()
            };
            let live = live_base(&probe, &shared.empty, views, i, &mut Kernel)?;
            let view = views.join(format!("fs{i}"));
            std::fs::create_dir_all(&view).map_err(prep(&view))?;
            let lowers: Vec<&Path> = beneath
                .iter()
                .map(PathBuf::as_path)
                .chain(std::iter::once(live.as_path()))
                .collect();
            crate::sandbox::mounts::overlay_read_only(&mut Kernel, &lowers, &view)
                .map_err(sys("mount the lower view", view.display()))?;
            view
        };
        layers.push(Layer {
            upper: layer.upper.clone(),
            lower,
            mount_point: layer.mount_point.clone(),
        });
    }
    // The views go with the runner's namespace.
    let mut changes = diff::compute(&layers, &opts)?;
    live_devices(&mut changes, &r.layers);
    Ok(changes)
}

/// The views are filesystems of their own; report the live filesystem's device, as an
/// unstacked diff does.
fn live_devices(changes: &mut [Change], layers: &[LayerInfo]) {
    use std::os::unix::fs::MetadataExt;
    let devices: Vec<(PathBuf, u64)> = layers
        .iter()
        .filter_map(|l| {
            Some((
                l.mount_point.clone(),
                std::fs::metadata(&l.lower).ok()?.dev(),
            ))
        })
        .collect();
    for change in changes {
        let dev = devices
            .iter()
            .filter(|(mp, _)| change.path.starts_with(mp))
            .max_by_key(|(mp, _)| mp.components().count())
            .map(|(_, dev)| *dev);
        for meta in [change.old.as_mut(), change.new.as_mut()]
            .into_iter()
            .flatten()
        {
            let node = matches!(
                meta.file_type,
                crate::diff::FileType::CharDevice | crate::diff::FileType::BlockDevice
            );
            if let (false, Some(dev)) = (node, dev) {
                meta.device = dev;
            }
        }
    }
}

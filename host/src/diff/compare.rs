//! [`compute`]: walk every layer, then read and compare each candidate path, in parallel.

use std::num::NonZeroUsize;

use super::content::{is_binary, normal_diff};
use super::entry::{Change, ChangeKind, Content, DiffOptions, FileType, Layer};
use super::error::DiffError;
use super::meta::{examine, Examined, Names};
use super::walk::{walk, Candidate};

/// Below this many candidates per thread, starting threads costs more than it saves.
const MIN_PER_THREAD: usize = 256;

/// Compares every layer's upper directory with its lower one and returns one [`Change`] per
/// path that differs, all layers together, sorted by path (component by component, so that a
/// directory comes right before its contents).
///
/// Unchanged copied-up directories and files (opened for writing, or touched: only times differ)
/// are not reported. Errors name the file on disk: an unreadable file, or one that vanished while
/// the layer was compared (the sandbox must be stopped before its diff is taken).
pub fn compute(layers: &[Layer], opts: &DiffOptions) -> Result<Vec<Change>, DiffError> {
    let mut candidates = Vec::new();
    for layer in layers {
        walk(layer, &mut candidates)?;
    }
    let names = Names::load(&opts.names_root);
    let threads = std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(candidates.len() / MIN_PER_THREAD)
        .max(1);
    let mut changes = Vec::with_capacity(candidates.len());
    if threads == 1 {
        for c in &candidates {
            changes.extend(evaluate(c, &names, opts)?);
        }
    } else {
        // Reading and hashing contents dominates; the candidates are independent, so each thread
        // takes an interleaved share (neighbours in a directory tend to be alike in size).
        let results: Vec<Result<Vec<Change>, DiffError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (candidates, names) = (&candidates, &names);
                    scope.spawn(move || {
                        candidates
                            .iter()
                            .skip(t)
                            .step_by(threads)
                            .filter_map(|c| evaluate(c, names, opts).transpose())
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        for result in results {
            changes.extend(result?);
        }
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(changes)
}

/// Counts of created, modified and deleted paths, in that order.
pub fn summary(changes: &[Change]) -> (usize, usize, usize) {
    changes
        .iter()
        .fold((0, 0, 0), |(c, m, d), change| match change.kind {
            ChangeKind::Created => (c + 1, m, d),
            ChangeKind::Modified => (c, m + 1, d),
            ChangeKind::Deleted => (c, m, d + 1),
        })
}

/// Reads both sides of one candidate and says what changed, if anything.
fn evaluate(c: &Candidate, names: &Names, opts: &DiffOptions) -> Result<Option<Change>, DiffError> {
    let max = opts.max_content_bytes;
    let read = |side: &Option<(std::path::PathBuf, std::fs::Metadata)>| {
        side.as_ref()
            .map(|(path, st)| examine(path, st, c.layer_dev, names, max, opts.deadline))
            .transpose()
    };
    // A diff out of time names the file as the sandbox shows it, which the module wrote.
    let inside = |e: DiffError| match e {
        DiffError::TimedOut { .. } => DiffError::TimedOut {
            path: c.path.clone(),
        },
        e => e,
    };
    if opts
        .deadline
        .is_some_and(|d| std::time::Instant::now() >= d)
    {
        return Err(inside(DiffError::TimedOut {
            path: c.path.clone(),
        }));
    }
    let (old, new) = (
        read(&c.lower).map_err(inside)?,
        read(&c.upper).map_err(inside)?,
    );
    Ok(change(&c.path, old, new, max))
}

/// The change from `old` to `new` at `path`, if they differ.
fn change(
    path: &std::path::Path,
    old: Option<Examined>,
    new: Option<Examined>,
    max: u64,
) -> Option<Change> {
    let (kind, content) = match (&old, &new) {
        (None, Some(new)) => (ChangeKind::Created, content(None, Some(new), max)),
        (Some(old), None) => (ChangeKind::Deleted, content(Some(old), None, max)),
        (Some(old), Some(new)) if old.meta == new.meta => return None,
        (Some(old), Some(new)) => (ChangeKind::Modified, content(Some(old), Some(new), max)),
        (None, None) => return None,
    };
    Some(Change {
        path: path.to_owned(),
        kind,
        old: old.map(|e| e.meta),
        new: new.map(|e| e.meta),
        content,
    })
}

/// Attributes that replace those of an entry (a folder whose mode, owner and extended
/// attributes a rollback restores in place).
#[derive(Clone, Copy, Debug)]
pub struct Restored<'a> {
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Extended attributes, as name and raw value.
    pub xattrs: &'a [(String, Vec<u8>)],
}

/// What changes at one path going from the entry `now` to the entry `then` (either may be
/// absent; `then_attrs` replaces `then`'s attributes), shown as `shown`: the diff a rollback
/// prints. Unlike [`compute`], both sides are arbitrary paths of the live system.
pub fn between(
    shown: &std::path::Path,
    now: Option<&std::path::Path>,
    then: Option<&std::path::Path>,
    then_attrs: Option<Restored<'_>>,
    opts: &DiffOptions,
) -> Result<Option<Change>, DiffError> {
    let names = Names::load(&opts.names_root);
    let max = opts.max_content_bytes;
    let read = |path: Option<&std::path::Path>| -> Result<Option<Examined>, DiffError> {
        let Some(path) = path else {
            return Ok(None);
        };
        let st = match std::fs::symlink_metadata(path) {
            Ok(st) => st,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(DiffError::io("stat", path, e)),
        };
        examine(
            path,
            &st,
            std::os::unix::fs::MetadataExt::dev(&st),
            &names,
            max,
            opts.deadline,
        )
        .map(Some)
    };
    let old = read(now)?;
    let mut new = read(then)?;
    if let (Some(e), Some(attrs)) = (new.as_mut(), then_attrs) {
        super::meta::restore(&mut e.meta, attrs, &names);
    }
    // Both sides live on the same filesystem; a device number says nothing a rollback changes.
    if let (Some(o), Some(n)) = (&old, new.as_mut()) {
        n.meta.device = o.meta.device;
    }
    Ok(change(shown, old, new, max))
}

/// The content change between two sides, either of which may be absent (created, deleted).
/// Only regular files have content; a change of type shows no content.
fn content(old: Option<&Examined>, new: Option<&Examined>, max: u64) -> Content {
    let regular = |e: Option<&Examined>| e.is_none_or(|e| e.meta.file_type == FileType::Regular);
    if !regular(old) || !regular(new) {
        return Content::None;
    }
    if md5(old) == md5(new) {
        return Content::None;
    }
    // What only its owner (or group) may read stays out of every diff.
    if let Some(mode) = [old, new]
        .into_iter()
        .flatten()
        .map(|e| e.meta.mode & 0o7777)
        .find(|mode| mode & 0o004 == 0)
    {
        return Content::Private(mode);
    }
    let size = |e: Option<&Examined>| e.map_or(0, |e| e.meta.size);
    let largest = size(old).max(size(new));
    if largest > max {
        return Content::TooLarge(largest);
    }
    let (old, new) = (bytes(old), bytes(new));
    if is_binary(old) || is_binary(new) {
        return Content::Binary;
    }
    let diff = normal_diff(old, new);
    if diff.is_empty() {
        Content::None
    } else {
        Content::Text(diff)
    }
}

fn md5(e: Option<&Examined>) -> Option<&str> {
    e.and_then(|e| e.meta.md5.as_deref())
}

/// The kept contents of a side; an absent side (created, deleted) is empty.
fn bytes(e: Option<&Examined>) -> &[u8] {
    e.and_then(|e| e.data.as_deref()).unwrap_or_default()
}

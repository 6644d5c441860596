//! Mount namespaces and the option text of an overlay (the mounts themselves go through the
//! seam of `sandbox/mounts.rs`).

use std::path::Path;

/// Gives the calling thread a mount namespace of its own, with every mount private, so that
/// what it mounts is seen by no other thread or process and goes away when the thread ends.
/// [unshare(2)](https://man7.org/linux/man-pages/man2/unshare.2.html)
pub fn private_mount_namespace() -> Result<(), nix::errno::Errno> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    make_mounts_private()
}

/// Makes every mount of this mount namespace private, recursively, so that nothing mounted
/// from here on propagates to the namespace it was copied from.
pub fn make_mounts_private() -> Result<(), nix::errno::Errno> {
    use nix::mount::{mount, MsFlags};
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
}

/// The `lowerdir=` value for `lowers` (topmost first). Mount options fit in one page, which
/// a few dozen absolute paths of stacked scratch layers would overflow; so the process moves
/// into the folder that holds all but the last (the live one) and names them relative to it.
/// The caller must be single-threaded or have its own working directory (`CLONE_FS`), as a
/// thread in its own mount namespace has.
pub fn overlay_lowerdir(lowers: &[&Path]) -> Result<String, nix::errno::Errno> {
    let (last, above) = match lowers.split_last() {
        Some((last, above)) if above.len() > 1 => (last, above),
        _ => {
            let dirs: Vec<String> = lowers.iter().map(|p| overlay_escape(p)).collect();
            return Ok(dirs.join(":"));
        }
    };
    // The deepest folder that holds all but at most two of them (the disco layer and a
    // module's files may lie elsewhere): those two stay absolute.
    let mut base = above[above.len() - 1].to_path_buf();
    while above.iter().filter(|p| p.starts_with(&base)).count() + 2 < above.len() {
        if !base.pop() {
            break;
        }
    }
    nix::unistd::chdir(&base)?;
    let mut dirs: Vec<String> = above
        .iter()
        .map(|p| match p.strip_prefix(&base) {
            Ok(rel) if !rel.as_os_str().is_empty() => overlay_escape(rel),
            _ => overlay_escape(p),
        })
        .collect();
    dirs.push(overlay_escape(last));
    Ok(dirs.join(":"))
}

/// Escapes a path for an overlay option list, where `,` separates options and `:` layers.
pub fn overlay_escape(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        if matches!(c, '\\' | ',' | ':') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

//! A disposable root for live dances (an overlay of `/` in the test thread's own mount
//! namespace), a dance onto it, and snapshots of what it holds: shared by the live tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::util::disco;

/// An overlay of `/` at `tmp/root`, visible only to this test's thread and its children, and
/// unmounted (with whatever the test mounted inside it) when dropped: before the temp dir goes,
/// or its removal would walk the whole overlaid system.
pub struct Disposable {
    pub root: PathBuf,
    pub scratch: PathBuf,
}

impl Drop for Disposable {
    fn drop(&mut self) {
        use nix::mount::{umount2, MntFlags};
        let _ = umount2(&self.root, MntFlags::MNT_DETACH);
        let _ = umount2(&self.scratch, MntFlags::MNT_DETACH);
    }
}

/// `upper_size` puts the overlay's writes on a tmpfs of that size (to run out of space).
pub fn disposable_root(tmp: &Path, upper_size: Option<&str>) -> Disposable {
    use nix::mount::{mount, MsFlags};
    host::sys::private_mount_namespace().expect("private mount namespace");
    let scratch = tmp.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    if let Some(size) = upper_size {
        mount(
            Some("tmpfs"),
            &scratch,
            Some("tmpfs"),
            MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .unwrap();
    }
    let (u, w, root) = (scratch.join("u"), scratch.join("w"), tmp.join("root"));
    for d in [&u, &w, &root] {
        std::fs::create_dir_all(d).unwrap();
    }
    let data = format!(
        "lowerdir=/,upperdir={},workdir={}",
        u.display(),
        w.display()
    );
    mount(
        Some("overlay"),
        &root,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .expect("mount the disposable root");
    Disposable { root, scratch }
}

pub fn live(state: &Path, source: &Path, root: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "dance",
        "--node",
        "n1",
        "--source",
        source.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    disco(state, &args)
}

/// What the tests compare of a path: type, mode, owner, content digest, link target, xattrs.
pub type Snapshot = BTreeMap<PathBuf, String>;

pub fn snapshot(root: &Path, under: &Path) -> Snapshot {
    fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mut desc = format!("mode={:o} uid={} gid={}", m.mode(), m.uid(), m.gid());
            if m.is_file() {
                desc.push_str(&format!(" data={:?}", std::fs::read(&p).unwrap()));
            } else if m.file_type().is_symlink() {
                desc.push_str(&format!(" target={:?}", std::fs::read_link(&p).unwrap()));
            }
            if !m.file_type().is_symlink() {
                if let Ok(names) = xattr::list(&p) {
                    for n in names {
                        desc.push_str(&format!(" {n:?}={:?}", xattr::get(&p, &n).ok().flatten()));
                    }
                }
            }
            out.insert(Path::new("/").join(p.strip_prefix(root).unwrap()), desc);
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Snapshot::new();
    walk(root, &root.join(under.strip_prefix("/").unwrap()), &mut out);
    out
}

/// The changes between two snapshots, as the diff reports them: a deleted folder is one entry.
pub fn changes(before: &Snapshot, after: &Snapshot) -> Vec<(PathBuf, &'static str)> {
    let mut out: Vec<(PathBuf, &'static str)> = Vec::new();
    for (p, d) in after {
        match before.get(p) {
            None => out.push((p.clone(), "Created")),
            Some(old) if old != d => out.push((p.clone(), "Modified")),
            _ => {}
        }
    }
    for p in before.keys() {
        let under_deleted = out.iter().any(|(q, k)| *k == "Deleted" && p.starts_with(q));
        if !after.contains_key(p) && !under_deleted {
            out.push((p.clone(), "Deleted"));
        }
    }
    out.sort();
    out
}

/// `(path, kind)` of each `info: File:` header of a diff, within `under`.
pub fn reported(stdout: &str, under: &str) -> Vec<(PathBuf, &'static str)> {
    let mut out: Vec<(PathBuf, &'static str)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("info: File: "))
        .filter_map(|l| {
            let (_, rest) = l.split_once(": ")?;
            let mut parts = rest.split(" : ");
            let path = PathBuf::from(parts.next()?);
            let kind = match parts.next()? {
                "Created" => "Created",
                "Modified" => "Modified",
                "Deleted" => "Deleted",
                _ => return None,
            };
            path.starts_with(under).then_some((path, kind))
        })
        .collect();
    out.sort();
    out
}

/// Mounts a fresh filesystem of type `kind` at `at` (in the test's own mount namespace).
pub fn mount_fs(kind: &str, at: &Path) {
    std::fs::create_dir_all(at).unwrap();
    nix::mount::mount(
        Some(kind),
        at,
        Some(kind),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
}

/// A stand-in `service` in the disposable root that records what it was asked in `log`.
pub fn stand_in_service(root: &Path, log: &str) {
    let service = root.join("usr/sbin/service");
    std::fs::write(&service, format!("#!/bin/sh\necho \"$@\" >> {log}\n")).unwrap();
    std::fs::set_permissions(&service, std::fs::Permissions::from_mode(0o755)).unwrap();
}

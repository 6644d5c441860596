//! `host::diff` against real directories: lower and upper trees built by hand (whiteouts made with
//! `mknod`, opaque directories with the `trusted.overlay.opaque` xattr), and one upper layer
//! written by a real overlay mount driven from the shell, in a private mount namespace.
//!
//! Most tests need root (whiteouts need CAP_MKNOD, `trusted.*` xattrs and mounts CAP_SYS_ADMIN).
//! Without root they print why and pass, except under `CI`, where they fail. GNU `diff` is the
//! oracle for the normal-diff output.

use std::os::unix::fs::{chown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use host::diff::{
    compute, normal_diff, render_json, render_text, summary, Change, ChangeKind, Content,
    DiffError, DiffOptions, FileType, Layer,
};

/// A unique scratch directory under the system temp dir, removed on drop (even when the test
/// fails), so tests can run in parallel and leave nothing behind.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "disco-diff-test-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["lower", "upper", "names/etc"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        // Names come from a root of our own, so that the expected output does not depend on the
        // machine's /etc/passwd.
        std::fs::write(
            dir.join("names/etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.join("names/etc/group"), "root:x:0:\nstaff:x:1000:\n").unwrap();
        Scratch(dir)
    }

    fn lower(&self) -> PathBuf {
        self.0.join("lower")
    }

    fn upper(&self) -> PathBuf {
        self.0.join("upper")
    }

    fn layer(&self) -> Layer {
        Layer {
            upper: self.upper(),
            lower: self.lower(),
            mount_point: PathBuf::from("/"),
        }
    }

    fn opts(&self) -> DiffOptions {
        DiffOptions {
            names_root: self.0.join("names"),
            ..DiffOptions::default()
        }
    }

    fn compute(&self) -> Vec<Change> {
        compute(&[self.layer()], &self.opts()).unwrap()
    }

    /// `st_dev` of the lower layer, in the hex `device=[…]` shows.
    fn dev(&self) -> String {
        format!("{:x}", std::fs::metadata(self.lower()).unwrap().dev())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// True when the test may go on; false (after saying why) when it must skip. Under `CI`, never
/// skips: CI runs as root, so missing root there is a broken setup.
fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: needs root, and CI is set"
    );
    eprintln!("skipping {test}: needs root (whiteouts, trusted xattrs, mounts)");
    false
}

/// Writes `contents` to `path` (making parents) with the given permission bits, owned by root.
fn write(path: &Path, contents: impl AsRef<[u8]>, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    chown(path, Some(0), Some(0)).unwrap();
}

fn mkdir(path: &Path, mode: u32) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// An overlayfs whiteout: a character device 0:0.
fn whiteout(path: &Path) {
    use nix::sys::stat::{mknod, Mode, SFlag};
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    mknod(path, SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
}

fn opaque(dir: &Path) {
    xattr::set(dir, "trusted.overlay.opaque", b"y").unwrap();
}

/// What GNU diff prints for the two contents (the oracle for normal-diff output).
fn gnu_diff(old: &[u8], new: &[u8]) -> String {
    let dir = Scratch::new("gnu");
    let (a, b) = (dir.0.join("a"), dir.0.join("b"));
    std::fs::write(&a, old).unwrap();
    std::fs::write(&b, new).unwrap();
    let out = Command::new("diff").arg(&a).arg(&b).output().unwrap();
    assert!(out.status.code().unwrap() <= 1, "diff failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn md5sum(data: &[u8]) -> String {
    let dir = Scratch::new("md5");
    let f = dir.0.join("f");
    std::fs::write(&f, data).unwrap();
    let out = Command::new("md5sum").arg(&f).output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..32].to_string()
}

fn paths(changes: &[Change]) -> Vec<(String, ChangeKind)> {
    changes
        .iter()
        .map(|c| (c.path.to_string_lossy().into_owned(), c.kind))
        .collect()
}

fn text_of(change: &Change) -> String {
    render_text(std::slice::from_ref(change))
}

fn passwd_lines(n: usize) -> String {
    (0..n)
        .map(|i| format!("user{i}:x:{i}:{i}::/home/user{i}:/bin/sh\n"))
        .collect()
}

#[test]
fn normal_diff_matches_gnu_diff() {
    // Pure computation against the GNU oracle: no root needed.
    let cases: [(&[u8], &[u8]); 9] = [
        (b"", b"HOST=x\nKEY=y\n"),
        (b"a\nb\nc\n", b""),
        (b"a\nb\nc\n", b"a\nB\nc\n"),
        (b"a\nb\nc\nd\ne\nf\n", b"a\nc\nd\nX\nY\ne\nf\ng\n"),
        (b"a\nb", b"a\nb\n"),
        (b"a\nb\n", b"a\nc"),
        (b"one\n", b"zero\none\n"),
        (b"1\n2\n3\n4\n5\n6\n7\n8\n9\n", b"1\n2\n4\n5\n6\n7\n9\n10\n"),
        (b"x\n", b"x\ny"),
    ];
    for (old, new) in cases {
        assert_eq!(
            normal_diff(old, new),
            gnu_diff(old, new),
            "old {:?} new {:?}",
            String::from_utf8_lossy(old),
            String::from_utf8_lossy(new)
        );
    }
    let old = passwd_lines(35);
    let mut new: Vec<&str> = old.lines().collect();
    new.remove(0);
    new.insert(20, "inserted");
    let new = new.join("\n") + "\n";
    assert_eq!(
        normal_diff(old.as_bytes(), new.as_bytes()),
        gnu_diff(old.as_bytes(), new.as_bytes())
    );
}

#[test]
fn seed_session_created_modified_deleted_text_files() {
    if !privileged("seed_session_created_modified_deleted_text_files") {
        return;
    }
    let s = Scratch::new("seed");
    let (lo, up) = (s.lower(), s.upper());
    let passwd = passwd_lines(35);
    let shadow: String = (0..5)
        .map(|i| format!("user{i}:*:15240:0:99999:7:::\n"))
        .collect();
    mkdir(&lo.join("etc"), 0o755);
    write(&lo.join("etc/passwd"), &passwd, 0o644);
    write(&lo.join("etc/shadow"), &shadow, 0o000);
    write(&lo.join("etc/hosts"), "127.0.0.1 localhost\n", 0o644);
    mkdir(&lo.join("var/lib"), 0o755);
    mkdir(&lo.join("bin"), 0o755);
    // The upper layer as the seed's shell session leaves it: copied-up directories (unchanged,
    // so not reported), a whiteout, a rewritten file, new files.
    mkdir(&up.join("etc"), 0o755);
    whiteout(&up.join("etc/passwd"));
    let new_shadow: String = shadow.lines().skip(1).map(|l| format!("{l}\n")).collect();
    write(&up.join("etc/shadow"), &new_shadow, 0o644);
    let stuff = "HOST=localhost.localdomain\nKEY_VALUE=LOLTHISKEYMEANSNOTHING\n";
    mkdir(&up.join("etc/othermodule"), 0o755);
    write(&up.join("etc/othermodule/stuff.cfg"), stuff, 0o644);
    mkdir(&up.join("var/lib"), 0o755);
    write(&up.join("var/lib/p0wnt"), "LOL\n", 0o644);
    mkdir(&up.join("bin"), 0o755);
    write(&up.join("bin/myhotbash"), "", 0o644);

    let changes = s.compute();
    assert_eq!(
        paths(&changes),
        [
            ("/bin/myhotbash".to_string(), ChangeKind::Created),
            ("/etc/othermodule".into(), ChangeKind::Created),
            ("/etc/othermodule/stuff.cfg".into(), ChangeKind::Created),
            ("/etc/passwd".into(), ChangeKind::Deleted),
            ("/etc/shadow".into(), ChangeKind::Modified),
            ("/var/lib/p0wnt".into(), ChangeKind::Created),
        ]
    );
    let dev = s.dev();
    let expected = format!(
        "info: File: file: /bin/myhotbash : Created : type=[regular empty file] device=[{dev}] mode=[81a4] selinux=[?] md5=[d41d8cd98f00b204e9800998ecf8427e] perms=[root:root 644]\n\
         info: File: directory: /etc/othermodule : Created : type=[directory] device=[{dev}] mode=[41ed] selinux=[?] perms=[root:root 755]\n\
         info: File: file: /etc/othermodule/stuff.cfg : Created : type=[regular file] device=[{dev}] mode=[81a4] selinux=[?] md5=[77b20e4840b1be13a577e152edc6b443] perms=[root:root 644]\n\
         {}\
         info: File: file: /etc/passwd : Deleted\n\
         {}\
         info: File: file: /etc/shadow : Modified : md5=[{} => {}] perms=[root:root 0 => root:root 644] mode=[8000 => 81a4]\n\
         Contents not shown: other users may not read it (mode 0)\n\
         info: File: file: /var/lib/p0wnt : Created : type=[regular file] device=[{dev}] mode=[81a4] selinux=[?] md5=[5732edd7e4e1240b868e15bc95d36339] perms=[root:root 644]\n\
         0a1\n> LOL\n",
        gnu_diff(b"", stuff.as_bytes()),
        gnu_diff(passwd.as_bytes(), b""),
        md5sum(shadow.as_bytes()),
        md5sum(new_shadow.as_bytes()),
    );
    assert_eq!(render_text(&changes), expected);
    assert!(
        expected.contains("1,35d0\n< user0:"),
        "the oracle agrees with the seed"
    );
    assert_eq!(summary(&changes), (4, 1, 1));
}

#[test]
fn binary_files_are_named_not_printed() {
    if !privileged("binary_files_are_named_not_printed") {
        return;
    }
    let s = Scratch::new("binary");
    write(&s.lower().join("blob"), b"\x7fELF\0\x01old", 0o755);
    write(&s.upper().join("blob"), b"\x7fELF\0\x01new", 0o755);
    write(&s.upper().join("new.bin"), b"\0\0\0", 0o644);
    let changes = s.compute();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0].content, Content::Binary);
    assert_eq!(
        text_of(&changes[0]),
        format!(
            "info: File: file: /blob : Modified : md5=[{} => {}]\nBinary files differ\n",
            md5sum(b"\x7fELF\0\x01old"),
            md5sum(b"\x7fELF\0\x01new")
        )
    );
    assert_eq!(
        text_of(&changes[1]).lines().nth(1),
        Some("Binary file created")
    );
    assert!(!render_text(&changes).contains("ELF"));
}

#[test]
fn deleted_directory_is_one_entry() {
    if !privileged("deleted_directory_is_one_entry") {
        return;
    }
    let s = Scratch::new("deldir");
    write(&s.lower().join("srv/app/a.conf"), "a\n", 0o644);
    write(&s.lower().join("srv/app/deep/b.conf"), "b\n", 0o644);
    mkdir(&s.upper().join("srv"), 0o755);
    whiteout(&s.upper().join("srv/app"));
    let changes = s.compute();
    assert_eq!(
        paths(&changes),
        [("/srv/app".to_string(), ChangeKind::Deleted)]
    );
    assert_eq!(
        render_text(&changes),
        "info: File: directory: /srv/app : Deleted\n"
    );
}

#[test]
fn opaque_directory_hides_every_lower_child() {
    if !privileged("opaque_directory_hides_every_lower_child") {
        return;
    }
    let s = Scratch::new("opaque");
    let (lo, up) = (s.lower(), s.upper());
    write(&lo.join("d/kept"), "same\n", 0o644);
    write(&lo.join("d/changed"), "old\n", 0o644);
    write(&lo.join("d/gone"), "bye\n", 0o644);
    write(&lo.join("d/sub/z"), "z\n", 0o644);
    write(&lo.join("d/sub2/y"), "y\n", 0o644);
    mkdir(&lo.join("d"), 0o755);
    // rm -rf d; mkdir d; then write some of it again, and a subdirectory below the opaque one
    // whose lower namesake must not show through either.
    mkdir(&up.join("d"), 0o755);
    opaque(&up.join("d"));
    write(&up.join("d/kept"), "same\n", 0o644);
    write(&up.join("d/changed"), "new\n", 0o644);
    write(&up.join("d/x"), "x\n", 0o644);
    mkdir(&up.join("d/sub2"), 0o755);
    let changes = s.compute();
    assert_eq!(
        paths(&changes),
        [
            ("/d/changed".to_string(), ChangeKind::Modified),
            ("/d/gone".into(), ChangeKind::Deleted),
            ("/d/sub".into(), ChangeKind::Deleted),
            ("/d/sub2/y".into(), ChangeKind::Deleted),
            ("/d/x".into(), ChangeKind::Created),
        ]
    );
    assert_eq!(
        changes[0].content,
        Content::Text("1c1\n< old\n---\n> new\n".into())
    );
    // The overlay's own marker is not an attribute change.
    assert!(changes
        .iter()
        .all(|c| c.new.as_ref().is_none_or(|m| m.xattrs.is_empty())));
}

#[test]
fn symlink_target_and_type_changes() {
    if !privileged("symlink_target_and_type_changes") {
        return;
    }
    let s = Scratch::new("links");
    let (lo, up) = (s.lower(), s.upper());
    symlink("old-target", lo.join("link")).unwrap();
    symlink("a", lo.join("same")).unwrap();
    write(&lo.join("was-file"), "text\n", 0o644);
    symlink("new-target/longer", up.join("link")).unwrap();
    symlink("a", up.join("same")).unwrap();
    mkdir(&up.join("was-file"), 0o755);
    opaque(&up.join("was-file"));
    write(&up.join("was-file/inside"), "", 0o644);
    let changes = s.compute();
    assert_eq!(
        paths(&changes),
        [
            ("/link".to_string(), ChangeKind::Modified),
            ("/was-file".into(), ChangeKind::Modified),
            ("/was-file/inside".into(), ChangeKind::Created),
        ]
    );
    assert_eq!(
        text_of(&changes[0]),
        "info: File: symlink: /link : Modified : target=[old-target => new-target/longer]\n"
    );
    let was_file = text_of(&changes[1]);
    assert!(
        was_file.starts_with("info: File: directory: /was-file : Modified : md5=["),
        "{was_file}"
    );
    assert!(
        was_file.contains(" type=[regular file => directory] mode=[81a4 => 41ed]\n"),
        "{was_file}"
    );
    assert_eq!(
        changes[1].new.as_ref().unwrap().file_type,
        FileType::Directory
    );
}

#[test]
fn mode_and_owner_change_without_content_change() {
    if !privileged("mode_and_owner_change_without_content_change") {
        return;
    }
    let s = Scratch::new("perms");
    write(&s.lower().join("conf"), "k=v\n", 0o644);
    write(&s.upper().join("conf"), "k=v\n", 0o600);
    chown(s.upper().join("conf"), Some(1000), Some(1000)).unwrap();
    // A copied-up file whose only difference is its times is not a change.
    write(&s.lower().join("touched"), "t\n", 0o644);
    write(&s.upper().join("touched"), "t\n", 0o644);
    // An uid without a name shows as the number.
    write(&s.lower().join("numeric"), "n\n", 0o644);
    write(&s.upper().join("numeric"), "n\n", 0o644);
    chown(s.upper().join("numeric"), Some(4242), None).unwrap();
    let changes = s.compute();
    assert_eq!(
        render_text(&changes),
        "info: File: file: /conf : Modified : perms=[root:root 644 => alice:staff 600] mode=[81a4 => 8180]\n\
         info: File: file: /numeric : Modified : perms=[root:root 644 => 4242:root 644]\n"
    );
    assert_eq!(changes[0].content, Content::None);
}

#[test]
fn sparse_gibibyte_file_is_hashed_by_its_data_not_diffed() {
    if !privileged("sparse_gibibyte_file_is_hashed_by_its_data_not_diffed") {
        return;
    }
    use std::os::unix::fs::FileExt;
    let s = Scratch::new("sparse");
    // The same gibibyte three ways: all hole; its first block written as zeros; one byte set.
    let big = s.upper().join("big.img");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let zeros = s.upper().join("zeros.img");
    let f = std::fs::File::create(&zeros).unwrap();
    f.set_len(1 << 30).unwrap();
    f.write_all_at(&vec![0u8; 1 << 20], 0).unwrap();
    let one = s.upper().join("one.img");
    let f = std::fs::File::create(&one).unwrap();
    f.set_len(1 << 30).unwrap();
    f.write_all_at(b"x", 12345).unwrap();
    drop(f);
    let peak_before = peak_rss_kib();
    let read_before = rchar();
    let changes = s.compute();
    // Other tests run in this process at the same time, but none holds or reads anywhere near
    // 256 MiB: a file read into memory would add 1 GiB to the peak, and reading a gibibyte of
    // holes (zeros to read(2)) 1 GiB to what the process read.
    let grew = peak_rss_kib() - peak_before;
    assert!(grew < 256 * 1024, "peak memory grew by {grew} KiB");
    let read = rchar() - read_before;
    assert_eq!(changes.len(), 3);
    assert!(changes
        .iter()
        .all(|c| c.content == Content::TooLarge(1 << 30)));
    let md5 = |name: &str| {
        let c = changes.iter().find(|c| c.path.ends_with(name)).unwrap();
        c.new.as_ref().unwrap().md5.clone().unwrap()
    };
    // Where the holes are does not matter; the contents do.
    assert_eq!(md5("big.img"), md5("zeros.img"));
    assert_ne!(md5("big.img"), md5("one.img"));
    assert!(text_of(&changes[0]).contains("\nContents not compared: 1073741824 bytes"));
    // Holes are skipped, not read: no md5 of a gibibyte of zeros.
    assert!(read < 256 << 20, "the diff read {read} bytes");
}

/// A script's sparse 1 TB file: its diff reads what its data takes, not the terabyte.
#[test]
fn sparse_terabyte_file_diffs_reading_only_its_data() {
    if !privileged("sparse_terabyte_file_diffs_reading_only_its_data") {
        return;
    }
    use std::os::unix::fs::FileExt;
    let s = Scratch::new("terabyte");
    let f = std::fs::File::create(s.upper().join("tera.img")).unwrap();
    f.set_len(1 << 40).unwrap();
    f.write_all_at(b"data in the middle", 1 << 39).unwrap();
    drop(f);
    let read_before = rchar();
    let changes = s.compute();
    let read = rchar() - read_before;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].content, Content::TooLarge(1 << 40));
    // Other tests in this process read far less than the 256 MiB bound; the file is 1 TiB.
    assert!(read < 256 << 20, "the diff read {read} bytes");
}

/// A diff still reading at its deadline fails, naming the file as the sandbox shows it.
#[test]
fn a_diff_past_its_deadline_fails_naming_the_file() {
    if !privileged("a_diff_past_its_deadline_fails_naming_the_file") {
        return;
    }
    let s = Scratch::new("deadline");
    std::fs::write(s.upper().join("slow.bin"), vec![7u8; 2 << 20]).unwrap();
    let opts = DiffOptions {
        deadline: Some(Instant::now()),
        ..s.opts()
    };
    let err = compute(&[s.layer()], &opts).unwrap_err();
    assert!(matches!(err, DiffError::TimedOut { .. }), "{err}");
    assert!(err.to_string().contains("/slow.bin"), "{err}");
    assert!(!err.to_string().contains("upper"), "{err}");
}

#[test]
fn ten_thousand_created_files_in_order() {
    if !privileged("ten_thousand_created_files_in_order") {
        return;
    }
    let s = Scratch::new("many");
    let dir = s.upper().join("many");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..10_000 {
        std::fs::write(dir.join(format!("f{i:05}")), format!("line {i}\n")).unwrap();
    }
    let start = Instant::now();
    let changes = s.compute();
    let text = render_text(&changes);
    let took = start.elapsed();
    assert_eq!(changes.len(), 10_001);
    assert_eq!(summary(&changes), (10_001, 0, 0));
    assert_eq!(changes[0].path, Path::new("/many"));
    assert_eq!(changes[1].path, Path::new("/many/f00000"));
    assert_eq!(changes[10_000].path, Path::new("/many/f09999"));
    assert!(changes.windows(2).all(|w| w[0].path < w[1].path));
    assert_eq!(text.matches(" : Created : ").count(), 10_001);
    eprintln!(
        "10,000 created files: {took:?} ({:.0} files/s, unoptimised build)",
        10_000.0 / took.as_secs_f64()
    );
}

#[test]
fn layers_are_reported_together_with_their_mount_points() {
    if !privileged("layers_are_reported_together_with_their_mount_points") {
        return;
    }
    let root = Scratch::new("root");
    let var = Scratch::new("var");
    write(&root.upper().join("zzz"), "z\n", 0o644);
    write(&root.upper().join("etc/a"), "a\n", 0o644);
    mkdir(&root.lower().join("etc"), 0o755);
    mkdir(&root.upper().join("etc"), 0o755);
    write(&var.upper().join("lib/p0wnt"), "LOL\n", 0o644);
    mkdir(&var.lower().join("lib"), 0o755);
    mkdir(&var.upper().join("lib"), 0o755);
    let layers = [
        root.layer(),
        Layer {
            mount_point: PathBuf::from("/var"),
            ..var.layer()
        },
    ];
    let changes = compute(&layers, &root.opts()).unwrap();
    assert_eq!(
        paths(&changes),
        [
            ("/etc/a".to_string(), ChangeKind::Created),
            ("/var/lib/p0wnt".into(), ChangeKind::Created),
            ("/zzz".into(), ChangeKind::Created),
        ]
    );
    assert!(render_text(&changes).contains(&format!("device=[{}]", var.dev())));
}

#[test]
fn json_lines_one_object_per_path() {
    if !privileged("json_lines_one_object_per_path") {
        return;
    }
    let s = Scratch::new("json");
    write(&s.lower().join("old"), "1\n", 0o644);
    whiteout(&s.upper().join("old"));
    write(&s.upper().join("new\nline name"), "2\n", 0o644);
    let changes = s.compute();
    let json = render_json(&changes).unwrap();
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["path"], "/new\nline name");
    assert_eq!(lines[0]["kind"], "created");
    assert_eq!(lines[0]["new"]["mode"], 0o100644);
    assert_eq!(lines[0]["new"]["owner"], "root");
    assert_eq!(lines[0]["content"]["kind"], "text");
    assert_eq!(lines[0]["content"]["value"], "0a1\n> 2\n");
    assert_eq!(lines[1]["kind"], "deleted");
    assert!(lines[1]["new"].is_null());
    // In text, the newline in the name is shown as backslash-n, so the block stays one line.
    assert!(render_text(&changes).starts_with("info: File: file: /new\\nline name : Created : "));
}

#[test]
fn errors_name_the_path() {
    let s = Scratch::new("errors");
    let missing = s.0.join("no-such-upper");
    let err = compute(
        &[Layer {
            upper: missing.clone(),
            ..s.layer()
        }],
        &s.opts(),
    )
    .unwrap_err();
    assert!(matches!(err, DiffError::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );
    let file = s.0.join("names/etc/passwd");
    let err = compute(
        &[Layer {
            lower: file.clone(),
            ..s.layer()
        }],
        &s.opts(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("layer directory {} is not a directory", file.display())
    );
}

/// Runs `script` under `sh -e` in a private mount namespace, with `$L $U $W $M` set to an
/// overlay's lower, upper, work and merged directories and the overlay mounted on `$M` with the
/// sandbox's options. The mount dies with the namespace, so it can never leak to the host.
fn in_overlay(s: &Scratch, script: &str) {
    let (w, m) = (s.0.join("work"), s.0.join("merged"));
    std::fs::create_dir_all(&w).unwrap();
    std::fs::create_dir_all(&m).unwrap();
    let full = format!(
        "set -e\n\
         mount -t overlay overlay -o lowerdir=\"$L\",upperdir=\"$U\",workdir=\"$W\",redirect_dir=off,metacopy=off,index=off \"$M\"\n\
         cd \"$M\"\n{script}\ncd /\numount \"$M\"\n"
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &full])
        .env("L", s.lower())
        .env("U", s.upper())
        .env("W", &w)
        .env("M", &m)
        .output()
        .unwrap();
    assert!(out.status.success(), "overlay script failed: {out:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*m.to_string_lossy()),
        "the overlay leaked into the host's mounts"
    );
}

#[test]
fn real_overlay_changes_are_each_named() {
    if !privileged("real_overlay_changes_are_each_named") {
        return;
    }
    let s = Scratch::new("overlay");
    let lo = s.lower();
    write(&lo.join("etc/modified.txt"), "one\ntwo\n", 0o644);
    write(&lo.join("etc/deleted.txt"), "bye\n", 0o644);
    write(&lo.join("etc/mode.txt"), "m\n", 0o644);
    write(&lo.join("etc/owner.txt"), "o\n", 0o644);
    write(&lo.join("etc/untouched.txt"), "u\n", 0o644);
    write(&lo.join("gone/a/b/c.txt"), "c\n", 0o644);
    write(&lo.join("remade/old1"), "1\n", 0o644);
    write(&lo.join("remade/old2"), "2\n", 0o644);
    write(&lo.join("bin/tool"), "#!/bin/sh\n", 0o755);
    symlink("oldtarget", lo.join("link")).unwrap();
    for d in ["etc", "gone", "gone/a", "gone/a/b", "remade", "bin"] {
        mkdir(&lo.join(d), 0o755);
    }
    let before = snapshot(&lo);
    in_overlay(
        &s,
        r#"
        echo new > created.txt
        echo three >> etc/modified.txt
        rm etc/deleted.txt
        cat etc/untouched.txt >/dev/null
        touch bin/tool
        rm -rf gone
        rm -rf remade && mkdir remade && touch remade/x
        ln -sfn newtarget link
        chmod 600 etc/mode.txt
        chown 1000:1000 etc/owner.txt
        mkfifo etc/fifo
        echo spaced > "etc/with space.txt"
        printf 'x\n' > "etc/$(printf 'new\nline')"
        ln created.txt hardlink.txt
        mkdir -p var/lib && echo LOL | tee var/lib/p0wnt >/dev/null
        "#,
    );
    assert_eq!(snapshot(&lo), before, "the lower layer must be untouched");
    let changes = s.compute();
    let dev = s.dev();
    let expected = format!(
        "info: File: file: /created.txt : Created : type=[regular file] device=[{dev}] mode=[81a4] selinux=[?] md5=[{new}] perms=[root:root 644]\n0a1\n> new\n\
         info: File: file: /etc/deleted.txt : Deleted\n1d0\n< bye\n\
         info: File: fifo: /etc/fifo : Created : type=[fifo] device=[{dev}] mode=[11a4] selinux=[?] perms=[root:root 644]\n\
         info: File: file: /etc/mode.txt : Modified : perms=[root:root 644 => root:root 600] mode=[81a4 => 8180]\n\
         info: File: file: /etc/modified.txt : Modified : md5=[{m1} => {m2}]\n2a3\n> three\n\
         info: File: file: /etc/new\\nline : Created : type=[regular file] device=[{dev}] mode=[81a4] selinux=[?] md5=[{x}] perms=[root:root 644]\n0a1\n> x\n\
         info: File: file: /etc/owner.txt : Modified : perms=[root:root 644 => alice:staff 644]\n\
         info: File: file: /etc/with space.txt : Created : type=[regular file] device=[{dev}] mode=[81a4] selinux=[?] md5=[{sp}] perms=[root:root 644]\n0a1\n> spaced\n\
         info: File: directory: /gone : Deleted\n\
         info: File: file: /hardlink.txt : Created : type=[regular file] device=[{dev}] mode=[81a4] selinux=[?] md5=[{new}] perms=[root:root 644]\n0a1\n> new\n\
         info: File: symlink: /link : Modified : target=[oldtarget => newtarget]\n\
         info: File: file: /remade/old1 : Deleted\n1d0\n< 1\n\
         info: File: file: /remade/old2 : Deleted\n1d0\n< 2\n\
         info: File: file: /remade/x : Created : type=[regular empty file] device=[{dev}] mode=[81a4] selinux=[?] md5=[d41d8cd98f00b204e9800998ecf8427e] perms=[root:root 644]\n\
         info: File: directory: /var : Created : type=[directory] device=[{dev}] mode=[41ed] selinux=[?] perms=[root:root 755]\n\
         info: File: directory: /var/lib : Created : type=[directory] device=[{dev}] mode=[41ed] selinux=[?] perms=[root:root 755]\n\
         info: File: file: /var/lib/p0wnt : Created : type=[regular file] device=[{dev}] mode=[81a4] selinux=[?] md5=[5732edd7e4e1240b868e15bc95d36339] perms=[root:root 644]\n0a1\n> LOL\n",
        new = md5sum(b"new\n"),
        m1 = md5sum(b"one\ntwo\n"),
        m2 = md5sum(b"one\ntwo\nthree\n"),
        x = md5sum(b"x\n"),
        sp = md5sum(b"spaced\n"),
    );
    assert_eq!(render_text(&changes), expected);
}

/// The process's peak resident set (`VmHWM`), in KiB.
/// What this process's read calls have returned so far, in bytes (`rchar` of /proc/self/io:
/// holes count, since read(2) returns them as zeros).
fn rchar() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    let line = io.lines().find(|l| l.starts_with("rchar:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn peak_rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn xattrs_selinux_and_device_nodes() {
    if !privileged("xattrs_selinux_and_device_nodes") {
        return;
    }
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let s = Scratch::new("xattrs");
    let (lo, up) = (s.lower(), s.upper());
    write(&lo.join("labelled"), "same\n", 0o644);
    xattr::set(
        lo.join("labelled"),
        "security.selinux",
        b"system_u:object_r:etc_t:s0\0",
    )
    .unwrap();
    write(&up.join("labelled"), "same\n", 0o644);
    xattr::set(up.join("labelled"), "user.note", b"hello").unwrap();
    write(&up.join("new-labelled"), "", 0o644);
    xattr::set(
        up.join("new-labelled"),
        "security.selinux",
        b"unconfined_u:object_r:tmp_t:s0\0",
    )
    .unwrap();
    mknod(
        &lo.join("dev0"),
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o660),
        makedev(7, 0),
    )
    .unwrap();
    mknod(
        &up.join("dev0"),
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o660),
        makedev(7, 1),
    )
    .unwrap();
    mknod(
        &up.join("null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .unwrap();
    std::fs::set_permissions(up.join("null"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let changes = s.compute();
    let dev = s.dev();
    assert_eq!(
        render_text(&changes),
        format!(
            "info: File: device: /dev0 : Modified : device=[700 => 701]\n\
             info: File: file: /labelled : Modified : selinux=[system_u:object_r:etc_t:s0 => ?] xattr.user.note=[? => hello]\n\
             info: File: file: /new-labelled : Created : type=[regular empty file] device=[{dev}] mode=[81a4] selinux=[unconfined_u:object_r:tmp_t:s0] md5=[d41d8cd98f00b204e9800998ecf8427e] perms=[root:root 644]\n\
             info: File: device: /null : Created : type=[character special file] device=[103] mode=[21b6] selinux=[?] perms=[root:root 666]\n"
        )
    );
    assert_eq!(changes[0].new.as_ref().unwrap().rdev, Some(0x701));
}

/// Every path under `dir` with its type, mode, owner, size and contents: proof that a tree did
/// not change.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u32, u32, u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let st = std::fs::symlink_metadata(&p).unwrap();
            let data = if st.is_file() {
                std::fs::read(&p).unwrap()
            } else if st.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                Vec::new()
            };
            if st.is_dir() {
                stack.push(p.clone());
            }
            out.push((p, st.mode(), st.uid(), st.len(), data));
        }
    }
    out.sort();
    out
}

/// Applies a normal diff to `old`, checking as it goes that every hunk's line numbers and `< `
/// lines match `old` exactly (what `patch --normal` checks), and returns the result.
fn apply_normal_diff(old: &[u8], diff: &str) -> Vec<u8> {
    let old: Vec<&[u8]> = old.split_inclusive(|&b| b == b'\n').collect();
    let mut out: Vec<u8> = Vec::new();
    let mut next = 0; // the first old line not yet copied (0-based)
    let mut lines = diff.lines().peekable();
    let range = |r: &str| -> (usize, usize) {
        match r.split_once(',') {
            Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
            None => (r.parse().unwrap(), r.parse().unwrap()),
        }
    };
    // Reads `prefix` lines (with their no-newline markers) into bytes.
    let take = |lines: &mut std::iter::Peekable<std::str::Lines>, prefix: &str| {
        let mut taken: Vec<Vec<u8>> = Vec::new();
        while let Some(l) = lines.peek() {
            if let Some(text) = l.strip_prefix(prefix) {
                taken.push(format!("{text}\n").into_bytes());
            } else if *l == "\\ No newline at end of file" {
                taken.last_mut().unwrap().pop();
            } else {
                break;
            }
            lines.next();
        }
        taken
    };
    while let Some(header) = lines.next() {
        let op = header.find(['a', 'd', 'c']).unwrap();
        let (a, b) = range(&header[..op]);
        let (first, last) = match &header[op..op + 1] {
            "a" => (a + 1, a),
            _ => (a, b),
        };
        out.extend(old[next..first - 1].concat());
        let removed = take(&mut lines, "< ");
        assert_eq!(removed.len(), last + 1 - first, "{header}");
        for (k, r) in removed.iter().enumerate() {
            assert_eq!(r.as_slice(), old[first - 1 + k], "{header}");
        }
        if lines.peek() == Some(&"---") {
            lines.next();
        }
        for added in take(&mut lines, "> ") {
            out.extend(added);
        }
        next = last;
    }
    out.extend(old[next..].concat());
    out
}

#[test]
fn normal_diff_is_minimal_and_applies_like_gnu_diff() {
    // Random files over a tiny alphabet have many equally short edit scripts; similar and GNU
    // diff may place a hunk differently, so the oracle checks what must hold: as few changed
    // lines as GNU diff, and applying it (line numbers and removed lines checked) gives new.
    let mut state: u64 = 0x5eed;
    let mut rnd = |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let changed = |d: &str| {
        d.lines()
            .filter(|l| l.starts_with("< ") || l.starts_with("> "))
            .count()
    };
    for case in 0..200 {
        let file = |rnd: &mut dyn FnMut(u64) -> u64| {
            let mut s: String = (0..rnd(12))
                .map(|_| ["a\n", "b\n", "c\n", "d\n"][rnd(4) as usize])
                .collect();
            // Now and then a last line without its newline.
            if rnd(5) == 0 {
                s.push('e');
            }
            s.into_bytes()
        };
        let (old, new) = (file(&mut rnd), file(&mut rnd));
        let ours = normal_diff(&old, &new);
        assert_eq!(
            changed(&ours),
            changed(&gnu_diff(&old, &new)),
            "case {case}"
        );
        if !ours.is_empty() {
            assert_eq!(apply_normal_diff(&old, &ours), new, "case {case}: {ours}");
        }
    }
}

//! Files per second for `host::diff`: 10,000 small created files, and 1,000 modified 1 MB text
//! files (one line changed in each), timing `compute` plus `render_text` together.
//!
//! Plain timing, no harness: `cargo bench -p disco --bench diff`. Needs about 2 GB of space in
//! the temp dir (`TMPDIR`); no root needed (no whiteouts).

use std::path::{Path, PathBuf};
use std::time::Instant;

use host::diff::{compute, render_text, summary, DiffOptions, Layer};

/// A scratch tree removed on drop, even when a step panics.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("disco-diff-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("lower")).unwrap();
    std::fs::create_dir_all(dir.join("upper")).unwrap();
    Scratch(dir)
}

/// Times `compute` + `render_text` over the layer in `dir` (best of `runs`, to skip the
/// cold-cache first pass) and prints files per second.
fn measure(label: &str, dir: &Path, files: usize, runs: usize) {
    let layer = Layer {
        upper: dir.join("upper"),
        lower: dir.join("lower"),
        mount_point: PathBuf::from("/"),
    };
    let opts = DiffOptions::default();
    let mut best = f64::MAX;
    for _ in 0..runs {
        let start = Instant::now();
        let changes = compute(std::slice::from_ref(&layer), &opts).unwrap();
        let text = render_text(&changes);
        let secs = start.elapsed().as_secs_f64();
        assert!(summary(&changes).0 + summary(&changes).1 >= files);
        std::hint::black_box(text);
        best = best.min(secs);
    }
    println!(
        "{label}: {best:.3} s for {files} files = {:.0} files/s (best of {runs})",
        files as f64 / best
    );
}

fn main() {
    // 10,000 small created files in 100 directories.
    let small = scratch("small");
    for d in 0..100 {
        let dir = small.0.join(format!("upper/d{d:03}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..100 {
            std::fs::write(
                dir.join(format!("f{f:03}.conf")),
                format!("key{f}=value{d}\n"),
            )
            .unwrap();
        }
    }
    measure("10,000 created small files", &small.0, 10_000, 5);
    drop(small);

    // 1,000 modified 1 MB text files: the same 1 MB of lines below and above, one line changed.
    let big = scratch("big");
    let line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-line-\n";
    let base: String = line.repeat(1_000_000 / line.len());
    for f in 0..1_000 {
        let name = format!("f{f:04}.txt");
        std::fs::write(big.0.join("lower").join(&name), &base).unwrap();
        let cut = (f * 97 % 12_000) * line.len();
        let changed = format!(
            "{}changed line {f}\n{}",
            &base[..cut],
            &base[cut + line.len()..]
        );
        std::fs::write(big.0.join("upper").join(&name), changed).unwrap();
    }
    measure("1,000 modified 1 MB text files", &big.0, 1_000, 3);
    drop(big);

    // One 1 GiB sparse created file: streamed through md5, never held in memory nor diffed.
    let sparse = scratch("sparse");
    let file = std::fs::File::create(sparse.0.join("upper/big.img")).unwrap();
    file.set_len(1 << 30).unwrap();
    drop(file);
    measure("1 GiB sparse created file", &sparse.0, 1, 1);
}

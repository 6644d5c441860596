//! What the dance and its sandbox say to each other, as types: the sandbox's [`Setup`], one
//! [`Request`] a line on the worker's stdin, one [`Reply`] a line on its stdout; and the
//! [`Record`]s a module's processes append to its results file, decoded once ([`Records`]).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dance::pieces::{PieceResult, Plan};
use crate::dance::report::Usage;
use crate::diff;
use crate::sandbox::{LayerInfo, Network, SandboxError, ShimConfig};

/// One line of a module's results file: what its confined children, its runner and the
/// sandbox report, in the order it happens. The file is the host's, written on a descriptor
/// opened before any root was entered and closed on exec: scripts can neither reach nor forge
/// it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// A piece ran: a template, the delivery, a script.
    Piece(Box<PieceResult>),
    /// The module's diff, made by its runner (live: the merge needs it at once).
    Diff(Box<Diffed>),
    /// The sandbox itself failed (not a piece): why.
    Failed(String),
}

impl Record {
    /// Appends the record to `to` as one line, in one write (the file is opened to append, so
    /// records of two processes never interleave).
    pub fn append(&self, to: &mut impl Write) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        line.push(b'\n');
        to.write_all(&line)
    }
}

/// A module's results, decoded once, as they are appended: the pieces in order, its diff, and
/// whether the sandbox failed.
#[derive(Debug)]
pub struct Records {
    from: BufReader<File>,
    /// Every piece so far, in order.
    pub pieces: Vec<PieceResult>,
    /// The module's diff, when its runner made it.
    pub diff: Option<Diffed>,
    /// The sandbox failed (or wrote what cannot be read): why.
    pub failure: Option<String>,
}

impl Records {
    /// Opens the results file at `path` to read it from its start.
    pub fn open(path: &Path) -> std::io::Result<Records> {
        Ok(Records {
            from: BufReader::new(File::open(path)?),
            pieces: Vec::new(),
            diff: None,
            failure: None,
        })
    }

    /// Decodes what was appended since the last call; returns the pieces among it.
    pub fn update(&mut self) -> &[PieceResult] {
        let first = self.pieces.len();
        let mut line = Vec::new();
        loop {
            line.clear();
            match self.from.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => self.decode(&line),
                Err(e) => {
                    self.failure.get_or_insert(format!("its results: {e}"));
                    break;
                }
            }
        }
        &self.pieces[first..]
    }

    fn decode(&mut self, line: &[u8]) {
        match serde_json::from_slice::<Record>(line) {
            Ok(Record::Piece(p)) => self.pieces.push(*p),
            Ok(Record::Diff(d)) => self.diff = Some(*d),
            Ok(Record::Failed(e)) => {
                self.failure.get_or_insert(e);
            }
            // Only disco writes there; a line cut short is a process killed while it wrote.
            Err(e) => {
                self.failure.get_or_insert(format!("its results: {e}"));
            }
        }
    }
}

/// What the dance's sandbox covers, for its whole life.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Setup {
    /// The dance's run folder: roots and views are mounted below it.
    pub run: PathBuf,
    /// Paths inside covered by an empty read-only tmpfs (the state directory).
    pub hide: Vec<PathBuf>,
    /// Noop: new PID namespace, dropped capabilities, shims that report.
    pub noop: bool,
    /// The shims.
    pub shims: ShimConfig,
    /// In noop, the network.
    #[serde(default)]
    pub network: Network,
    /// The disco executable, offered inside under [`crate::sandbox::enter::BIN_DIR`].
    pub tools: PathBuf,
    /// The host name inside: the node.
    pub hostname: Option<String>,
    /// The target root, whose user and group names the diff shows.
    pub root: PathBuf,
}

/// One module, as the worker runs it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModuleRequest {
    /// What runs.
    pub plan: Plan,
    /// The module's folder in the run (its roots are mounted there).
    pub dir: PathBuf,
    /// The module's scratch layers, one per filesystem, shallowest first.
    pub layers: Vec<LayerInfo>,
    /// The templates' throwaway layers, when the module has templates.
    pub template_layers: Option<Vec<LayerInfo>>,
    /// Where the rendered templates go (a host folder mirroring `/`), and where that folder
    /// appears, read-only, in the module's root.
    pub rendered: (PathBuf, PathBuf),
    /// The fetched module (host folder) and where it appears, read-only, inside.
    pub module: (PathBuf, PathBuf),
    /// The templates' modes, by item (the rendered files keep them).
    pub modes: Vec<(String, u32)>,
    /// The host file where the pieces report, one JSON line each.
    pub results: PathBuf,
    /// Live: the host file where the shims record deferred commands.
    pub defer: Option<PathBuf>,
    /// The module's diff, made by its runner before the reply (live: the merge needs it at
    /// once); `None` leaves it to a later request's `earlier` (noop).
    pub diff: Option<DiffJob>,
}

/// A module's diff, to make: its scratch layers against what lies beneath them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DiffJob {
    /// The module's folder in the run (views are mounted there).
    pub dir: PathBuf,
    /// Its scratch layers, one per filesystem, shallowest first.
    pub layers: Vec<LayerInfo>,
    /// Per filesystem, what lies beneath the scratch layer apart from the live tree (the kept
    /// modules' layers, topmost first).
    pub beneath: Vec<Vec<PathBuf>>,
    /// How long the diff may take (the module's timeout); past it, it fails its module,
    /// naming the file it was reading.
    #[serde(default)]
    pub timeout: Option<Duration>,
}

/// One request: a module to run, and the diff of one that ran before it, made meanwhile (on
/// the other core: nothing the module does can change what that diff reads).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Request {
    /// The module to run.
    pub module: Option<ModuleRequest>,
    /// The diff of a module that ran before.
    pub earlier: Option<DiffJob>,
}

/// A module's changes, as `disco diff` shows them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Diffed {
    /// The changes, in the seed's format.
    pub diff: String,
    /// How many paths are created, modified and deleted.
    pub summary: (usize, usize, usize),
    /// Every change, for the report.
    pub changes: Vec<diff::Change>,
    /// What making the diff cost.
    pub usage: Usage,
}

/// How a request went, as the worker saw it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    /// The module, if one ran.
    pub module: Option<Ran>,
    /// The earlier module's diff, if one was asked for, or why it could not be made.
    pub earlier: Option<Result<Diffed, DiffFailed>>,
}

/// Why a module's diff could not be made, as it crosses from the sandbox to the dance. The
/// error was typed where it happened (a [`SandboxError`] in the differ, a `DifferError` in the
/// worker); only its words, already worded there, cross the process boundary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum DiffFailed {
    /// The differ met an error making the diff (it names the file at fault).
    #[error("{0}")]
    Differ(String),
    /// The worker could not start the differ, or read what it made.
    #[error("{0}")]
    Worker(String),
}

/// How a module ran.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ran {
    /// Every piece that ran, in order, as it reported.
    #[serde(default)]
    pub pieces: Vec<PieceResult>,
    /// The sandbox itself failed (not a piece): why.
    pub error: Option<String>,
    /// A piece failed (its result says why): no diff was made.
    pub failed: bool,
    /// Its diff, when its runner made it.
    pub diff: Option<Diffed>,
}

/// How long a differ may take: its job's own bound (the module's timeout, which the diff
/// enforces itself, failing with the file it was reading), with a margin to say so; 600 s
/// for a job without one.
pub(super) fn differ_limit(job: &DiffJob) -> Duration {
    job.timeout
        .map_or(Duration::from_secs(600), |t| t + Duration::from_secs(30))
}

/// Reads the set-up that `disco __dance-sandbox` is given (written by
/// [`super::Worker::start`]).
pub fn read_setup(path: &Path) -> Result<Setup, SandboxError> {
    let failed = |source| SandboxError::Setup {
        path: path.to_owned(),
        source,
    };
    let bytes = std::fs::read(path).map_err(failed)?;
    serde_json::from_slice(&bytes).map_err(|e| failed(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dance::report::Step;

    /// A fresh folder of this test's own, removed when dropped.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("disco-wire-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn piece(item: &str, failure: Option<&str>) -> PieceResult {
        PieceResult {
            step: Step::new("m", "exec", Some(item.into()), Usage::default(), true),
            stdout: format!("{item} said hello\n"),
            stderr: String::new(),
            warnings: vec!["leak: a holder".into()],
            failure: failure.map(Into::into),
            output: None,
        }
    }

    #[test]
    fn records_are_one_tagged_line_each_and_read_back_once_in_order() {
        let dir = Scratch::new("order");
        let path = dir.0.join("results");
        let mut file = std::fs::File::create(&path).unwrap();
        let mut records = Records::open(&path).unwrap();
        assert!(records.update().is_empty(), "nothing written yet");

        Record::Piece(Box::new(piece("00-a", None)))
            .append(&mut file)
            .unwrap();
        Record::Piece(Box::new(piece("10-b", Some("exec 10-b failed"))))
            .append(&mut file)
            .unwrap();
        let new: Vec<_> = records
            .update()
            .iter()
            .map(|p| p.step.item.clone())
            .collect();
        assert_eq!(new, [Some("00-a".into()), Some("10-b".into())]);
        // Read once: a second look finds nothing new.
        assert!(records.update().is_empty());

        let diff = Diffed {
            diff: "info: File: /x : Created\n".into(),
            summary: (1, 0, 0),
            ..Diffed::default()
        };
        Record::Diff(Box::new(diff)).append(&mut file).unwrap();
        Record::Failed("cannot mount /x".into())
            .append(&mut file)
            .unwrap();
        assert!(records.update().is_empty(), "no piece among them");
        assert_eq!(records.pieces.len(), 2);
        assert_eq!(
            records.pieces[1].failure.as_deref(),
            Some("exec 10-b failed")
        );
        assert_eq!(records.diff.as_ref().map(|d| d.summary), Some((1, 0, 0)));
        assert_eq!(records.failure.as_deref(), Some("cannot mount /x"));

        // On the wire: one line per record, named by its kind.
        let text = std::fs::read_to_string(&path).unwrap();
        let kinds: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object().unwrap().keys().next().unwrap().clone()
            })
            .collect();
        assert_eq!(kinds, ["piece", "piece", "diff", "failed"]);
    }

    #[test]
    fn a_record_cut_short_is_a_failure_not_a_piece() {
        let dir = Scratch::new("cut");
        let path = dir.0.join("results");
        let mut line = Vec::new();
        Record::Piece(Box::new(piece("00-a", None)))
            .append(&mut line)
            .unwrap();
        // A process killed while it wrote leaves half a line.
        std::fs::write(&path, &line[..line.len() / 2]).unwrap();
        let mut records = Records::open(&path).unwrap();
        assert!(records.update().is_empty());
        assert!(
            records
                .failure
                .as_deref()
                .is_some_and(|f| f.starts_with("its results: ")),
            "{:?}",
            records.failure
        );
    }

    #[test]
    fn a_request_and_its_reply_cross_the_pipe_unchanged() {
        let request = Request {
            module: None,
            earlier: Some(DiffJob {
                dir: "/run/m1".into(),
                layers: Vec::new(),
                beneath: vec![vec!["/run/kept".into()]],
                timeout: Some(Duration::from_secs(3)),
            }),
        };
        let line = serde_json::to_string(&request).unwrap();
        assert!(!line.contains('\n'), "one line: {line}");
        let back: Request = serde_json::from_str(&line).unwrap();
        let job = back.earlier.unwrap();
        assert_eq!(job.beneath, [[PathBuf::from("/run/kept")]]);
        assert_eq!(job.timeout, Some(Duration::from_secs(3)));

        let reply = Reply {
            module: Some(Ran {
                pieces: vec![piece("00-a", None)],
                failed: false,
                error: None,
                diff: None,
            }),
            earlier: Some(Err(DiffFailed::Differ(
                "the diff: timed out reading /etc/x".into(),
            ))),
        };
        let back: Reply = serde_json::from_str(&serde_json::to_string(&reply).unwrap()).unwrap();
        let ran = back.module.unwrap();
        assert_eq!(ran.pieces[0].stdout, "00-a said hello\n");
        assert_eq!(ran.pieces[0].warnings, ["leak: a holder"]);
        assert_eq!(
            back.earlier.unwrap().unwrap_err(),
            DiffFailed::Differ("the diff: timed out reading /etc/x".into())
        );
    }
}

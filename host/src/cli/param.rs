//! `disco param` (also `disco-param`, the same binary by another name): read and edit a
//! parameter tree with the original disco-param's verbs, plus `json`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::error::{Error, Result};
use crate::params::{render_dump, KeyPath, ParamError, Tree};

/// Arguments of `disco param`.
#[derive(Debug, Args)]
pub struct ParamArgs {
    /// The parameter tree [default: STATE_DIR/parameters]. A dance sets DISCO_PARAMETERS to its
    /// merged tree, so that templates and scripts read that one.
    #[arg(long, value_name = "DIR", env = "DISCO_PARAMETERS")]
    pub tree: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub verb: ParamVerb,
}

/// The verbs of `disco param`.
#[derive(Debug, Subcommand)]
pub enum ParamVerb {
    /// Print a value; a directory prints {}.
    Get {
        /// The key, such as disco/server/uri.
        path: String,
    },
    /// Set a value: `set PATH VALUE`, `set PATH` (the value from stdin), `set PATH {}` (make a
    /// directory), or `set -` (lines PATH=VALUE or PATH={} from stdin).
    Set {
        /// The key, or - to read PATH=VALUE lines from stdin.
        path: String,
        /// The value; {} makes a directory; without it the value is read from stdin.
        #[arg(allow_hyphen_values = true)]
        value: Option<String>,
    },
    /// List the names under a directory (the root without PATH), one a line.
    Keys {
        /// The directory's key.
        path: Option<String>,
    },
    /// Delete a key; a directory that is not empty needs -r.
    Delete {
        /// The key.
        path: String,
        /// Delete a directory with everything in it.
        #[arg(short, long)]
        recursive: bool,
    },
    /// Print every key under PATH (the whole tree without it) as `path = value`, a directory
    /// as `path = {}`, sorted.
    Dump {
        /// Where to start.
        path: Option<String>,
    },
    /// Print the whole tree as one JSON document (directories are objects, values strings).
    Json,
}

/// The value `set` takes to mean "make a directory", as in the original.
const DIR_VALUE: &str = "{}";

pub(super) fn exec(args: ParamArgs, global: &super::GlobalArgs) -> Result<ExitCode> {
    let root = args
        .tree
        .unwrap_or_else(|| global.state_dir.join("parameters"));
    let tree = Tree::open(root)?;
    let mut out = String::new();
    match args.verb {
        ParamVerb::Get { path } => {
            let value = tree.get(&key(&path)?)?;
            out = format!("{value}\n");
        }
        ParamVerb::Set { path, value } if path == "-" => {
            if value.is_some() {
                return Err(Error::SetFromStdinWithValue);
            }
            // Every line is checked before the first is applied, so a bad line changes nothing.
            let edits = parse_lines(&read_stdin()?)?;
            for (key, value) in &edits {
                set(&tree, key, value)?;
            }
        }
        ParamVerb::Set { path, value } => {
            let key = key(&path)?;
            let value = match value {
                Some(value) => value,
                None => {
                    let mut text = read_stdin()?;
                    // `echo VALUE | disco param set PATH` must store VALUE, not VALUE + newline.
                    if text.ends_with('\n') {
                        text.pop();
                    }
                    text
                }
            };
            set(&tree, &key, &value)?;
        }
        ParamVerb::Keys { path } => {
            let key = match path {
                Some(path) => key(&path)?,
                None => KeyPath::root(),
            };
            for name in tree.keys(&key)? {
                out.push_str(&name);
                out.push('\n');
            }
        }
        ParamVerb::Delete { path, recursive } => {
            tree.delete(&key(&path)?, recursive)?;
        }
        ParamVerb::Dump { path } => {
            let key = path.as_deref().map(key).transpose()?;
            out = render_dump(&tree.dump(key.as_ref())?);
        }
        ParamVerb::Json => {
            let json = tree.to_json()?;
            out = serde_json::to_string_pretty(&json)?;
            out.push('\n');
        }
    }
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .map_err(Error::Write)?;
    Ok(ExitCode::SUCCESS)
}

fn key(path: &str) -> Result<KeyPath> {
    Ok(KeyPath::parse(path)?)
}

fn set(tree: &Tree, key: &KeyPath, value: &str) -> Result<()> {
    if value == DIR_VALUE {
        tree.set_dir(key)?;
    } else {
        tree.set(key, value)?;
    }
    Ok(())
}

/// `set -` input: `PATH=VALUE` lines, split at the first `=`; blank lines are skipped. The
/// dump's own `PATH = VALUE` is accepted too (a key cannot hold a space, so the space before `=`
/// marks that form), so that `dump | set -` copies a tree of one-line values.
fn parse_lines(text: &str) -> std::result::Result<Vec<(KeyPath, String)>, ParamError> {
    let mut edits = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((path, value)) = line.split_once('=') else {
            return Err(ParamError::BadLine {
                line: i + 1,
                text: line.to_owned(),
            });
        };
        let value = match (path.strip_suffix(' '), value.strip_prefix(' ')) {
            (Some(_), Some(value)) => value,
            _ => value,
        };
        edits.push((KeyPath::parse(path.trim())?, value.to_owned()));
    }
    Ok(edits)
}

fn read_stdin() -> Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|source| Error::Read {
            path: "-".into(),
            source,
        })?;
    Ok(text)
}

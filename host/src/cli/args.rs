//! `disco args`: the Module XML Argument Specification for fix modules written in bash (and,
//! through `--format json`, for the perl library): read the SurvivorFixData on stdin, check its
//! options against typed formats, and print assignments to `eval`, or the MISCONFIG result.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use protocol::argspec::{ArgErrors, ArgSpec, Paths};
use protocol::{Document, FixData, FixResult, ReturnCode};

use crate::error::{Error, Result};

/// How `disco args` prints the checked arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ArgsFormat {
    /// Shell assignments (`name='value'`, `name=( 'a' 'b' )` for lists), to `eval`.
    Shell,
    /// One JSON object: a string per argument, an array for `list` arguments.
    Json,
}

/// Arguments of `disco args`.
#[derive(Debug, Args)]
pub struct ArgsArgs {
    /// The module's arguments as `NAME=FORMAT`, e.g. `'service=string list'`
    /// `'stop=optional boolean default(1)'`.
    #[arg(value_name = "NAME=FORMAT")]
    pub decls: Vec<String>,
    /// How to print the arguments.
    #[arg(long, value_enum, default_value_t = ArgsFormat::Shell)]
    pub format: ArgsFormat,
    /// Put this in front of every shell variable name (names are otherwise the option names
    /// with `-` and `.` turned into `_`).
    #[arg(long, default_value = "")]
    pub prefix: String,
}

/// Quotes `value` for a POSIX shell: single quotes, each `'` written as `'\''`.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The shell variable for option `name`: option names may hold `-` and `.`, shell names may not.
pub fn shell_name(prefix: &str, name: &str) -> String {
    let mut out = String::from(prefix);
    out.extend(
        name.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Why a request does not fit the module's declarations: the MISCONFIG result's Comment says
/// it, in the Perl library's words.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArgsError {
    /// A declaration is not `NAME=FORMAT`.
    #[error("argument declaration '{0}' is not NAME=FORMAT")]
    Declaration(String),
    /// The declarations are not a valid specification, or the options do not fit it.
    #[error(transparent)]
    Args(#[from] ArgErrors),
    /// The request is no SurvivorFixData.
    #[error("Valid XML document not provided ({0})")]
    Request(#[source] protocol::ParseError),
}

/// Parses the `NAME=FORMAT` declarations into pairs.
fn decls(raw: &[String]) -> std::result::Result<Vec<(&str, &str)>, ArgsError> {
    raw.iter()
        .map(|d| {
            d.split_once('=')
                .ok_or_else(|| ArgsError::Declaration(d.clone()))
        })
        .collect()
}

/// A checked argument: its name, whether it is a list, its values.
pub type Checked = (String, bool, Vec<String>);

/// Checks `request` against the declarations; `Err` is the MISCONFIG comment.
pub fn check(raw: &[String], request: &[u8]) -> std::result::Result<Vec<Checked>, ArgsError> {
    let pairs = decls(raw)?;
    let spec = ArgSpec::new(pairs.iter().copied()).map_err(ArgErrors::from)?;
    // Lenient, as a runner is: a deviation that leaves the meaning clear is no misconfiguration.
    let data = FixData::parse(request).map_err(ArgsError::Request)?.doc;
    let args = spec.check(&data.options, &HostPaths)?;
    Ok(spec
        .iter()
        .map(|(name, format)| {
            let values = args.get(name).map(<[String]>::to_vec).unwrap_or_default();
            (name.to_owned(), format.list, values)
        })
        .collect())
}

/// The shell assignments for checked arguments; absent arguments are set empty so that
/// `set -u` modules can test them.
pub fn to_shell(prefix: &str, args: &[(String, bool, Vec<String>)]) -> String {
    let mut out = String::new();
    for (name, list, values) in args {
        let var = shell_name(prefix, name);
        if *list {
            let quoted: Vec<String> = values.iter().map(|v| shell_quote(v)).collect();
            out.push_str(&format!("{var}=( {} )\n", quoted.join(" ")));
        } else {
            let value = values.first().map_or("", String::as_str);
            out.push_str(&format!("{var}={}\n", shell_quote(value)));
        }
    }
    out
}

fn to_json(args: &[(String, bool, Vec<String>)]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (name, list, values) in args {
        let value = if *list {
            serde_json::json!(values)
        } else {
            match values.first() {
                Some(v) => serde_json::json!(v),
                None => serde_json::Value::Null,
            }
        };
        map.insert(name.clone(), value);
    }
    serde_json::Value::Object(map)
}

pub(super) fn exec(args: ArgsArgs) -> Result<ExitCode> {
    let mut request = Vec::new();
    std::io::stdin()
        .read_to_end(&mut request)
        .map_err(|source| Error::Read {
            path: "-".into(),
            source,
        })?;
    let mut out = std::io::stdout().lock();
    match check(&args.decls, &request) {
        Ok(checked) => {
            let text = match args.format {
                ArgsFormat::Shell => to_shell(&args.prefix, &checked),
                ArgsFormat::Json => format!("{}\n", to_json(&checked)),
            };
            out.write_all(text.as_bytes()).map_err(Error::Write)?;
            out.flush().map_err(Error::Write)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(comment) => {
            // The module's answer, ready to pass on: the Perl library's texts as the Comment.
            let xml = FixResult::new(ReturnCode::MISCONFIG, comment.to_string()).to_xml()?;
            out.write_all(&xml).map_err(Error::Write)?;
            out.flush().map_err(Error::Write)?;
            Ok(ExitCode::from(ReturnCode::MISCONFIG.exit_status()))
        }
    }
}

/// This host's filesystem, where `directory` and `file` arguments are checked.
struct HostPaths;

impl Paths for HostPaths {
    fn is_dir(&self, path: &str) -> bool {
        std::fs::metadata(path).is_ok_and(|m| m.is_dir())
    }

    fn is_file_like(&self, path: &str) -> bool {
        use std::os::unix::fs::FileTypeExt;
        // `metadata` follows a link, so a link to a file is a file; a link itself also counts.
        if std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
            return true;
        }
        std::fs::symlink_metadata(path).is_ok_and(|m| {
            let kind = m.file_type();
            kind.is_fifo() || kind.is_socket() || kind.is_symlink()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_name("", "log-file.max"), "log_file_max");
        assert_eq!(shell_name("", "2x"), "_2x");
    }

    #[test]
    fn lists_and_defaults() {
        let req = FixData {
            timeout: None,
            options: {
                let mut o = protocol::Options::new();
                o.push("service", "a b");
                o.push("service", "c'd");
                o
            },
        }
        .to_xml()
        .unwrap();
        let decls = vec![
            "service=string list".to_owned(),
            "stop=optional boolean default(yes)".to_owned(),
        ];
        let checked = check(&decls, &req).unwrap();
        assert_eq!(
            to_shell("", &checked),
            "service=( 'a b' 'c'\\''d' )\nstop='1'\n"
        );
    }

    #[test]
    fn errors_are_the_perl_texts() {
        let req = FixData::default().to_xml().unwrap();
        let err = check(&["service=string".to_owned()], &req).unwrap_err();
        assert_eq!(err.to_string(), "Required argument 'service' not provided");
    }
}

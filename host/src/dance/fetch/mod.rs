//! Sources: where a dance gets its parameters and modules from, and the fetch that brings them
//! into the state directory's cache.
//!
//! A [`Source`] is either a local directory laid out like the server's home (`parameters/` and
//! `modules/NAME/`), used in place, or an rsync base (`user@host::` daemon syntax, or
//! `rsync://host[:port]/`), mirrored into `STATE/cache/` by the command in the parameter
//! `disco/client/cmds/rsync`. With `--rsh ssh...` in that command, `user@host::` becomes "rsync
//! daemon over a remote shell": the server runs a one-shot `rsync --server --daemon` per
//! connection that reads `~/rsyncd.conf`, so only sshd listens (see `contrib/README.md`).
//!
//! Rules that keep a fetch safe:
//! - the rsync argv comes only from the parameter (split by shell-words rules) plus the source
//!   and destination disco appends; nothing is ever handed to a local shell;
//! - module names are checked ([`valid_module_name`]) before they reach a URI or a path, and a
//!   source can never look like an option (nothing starts with `-`);
//! - every destination is `cache/parameters/` or `cache/modules/NAME/`, and `--delete` is always
//!   on (appended when the command lacks it), so a file removed on the server disappears from the
//!   cache, and nothing outside `cache/` is ever deleted.
//!
//! Two server layouts. A bare base (`host::`, `rsync://host/`) is the seed's: `parameters` and
//! every module are rsync modules of their own, one rsync session each (an rsync session reaches
//! one rsync module). A base that names an rsync module (`host::site`, `rsync://host/site/`) is
//! laid out like a local source (`parameters/`, `modules/NAME/`), and a fetcher told its node
//! ([`Fetcher::for_node`]) fetches only `parameters/disco`, `parameters/NODE` and modules, in
//! ONE session per dance: the parameters together with every module the cache holds from the
//! last dance (`--relative`, `--delete-missing-args`), then, only when the node's list changed,
//! the modules still missing in one more session. Unchanged files transfer nothing: the cache
//! is the basis.
//!
//! Every rsync is measured: it is reaped with wait4(2), whose rusage covers rsync and the
//! children it waited for (its ssh, its receiver fork).

mod cache;
mod fetcher;
mod rsync;
mod site;
mod source;

use cache::{cached_dirs, remove_entry};
pub use fetcher::Fetcher;
pub use rsync::{rsync_message, DEFAULT_RSYNC};
pub use source::{valid_module_name, Source};

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Resource usage of one rsync (and the children it waited for), as the dance reports it.
pub use super::report::Usage;

/// A fetched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Where it is now: in the cache, or in the local source itself.
    pub path: PathBuf,
    /// The rsync's resource usage; `None` for a local source (nothing ran).
    pub rusage: Option<Usage>,
    /// Wall time of the fetch.
    pub elapsed: Duration,
}

/// Why a source could not be parsed or a fetch failed. Fetch errors name what was fetched
/// (`parameters` or the module) and the source.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The source text is neither a local directory nor an rsync source.
    #[error("source {text:?}: {why}")]
    BadSource {
        /// The text given.
        text: String,
        /// What is wrong with it.
        why: String,
    },
    /// The rsync command parameter cannot be used.
    #[error("disco/client/cmds/rsync {command:?}: {why}")]
    BadCommand {
        /// The parameter's value.
        command: String,
        /// What is wrong with it.
        why: String,
    },
    /// A module name that cannot be put in a URI or a path.
    #[error(
        "fetch {module:?}: not a module name (letters, digits, '_', '-', '.', no leading '.')"
    )]
    BadModuleName {
        /// The name.
        module: String,
    },
    /// The same module was asked for twice in one [`Fetcher::fetch_modules`] call.
    #[error("fetch {module}: asked for twice")]
    Duplicate {
        /// The module.
        module: String,
    },
    /// A local source lacks the directory.
    #[error("fetch {what} from {from}: no such directory {}", path.display())]
    Missing {
        /// `parameters` or the module.
        what: String,
        /// The source.
        from: String,
        /// The missing directory.
        path: PathBuf,
    },
    /// A directory in the cache is a symlink, which `--delete` could follow out of the cache.
    #[error("fetch {what} from {from}: {} is a symlink: not mirroring into it", path.display())]
    Symlink {
        /// `parameters` or the module.
        what: String,
        /// The source.
        from: String,
        /// The symlink.
        path: PathBuf,
    },
    /// A cache directory or rsync's stderr file could not be set up, or rsync not run or reaped.
    #[error("fetch {what} from {from}: {action} {}: {source}", path.display())]
    Io {
        /// `parameters` or the module.
        what: String,
        /// The source.
        from: String,
        /// What failed (`create`, `run`, `wait for`...).
        action: &'static str,
        /// The path or program it failed on.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The node's name cannot be one path component of the server's tree.
    #[error("node {node:?}: not a node name (letters, digits, '_', '-', '.', no leading '.')")]
    BadNodeName {
        /// The name.
        node: String,
    },
    /// The server has no such folder, or does not show it to this node.
    #[error("fetch {what} from {from}: not on the server (or not for this node)")]
    NotOnServer {
        /// `parameters/NODE` or the module.
        what: String,
        /// The source.
        from: String,
    },
    /// rsync ran and failed; `message` is its own stderr, trimmed.
    #[error("fetch {what} from {from}: {message}")]
    Rsync {
        /// `parameters` or the module.
        what: String,
        /// The source.
        from: String,
        /// rsync's message.
        message: String,
        /// Its exit status (128 + N when signal N killed it).
        status: i32,
        /// Its resource usage, for the report (boxed: it would double the size of every
        /// `Result` that carries this error).
        rusage: Box<Usage>,
        /// Wall time until it failed.
        elapsed: Duration,
    },
}

impl FetchError {
    /// The measured resource usage and wall time of an rsync that ran and failed, for the
    /// report's `fetch` step; `None` when nothing ran.
    pub fn usage(&self) -> Option<(Usage, Duration)> {
        match self {
            FetchError::Rsync {
                rusage, elapsed, ..
            } => Some((**rusage, *elapsed)),
            _ => None,
        }
    }
}

/// One module's name and the outcome of its fetch.
type ModuleFetch = (String, Result<Fetched, FetchError>);

impl FetchError {
    /// The same failure of a shared session, told for one module of it.
    fn for_module(&self, module: &str, source: &str) -> FetchError {
        match self {
            FetchError::Rsync {
                from,
                message,
                status,
                rusage,
                elapsed,
                ..
            } => FetchError::Rsync {
                what: module.to_owned(),
                from: from.clone(),
                message: message.clone(),
                status: *status,
                rusage: rusage.clone(),
                elapsed: *elapsed,
            },
            other => FetchError::Rsync {
                what: module.to_owned(),
                from: source.to_owned(),
                message: other.to_string(),
                status: 0,
                rusage: Box::default(),
                elapsed: Duration::ZERO,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Ended;

    fn rsync(text: &str) -> String {
        match text.parse::<Source>().unwrap() {
            Source::Rsync(base) => base,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn rsync_forms_become_bases() {
        assert_eq!(rsync("disco@server"), "disco@server::");
        assert_eq!(
            rsync("disco@server.example.com::"),
            "disco@server.example.com::"
        );
        assert_eq!(rsync("server::"), "server::");
        assert_eq!(rsync("server::site"), "server::site/");
        assert_eq!(rsync("rsync://127.0.0.1:8873/"), "rsync://127.0.0.1:8873/");
        assert_eq!(rsync("rsync://127.0.0.1:8873"), "rsync://127.0.0.1:8873/");
        assert_eq!(rsync("rsync://host/site"), "rsync://host/site/");
        assert_eq!(rsync("rsync://u@host:1/a/b/"), "rsync://u@host:1/a/b/");
        assert_eq!(rsync("rsync://[::1]:873/"), "rsync://[::1]:873/");
        assert_eq!(rsync("rsync://[::1]"), "rsync://[::1]/");
        assert_eq!(
            Source::rsync_arg(&rsync("disco@server"), "testmodule-1.0"),
            "disco@server::testmodule-1.0/"
        );
    }

    #[test]
    fn a_base_naming_an_rsync_module_is_a_site() {
        for site in [
            "h::site",
            "u@h::site/sub",
            "rsync://h/site",
            "rsync://u@h:873/s/",
        ] {
            assert!(site.parse::<Source>().unwrap().is_site(), "{site}");
        }
        for bare in ["h::", "u@h", "rsync://h/", "rsync://h:873", "."] {
            assert!(!bare.parse::<Source>().unwrap().is_site(), "{bare}");
        }
    }

    #[test]
    fn directories_are_local_and_absolute() {
        let here = std::env::current_dir().unwrap();
        assert_eq!(
            ".".parse::<Source>().unwrap(),
            Source::Local(here.join("."))
        );
        let tmp = std::env::temp_dir();
        assert_eq!(
            tmp.to_str().unwrap().parse::<Source>().unwrap(),
            Source::Local(tmp)
        );
    }

    #[test]
    fn bad_sources_are_named() {
        for text in [
            "server",
            "",
            "/no/such/dir/disco",
            "./no-such-dir",
            "-oProxyCommand=x@host",
            "user@-oProxyCommand=x",
            "::",
            "rsync://",
            "rsync://host:port/",
            "a b@host",
            "x@host\n",
        ] {
            let err = text.parse::<Source>().unwrap_err();
            assert!(
                matches!(err, FetchError::BadSource { .. }),
                "{text:?}: {err}"
            );
            assert!(err.to_string().contains(&format!("{text:?}")), "{err}");
        }
    }

    #[test]
    fn module_names() {
        for ok in ["testmodule-1.0", "a", "A_b.c-9"] {
            assert!(valid_module_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "é", "a::b"] {
            assert!(!valid_module_name(bad), "{bad}");
        }
    }

    #[test]
    fn command_gets_delete_once() {
        let f = |cmd| {
            Fetcher::new(Source::Rsync("h::".into()), cmd, "/c".into(), 1)
                .unwrap()
                .rsync_cmd
        };
        assert_eq!(f(None), ["rsync", "-aHAX", "--delete"]);
        assert_eq!(
            f(Some(
                r#"rsync -qaWHe "ssh -i /home/disco/.ssh/id_rsa_disco""#
            )),
            [
                "rsync",
                "-qaWHe",
                "ssh -i /home/disco/.ssh/id_rsa_disco",
                "--delete"
            ]
        );
        assert_eq!(
            f(Some("rsync -a --delete-after")),
            ["rsync", "-a", "--delete-after"]
        );
        for bad in ["", "  ", "rsync 'unclosed"] {
            let err =
                Fetcher::new(Source::Rsync("h::".into()), Some(bad), "/c".into(), 1).unwrap_err();
            assert!(
                matches!(err, FetchError::BadCommand { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn messages_keep_rsyncs_own_words() {
        let text = "rsync: [sender] link_stat \"/x\" (in m) failed: No such file or directory (2)\n\
                    rsync error: some files/attrs were not transferred (see previous errors) (code 23)\n";
        assert_eq!(
            rsync_message(text, Ended::Exited(23)),
            "rsync: [sender] link_stat \"/x\" (in m) failed: No such file or directory (2)"
        );
        assert_eq!(
            rsync_message("rsync error: x (code 5)\n", Ended::Exited(5)),
            "rsync error: x (code 5)"
        );
        assert_eq!(
            rsync_message("", Ended::Exited(12)),
            "rsync exited with status 12 and said nothing"
        );
        // Through rsync-ssl: openssl's chatter goes, its error stays.
        let tls = "verify depth is 4\n\
                   4057E0:error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed\n\
                   rsync: did not see server greeting\n\
                   rsync error: error starting client-server protocol (code 5)\n";
        assert_eq!(
            rsync_message(tls, Ended::Exited(5)),
            "4057E0:error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed; \
             rsync: did not see server greeting"
        );
    }

    #[test]
    fn bad_and_repeated_module_names_fail_alone() {
        let fetcher =
            Fetcher::new(Source::Local("/nonexistent".into()), None, "/c".into(), 2).unwrap();
        let names: Vec<String> = ["../etc", "a", "a"].map(String::from).to_vec();
        let results = fetcher.fetch_modules(&names);
        assert!(matches!(results[0], Err(FetchError::BadModuleName { .. })));
        assert!(matches!(results[1], Err(FetchError::Missing { .. })));
        assert!(matches!(results[2], Err(FetchError::Duplicate { .. })));
    }
}

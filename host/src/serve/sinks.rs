//! Where fix results (and dance reports) go besides the history: a Prometheus textfile for
//! node_exporter's textfile collector, and native plugins.
//!
//! A plugin is a `cdylib` exporting a small C ABI, version [`ABI_VERSION`]:
//!
//! ```c
//! uint32_t disco_sink_abi_version(void);                            /* returns 1 */
//! int32_t  disco_sink_on_fix_result(const char *json, size_t len);  /* 0: ok */
//! int32_t  disco_sink_on_dance_report(const char *json, size_t len);/* 0: ok */
//! ```
//!
//! `json` is UTF-8, not NUL-terminated, valid only during the call. The host serialises calls
//! (one at a time per plugin), so a plugin needs no locking of its own. A plugin that cannot be
//! loaded (missing file or symbol, another ABI version) is reported and left out; a call that
//! returns non-zero is reported and counted. Neither ever stops or changes a fix.

use std::ffi::c_char;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::metrics::{Gauges, Metrics};
use crate::output;

/// The plugin ABI version this host speaks.
pub const ABI_VERSION: u32 = 1;

/// The textfile's name in `--textfile DIR` (node_exporter reads `*.prom`).
pub const TEXTFILE: &str = "disco_serve.prom";

/// Why a sink failed; one line, naming the sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The textfile could not be written.
    #[error("cannot write {path}: {source}")]
    Textfile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A plugin could not be loaded (not a library, or one the loader refuses).
    #[error("sink plugin {path}: {source}")]
    Load {
        /// The plugin.
        path: PathBuf,
        /// Why.
        #[source]
        source: libloading::Error,
    },
    /// A plugin lacks a symbol of the ABI.
    #[error("sink plugin {path}: missing symbol {name} ({source})")]
    Symbol {
        /// The plugin.
        path: PathBuf,
        /// The symbol.
        name: &'static str,
        /// Why the loader did not find it.
        #[source]
        source: libloading::Error,
    },
    /// A plugin speaks another version of the ABI.
    #[error("sink plugin {path}: ABI version {version}, this disco speaks version {ABI_VERSION}")]
    Abi {
        /// The plugin.
        path: PathBuf,
        /// The version it speaks.
        version: u32,
    },
    /// A plugin's call returned an error code.
    #[error("sink plugin {path}: {call} returned {code}")]
    Call {
        /// The plugin.
        path: PathBuf,
        /// The function.
        call: &'static str,
        /// What it returned.
        code: i32,
    },
}

/// A place results go to.
pub trait Sink: Send + Sync {
    /// Its name, for messages and the error counter.
    fn name(&self) -> String;
    /// Takes one fix result (the history's outcome record, as JSON).
    fn on_fix_result(&self, json: &str) -> Result<(), SinkError>;
    /// Takes one dance report (JSON); most sinks ignore them.
    fn on_dance_report(&self, _json: &str) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Writes the server's metrics to `DIR/disco_serve.prom` after every fix, atomically (a temp
/// file renamed over it), so node_exporter never reads half a file.
pub struct Textfile {
    dir: PathBuf,
    metrics: Arc<Metrics>,
    gauges: Box<dyn Fn() -> Gauges + Send + Sync>,
    // One writer at a time: two renames racing could leave the older numbers in place.
    write: Mutex<()>,
}

impl Textfile {
    /// A textfile sink writing into `dir`.
    pub fn new(
        dir: &Path,
        metrics: Arc<Metrics>,
        gauges: Box<dyn Fn() -> Gauges + Send + Sync>,
    ) -> Textfile {
        Textfile {
            dir: dir.to_owned(),
            metrics,
            gauges,
            write: Mutex::new(()),
        }
    }

    /// Writes the file now.
    pub fn write(&self) -> Result<(), SinkError> {
        let _one = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let text = self.metrics.render((self.gauges)());
        let tmp = self.dir.join(format!(".{TEXTFILE}.{}", std::process::id()));
        let path = self.dir.join(TEXTFILE);
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|source| SinkError::Textfile { path, source })
    }
}

impl Sink for Textfile {
    fn name(&self) -> String {
        format!("textfile {}", self.dir.display())
    }

    fn on_fix_result(&self, _json: &str) -> Result<(), SinkError> {
        self.write()
    }
}

type Call = unsafe extern "C" fn(*const c_char, usize) -> i32;

/// A native sink plugin, loaded with libloading.
pub struct Plugin {
    path: PathBuf,
    on_fix: Call,
    on_dance: Call,
    // Serialises calls, and keeps the library loaded as long as the function pointers live.
    lib: Mutex<libloading::Library>,
}

impl Plugin {
    /// Loads the plugin at `path` and checks its ABI version and symbols.
    pub fn load(path: &Path) -> Result<Plugin, SinkError> {
        let missing = |name: &'static str| {
            move |source| SinkError::Symbol {
                path: path.to_owned(),
                name,
                source,
            }
        };
        // SAFETY: loading runs the library's initialisers; the operator named this file as a
        // plugin (like a dlopen'ed module of any daemon), and nothing else is loaded.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|source| SinkError::Load {
            path: path.to_owned(),
            source,
        })?;
        // SAFETY: the symbol's type is the ABI's; a library exporting these names with other
        // types breaks the documented contract.
        let version =
            unsafe { lib.get::<unsafe extern "C" fn() -> u32>(b"disco_sink_abi_version") }
                .map_err(missing("disco_sink_abi_version"))?;
        // SAFETY: as above; the call takes no arguments.
        let v = unsafe { version() };
        if v != ABI_VERSION {
            return Err(SinkError::Abi {
                path: path.to_owned(),
                version: v,
            });
        }
        let get = |name: &'static str| {
            // SAFETY: as above.
            unsafe { lib.get::<Call>(name.as_bytes()) }
                .map(|s| *s)
                .map_err(missing(name))
        };
        let on_fix = get("disco_sink_on_fix_result")?;
        let on_dance = get("disco_sink_on_dance_report")?;
        Ok(Plugin {
            path: path.to_owned(),
            on_fix,
            on_dance,
            lib: Mutex::new(lib),
        })
    }

    fn call(&self, f: Call, call: &'static str, json: &str) -> Result<(), SinkError> {
        let _lib = self.lib.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: `f` came from the library `_lib` keeps loaded; the pointer and length describe
        // `json`, which outlives the call; calls are serialised by the lock.
        let rc = unsafe { f(json.as_ptr().cast(), json.len()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(SinkError::Call {
                path: self.path.clone(),
                call,
                code: rc,
            })
        }
    }
}

impl Sink for Plugin {
    fn name(&self) -> String {
        format!("plugin {}", self.path.display())
    }

    fn on_fix_result(&self, json: &str) -> Result<(), SinkError> {
        self.call(self.on_fix, "on_fix_result", json)
    }

    fn on_dance_report(&self, json: &str) -> Result<(), SinkError> {
        self.call(self.on_dance, "on_dance_report", json)
    }
}

/// Every sink beyond the history; failures are reported and counted, never passed on.
#[derive(Default)]
pub struct Sinks {
    sinks: Vec<Box<dyn Sink>>,
    metrics: Option<Arc<Metrics>>,
}

impl Sinks {
    /// No sinks; failures counted in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Sinks {
        Sinks {
            sinks: Vec::new(),
            metrics: Some(metrics),
        }
    }

    /// Adds a sink.
    pub fn push(&mut self, sink: Box<dyn Sink>) {
        self.sinks.push(sink);
    }

    /// How many sinks there are.
    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    fn each(&self, f: impl Fn(&dyn Sink) -> Result<(), SinkError>) {
        for s in &self.sinks {
            if let Err(why) = f(s.as_ref()) {
                output::warning(&why.to_string());
                if let Some(m) = &self.metrics {
                    m.sink_error(&s.name());
                }
            }
        }
    }

    /// Hands a fix result to every sink.
    pub fn fix_result(&self, json: &str) {
        self.each(|s| s.on_fix_result(json));
    }

    /// Hands a dance report to every sink.
    pub fn dance_report(&self, json: &str) {
        self.each(|s| s.on_dance_report(json));
    }
}

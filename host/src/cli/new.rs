//! `disco new`: scaffold a fix module (script, `Makefile.in`, doc page) or, with `--ball`, a
//! disco ball (`requires`, `parameters/NAME/`, `files/`, `scripts/`, `templates/`). What it
//! writes passes `disco validate` as it is.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::error::{Error, Result};

/// Arguments of `disco new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The module's name (letters, digits, '_', '-', '.').
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Make a disco ball (a module of the dance) instead of a fix module.
    #[arg(long)]
    pub ball: bool,
    /// The folder to create it in (for a fix module, usually `mod/fix`).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
}

/// The bash fix module every scaffold starts from; `@NAME@` is the module's name.
const SCRIPT: &str = r#"#!/bin/bash
# @NAME@: WHAT THIS FIX DOES, in one line.
# survivor-lock: service@host
#
# Options (Module XML Argument Specification):
#   service  string    the service to fix
#   dryrun   optional boolean default(0)   say what would be done, do nothing
# Read anything that names commands or files from a configuration file in DISCO_CONF_DIR, never
# from an option (rule 6). See doc/fm-@NAME@.html.
set -euo pipefail

# disco: $DISCO, else the one installed beside the modules (PREFIX/mod/fix -> PREFIX/bin),
# else the first on PATH.
disco=${DISCO:-}
if [ -z "$disco" ]; then
    here=$(dirname "$(readlink -f "$0")")
    for candidate in "$here/../../bin/disco" "$(command -v disco || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then disco=$candidate; break; fi
    done
fi
if [ -z "$disco" ]; then
    printf '<?xml version="1.0" encoding="iso-8859-1"?>\n<SurvivorFixResult Version="1.0">\n<ReturnCode>4</ReturnCode>\n<Comment>disco not found (set DISCO, or put disco on PATH)</Comment>\n</SurvivorFixResult>\n'
    exit 4
fi

# The request on stdin, checked; on a bad request disco args wrote the MISCONFIG result.
if ! vars=$("$disco" args 'service=string' 'dryrun=optional boolean default(0)'); then
    printf '%s\n' "$vars"
    exit 4
fi
eval "$vars"
: "${DISCO_CONF_DIR:=/etc/disco}"

# Send the output of whatever you run to a file or /dev/null, never leave it on a pipe a
# background process could keep (rule 7); never setsid (rule 2).
if [ "$dryrun" = 1 ]; then
    exec "$disco" result 0 "would fix $service"
fi
exec "$disco" result 0 "fixed $service"
"#;

/// The module's `Makefile.in` (rule 4.2); `@NAME@` is the module's name, `@@` stands for `@`.
const MAKEFILE: &str = r#"# Makefile for the @NAME@ fix module (Survivor fix module specification, rule 4.2): installs the
# script as ${DESTDIR}@@prefix@@/mod/fix/@NAME@, owned by @@INST_USER@@:@@INST_GROUP@@, mode 555.

SHELL = /bin/sh
prefix = @@prefix@@
sysconfdir = @@sysconfdir@@
srcdir = @@srcdir@@
INST_USER = @@INST_USER@@
INST_GROUP = @@INST_GROUP@@
MODULE = @NAME@
MODDIR = $(DESTDIR)$(prefix)/mod/fix

.PHONY: all clean veryclean install install-remote

all:

clean:

veryclean: clean
	rm -f Makefile

install: all
	mkdir -p "$(MODDIR)"
	sed -e 's|DISCO_CONF_DIR:=/etc/disco}|DISCO_CONF_DIR:=$(sysconfdir)/disco}|' \
		"$(srcdir)/$(MODULE)" > "$(MODDIR)/$(MODULE).new"
	chmod 555 "$(MODDIR)/$(MODULE).new"
	mv -f "$(MODDIR)/$(MODULE).new" "$(MODDIR)/$(MODULE)"
	@if chown "$(INST_USER):$(INST_GROUP)" "$(MODDIR)/$(MODULE)" 2>/dev/null; then :; else \
		echo "note: cannot chown $(MODDIR)/$(MODULE) to $(INST_USER):$(INST_GROUP) (not root?); left to the packager"; \
	fi

install-remote: install
"#;

/// The doc page (protocol.md §9's shape).
const DOC: &str = r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>disco fix module: @NAME@</title></head>
<body>
<h1>Fix module: @NAME@</h1>
<p>WHAT THIS FIX DOES.</p>
<h2>Basics</h2>
<table border="1">
<tr><th>Type</th><td>Fix module (bash)</td></tr>
<tr><th>Scheduler</th><td>Yes</td></tr>
<tr><th>Remote</th><td>Yes</td></tr>
<tr><th>Locking</th><td><code>service@host</code></td></tr>
</table>
<h2>Syntax</h2>
<pre>disco fix PREFIX/mod/fix/@NAME@ -o service=NAME [-o dryrun=BOOLEAN]</pre>
<h2>Dependencies</h2>
<ul><li>bash</li><li>disco</li></ul>
<h2>Arguments</h2>
<table border="1">
<tr><th>Name</th><th>Type</th><th>Meaning</th></tr>
<tr><td><code>service</code></td><td><code>string</code></td><td>The service to fix.</td></tr>
<tr><td><code>dryrun</code></td><td><code>optional boolean default(0)</code></td><td>Say what would be done; do nothing.</td></tr>
</table>
<h2>Return codes</h2>
<table border="1">
<tr><th>Code</th><th>When</th></tr>
<tr><td>0 MODEXEC_OK</td><td>fixed</td></tr>
<tr><td>1 MODEXEC_PROBLEM</td><td>the fix failed</td></tr>
<tr><td>4 MODEXEC_MISCONFIG</td><td>a bad request or configuration</td></tr>
</table>
<h2>Description</h2>
<p>HOW IT WORKS.</p>
<h2>Examples</h2>
<pre>disco fix PREFIX/mod/fix/@NAME@ -o service=sshd</pre>
</body>
</html>
"#;

fn fill(template: &str, name: &str) -> String {
    template.replace("@NAME@", name).replace("@@", "@")
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    let fail = |source| Error::WriteFile {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    std::fs::write(path, text).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(fail)?;
    crate::output::info(&format!("created {}", path.display()));
    Ok(())
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|source| Error::Create {
        path: path.to_owned(),
        source,
    })
}

/// Where the doc page goes, as the shipped modules have it (`mod/fix/NAME` beside a top-level
/// `doc/`): the `doc/` of the source tree the module is in (a `doc/` folder up to three levels
/// above `dir`); else the top of the tree `dir` is the `mod/fix` of; else `dir/doc`. Never
/// inside the module's own folder.
fn doc_dir(dir: &Path) -> PathBuf {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    if let Some(found) = abs
        .ancestors()
        .take(4)
        .map(|a| a.join("doc"))
        .find(|d| d.is_dir())
    {
        return found;
    }
    if abs.ends_with("mod/fix") {
        if let Some(top) = abs.parent().and_then(Path::parent) {
            return top.join("doc");
        }
    }
    abs.join("doc")
}

pub(super) fn exec(args: NewArgs) -> Result<ExitCode> {
    let name = &args.name;
    if name.starts_with('.') || !protocol::options::is_valid_option_name(name) {
        return Err(Error::BadModuleName(name.clone()));
    }
    let module = args.dir.join(name);
    if module.exists() {
        return Err(Error::Exists(module));
    }
    if args.ball {
        write(
            &module.join("requires"),
            "# One module a line that must run before this one ('after NAME', or 'before NAME').\n",
            0o644,
        )?;
        mkdir(&module.join("parameters").join(name))?;
        mkdir(&module.join("files"))?;
        mkdir(&module.join("templates"))?;
        write(
            &module.join("scripts/00-example.sh"),
            "#!/bin/bash\n# Runs in the dance's sandbox, in lexical order with the other scripts.\nset -euo pipefail\necho \"hello from $(hostname)\"\n",
            0o755,
        )?;
    } else {
        let doc = doc_dir(&args.dir).join(format!("fm-{name}.html"));
        if doc.exists() {
            return Err(Error::Exists(doc));
        }
        write(&module.join(name), &fill(SCRIPT, name), 0o755)?;
        write(&module.join("Makefile.in"), &fill(MAKEFILE, name), 0o644)?;
        write(&doc, &fill(DOC, name), 0o644)?;
        crate::output::info(&format!(
            "add mod/fix/{name}/Makefile to AC_CONFIG_FILES and {name} to FIX_MODULES in configure.ac"
        ));
    }
    Ok(ExitCode::SUCCESS)
}

//! Shims: commands that act on the running system, replaced in a noop sandbox by a script that
//! says what would have run, and succeeds.
//!
//! The namespaces already keep a script from signalling or rebooting anything outside; the shims
//! are what turns `service postgresql stop` into a line the user can read. Read-only queries
//! (`systemctl status`...) pass through to the real command, and so do the service manager's
//! commands that only change files (`systemctl enable`...), run offline: their files land in
//! the scratch layer, so they appear in the diff and, live, merge with the module's layer.
//!
//! | command | what the shim does |
//! | --- | --- |
//! | `systemctl` `status`, `is-active`, `show`, `cat`, `list-*`... | runs it (reads only) |
//! | `systemctl` `enable`, `disable`, `reenable`, `mask`, `unmask`, `preset`, `preset-all`, `set-default`, `add-wants`, `add-requires`, `link`, `revert` | runs it offline (`SYSTEMD_OFFLINE=1`: no word with a running manager) |
//! | the same with `--now` | runs it offline without `--now`, then traps the whole command (noop: reported; live: deferred, where it starts or stops the unit) |
//! | `systemctl` `start`, `stop`, `restart`, `reload`, `try-restart`, `kill`, `isolate`, `daemon-reload`..., `service NAME ACTION`, `invoke-rc.d`, `reboot`... | trapped |
//!
//! `update-rc.d` is not shimmed: it only makes links, and the `systemctl` it calls is this shim.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Which commands are shimmed, and which of their sub-commands are read-only queries.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShimConfig {
    /// Command names to shim.
    pub commands: Vec<String>,
}

/// The commands shimmed by default.
pub const DEFAULT_SHIMS: &[&str] = &[
    "service",
    "systemctl",
    "initctl",
    "invoke-rc.d",
    "telinit",
    "reboot",
    "shutdown",
    "halt",
    "poweroff",
    "kill",
    "killall",
    "pkill",
];

impl Default for ShimConfig {
    fn default() -> Self {
        ShimConfig {
            commands: DEFAULT_SHIMS.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// The sub-commands of `command` that only read, as a shell `case` pattern, and which argument
/// (after options) names the sub-command.
fn read_only(command: &str) -> Option<(&'static str, usize)> {
    match command {
        "systemctl" => Some((
            "status|is-active|is-enabled|is-failed|is-system-running|show|cat|list-units|\
             list-unit-files|list-timers|list-sockets|list-dependencies|list-jobs|help|\
             show-environment|get-default",
            1,
        )),
        // `service NAME status` and `service --status-all`.
        "service" => Some(("status|--status-all", 2)),
        "initctl" => Some(("status|list|show-config|version", 1)),
        _ => None,
    }
}

/// The sub-commands of `command` that only change files, run offline inside the sandbox, as a
/// shell `case` pattern, with the environment that keeps them offline.
fn files_only(command: &str) -> Option<(&'static str, &'static str)> {
    match command {
        "systemctl" => Some((
            "enable|disable|reenable|mask|unmask|preset|preset-all|set-default|add-wants|\
             add-requires|link|revert",
            "SYSTEMD_OFFLINE=1",
        )),
        _ => None,
    }
}

/// How a noop shim says what it trapped (on stderr), before the command line.
pub const WOULD_EXECUTE: &str = "warning: Would execute : ";
/// How a live shim says what it deferred (on stderr), before the command line.
pub const DEFERRED: &str = "info: Deferred : ";

/// The commands the shims trapped, from what a piece printed on stderr.
pub fn trapped(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| {
            l.strip_prefix(WOULD_EXECUTE)
                .or_else(|| l.strip_prefix(DEFERRED))
        })
        .map(str::to_owned)
        .collect()
}

/// What a shim does with a command that acts on the running system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShimMode {
    /// Noop: say what would have run, and succeed.
    Report,
    /// Live: record it (through `disco __defer`) to run after the module's layer is merged.
    Defer,
}

/// The shell script for one shim. `DISCO_REAL_PATH` (the `PATH` without the shims) finds the
/// real command for read-only queries.
pub fn script(command: &str) -> String {
    script_for(command, ShimMode::Report)
}

/// The shell script for one shim in `mode`.
pub fn script_for(command: &str, mode: ShimMode) -> String {
    let mut s = String::from("#!/bin/sh\n# disco noop shim: report what would run, and succeed.\n");
    if let Some((pattern, position)) = read_only(command) {
        // The sub-command is the Nth argument that is not an option.
        s.push_str(&format!(
            "n=0; sub=\nfor a in \"$@\"; do\n  case \"$a\" in --status-all) sub=$a; break;; -*) continue;; esac\n  n=$((n+1)); if [ $n -eq {position} ]; then sub=$a; break; fi\ndone\n\
             case \"$sub\" in {pattern})\n  real=$(PATH=\"$DISCO_REAL_PATH\" command -v {command}) && exec \"$real\" \"$@\"\n  echo \"{command}: not found\" >&2; exit 127;;\nesac\n"
        ));
    }
    if let Some((pattern, offline)) = files_only(command) {
        // Files only: run offline. With `--now`, the files now (the command without `--now`),
        // and the running state trapped below like any other acting command.
        s.push_str(&format!(
            "offline() {{\n  n=$#; while [ $n -gt 0 ]; do a=$1; shift; [ \"$a\" = --now ] || set -- \"$@\" \"$a\"; n=$((n-1)); done\n  {offline} \"$real\" \"$@\"\n}}\n\
             case \"$sub\" in {pattern})\n  real=$(PATH=\"$DISCO_REAL_PATH\" command -v {command}) || {{ echo \"{command}: not found\" >&2; exit 127; }}\n\
             case \" $* \" in *\" --now \"*) offline \"$@\" || exit $?;; *) {offline} exec \"$real\" \"$@\";; esac;;\nesac\n"
        ));
    }
    match mode {
        ShimMode::Report => s.push_str(&format!(
            "printf '{WOULD_EXECUTE}%s\\n' \"{command}${{*:+ $*}}\" >&2\nexit 0\n"
        )),
        ShimMode::Defer => s.push_str(&format!(
            "exec {}/disco __defer {command} \"$@\"\n",
            super::enter::BIN_DIR
        )),
    }
    s
}

/// Writes one executable shim a command into `dir`.
pub fn install(config: &ShimConfig, dir: &Path, mode: ShimMode) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for command in &config.commands {
        // A name with a slash would write outside the shim directory.
        if command.is_empty() || command.contains('/') {
            continue;
        }
        let path = dir.join(command);
        let mut f = std::fs::File::create(&path)?;
        f.write_all(script_for(command, mode).as_bytes())?;
        f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn run(command: &str, args: &[&str]) -> (i32, String) {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script(command))
            .arg(command)
            .args(args)
            .env("DISCO_REAL_PATH", "/nonexistent")
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn acting_commands_are_reported_and_succeed() {
        assert_eq!(
            run("service", &["postgresql", "stop"]),
            (
                0,
                "warning: Would execute : service postgresql stop\n".into()
            )
        );
        assert_eq!(
            run("systemctl", &["try-restart", "foo"]),
            (
                0,
                "warning: Would execute : systemctl try-restart foo\n".into()
            )
        );
        assert_eq!(
            run("reboot", &[]),
            (0, "warning: Would execute : reboot\n".into())
        );
    }

    #[test]
    fn read_only_queries_pass_through() {
        // The real command is not on DISCO_REAL_PATH here, so passing through means 127.
        assert_eq!(run("systemctl", &["--no-pager", "status", "foo"]).0, 127);
        assert_eq!(run("service", &["foo", "status"]).0, 127);
        assert_eq!(run("service", &["--status-all"]).0, 127);
        assert_eq!(run("systemctl", &["restart", "status"]).0, 0);
    }

    /// Runs a shim with a stand-in for the real command on `DISCO_REAL_PATH`, which says how
    /// it was called.
    fn run_with_real(command: &str, args: &[&str]) -> (i32, String) {
        let dir = std::env::temp_dir().join(format!("disco-shim-real-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let real = dir.join(command);
        std::fs::write(
            &real,
            "#!/bin/sh\necho \"real: SYSTEMD_OFFLINE=$SYSTEMD_OFFLINE $*\" >&2\n",
        )
        .unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = Command::new("sh")
            .arg("-c")
            .arg(script(command))
            .arg(command)
            .args(args)
            .env("DISCO_REAL_PATH", &dir)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn commands_that_only_change_files_run_offline_and_now_is_trapped() {
        assert_eq!(
            run_with_real("systemctl", &["enable", "foo.service"]),
            (0, "real: SYSTEMD_OFFLINE=1 enable foo.service\n".into())
        );
        assert_eq!(
            run_with_real("systemctl", &["--quiet", "mask", "a b.service"]),
            (
                0,
                "real: SYSTEMD_OFFLINE=1 --quiet mask a b.service\n".into()
            )
        );
        assert_eq!(
            run_with_real("systemctl", &["--now", "disable", "foo"]),
            (
                0,
                "real: SYSTEMD_OFFLINE=1 disable foo\n\
                 warning: Would execute : systemctl --now disable foo\n"
                    .into()
            )
        );
        assert_eq!(
            run_with_real("systemctl", &["restart", "foo"]),
            (0, "warning: Would execute : systemctl restart foo\n".into())
        );
    }
}

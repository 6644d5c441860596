//! The command line: global options, one file per subcommand, and dispatch.

mod apply;
mod args;
mod check_result;
mod completions;
mod dance;
mod dance_sandbox;
mod defer;
mod diff;
mod fix;
mod fleet;
mod history;
mod new;
mod param;
mod recover;
mod remote;
mod report;
mod request;
mod result;
mod rollback;
mod sandbox_init;
mod serve;
mod shell;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub use check_result::CheckResultArgs;
pub use completions::{CompletionsArgs, ManArgs};
pub use diff::{DiffArgs, DiffFormat};
pub use fix::FixArgs;
pub use param::{ParamArgs, ParamVerb};
pub use report::{ReportArgs, ReportFormat};
pub use request::RequestArgs;
pub use sandbox_init::SandboxInitArgs;
pub use shell::ShellArgs;

const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  the operation failed, or the document checked is not valid
  2  the command line is wrong
  disco fix exits with the ReturnCode it decided, modulo 256.
  disco dance --noop --exit-code exits 2 when something would change.
  125 the sandbox could not be built (it says why).

Errors are one line on stderr, 'error: ' then what is at fault.
Set NO_COLOR to turn colours off; RUST_LOG=debug for diagnostics.";

/// disco: dead-simple configuration management and a Survivor fix-module host.
#[derive(Debug, Parser)]
#[command(name = "disco", version, about, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    /// Options every subcommand takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options that every subcommand honours.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Where disco keeps state (runs, layers, locks of dances, history).
    #[arg(
        long,
        global = true,
        env = "DISCO_STATE_DIR",
        default_value = "/var/lib/disco"
    )]
    pub state_dir: PathBuf,
    /// More output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less output.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a SurvivorFixData request, for testing a fix module by hand.
    Request(RequestArgs),
    /// Run one fix module under the Survivor rules, with timeout, locking and leak detection.
    Fix(FixArgs),
    /// Validate a module's SurvivorFixResult (or any protocol document) strictly.
    CheckResult(CheckResultArgs),
    /// Read and edit a parameter tree (get, set, keys, delete, dump, json); also `disco-param`.
    Param(ParamArgs),
    /// Run every module of this node in a sandbox; with --noop, report and change nothing.
    Dance(dance::DanceArgs),
    /// Open a noop sandbox with a shell; its scratch layer becomes the latest run.
    Shell(ShellArgs),
    /// Report what a sandbox run's scratch layers would change (default: the latest run).
    Diff(DiffArgs),
    /// Print what each step of the last dance (or dance ID) cost and how it ended.
    Report(ReportArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Print the man page (roff).
    Man(ManArgs),
    /// Run fixes on alert: Prometheus Alertmanager webhooks, rules, dedup and storm control.
    Serve(serve::ServeArgs),
    /// Speak the Survivor scheduler's remote protocol on stdin/stdout (`ssh HOST disco remote`).
    Remote(remote::RemoteArgs),
    /// Print the fixes `disco serve` decided and ran, from its history.
    History(history::HistoryArgs),
    /// On the server: the dance reports nodes pushed back, per node (status) or per path (diff).
    Fleet(fleet::FleetArgs),
    /// Finish the merges a killed live dance left, or set them aside with --discard.
    Recover(recover::RecoverArgs),
    /// Undo a live dance (the newest, or DANCE), file for file, from its undo records.
    Rollback(rollback::RollbackArgs),
    /// Internal: run one fix for `disco serve` (spec and request on stdin).
    #[command(name = "__serve-fix", hide = true)]
    ServeFix(serve::ServeFixArgs),
    /// Check a fix module (or a disco ball) against the Survivor spec, one `RULE N:` a line.
    Validate(validate::ValidateArgs),
    /// Scaffold a fix module (script, Makefile.in, doc page), or with --ball a disco ball.
    New(new::NewArgs),
    /// For bash fix modules: check the request on stdin and print its options to `eval`.
    Args(args::ArgsArgs),
    /// For bash fix modules: print a SurvivorFixResult and exit with its code.
    Result(result::ResultArgs),
    /// Internal: set up a sandbox from its plan and run a command in it.
    #[command(name = "__sandbox", hide = true)]
    Sandbox(SandboxInitArgs),
    /// Internal: record a service command a live module's script wants run after the merge.
    #[command(name = "__defer", hide = true)]
    Defer(defer::DeferArgs),
    /// Internal: the sandbox a dance runs its modules in.
    #[command(name = "__dance-sandbox", hide = true)]
    DanceSandbox(dance_sandbox::DanceSandboxArgs),
    /// Internal: merge one scratch layer onto a folder, journaled (benchmarks, recovery).
    #[command(name = "__apply", hide = true)]
    Apply(apply::ApplyArgs),
}

/// Runs one subcommand.
pub fn dispatch(cli: Cli) -> crate::error::Result<ExitCode> {
    match cli.command {
        Command::Request(args) => request::exec(args),
        Command::Fix(args) => fix::exec(args, &cli.global),
        Command::CheckResult(args) => check_result::exec(args),
        Command::Completions(args) => completions::exec_completions(args),
        Command::Man(args) => completions::exec_man(args),
        Command::Serve(args) => serve::exec(args, &cli.global),
        Command::Remote(args) => remote::exec(args, &cli.global),
        Command::History(args) => history::exec(args, &cli.global),
        Command::ServeFix(args) => serve::exec_fix(args),
        Command::Recover(args) => recover::exec(args, &cli.global),
        Command::Rollback(args) => rollback::exec(args, &cli.global),
        Command::Fleet(args) => fleet::exec(args),
        Command::Shell(args) => shell::exec(args, &cli.global),
        Command::Dance(args) => dance::exec(args, &cli.global),
        Command::Diff(args) => diff::exec(args, &cli.global),
        Command::Report(args) => report::exec(args, &cli.global),
        Command::Param(args) => param::exec(args, &cli.global),
        Command::Validate(args) => validate::exec(args),
        Command::New(args) => new::exec(args),
        Command::Args(args) => args::exec(args),
        Command::Result(args) => result::exec(args),
        Command::Sandbox(args) => sandbox_init::exec(args),
        Command::Defer(args) => defer::exec(args),
        Command::DanceSandbox(args) => dance_sandbox::exec(args),
        Command::Apply(args) => apply::exec(args, &cli.global),
    }
}

/// Parses `-o NAME=VALUE` into a name and a value, checking the name's syntax.
pub fn parse_option(arg: &str) -> crate::error::Result<(String, String)> {
    use crate::error::Error::BadOption;
    let Some((name, value)) = arg.split_once('=') else {
        return Err(BadOption {
            arg: arg.to_owned(),
            why: "expected NAME=VALUE",
        });
    };
    if !protocol::options::is_valid_option_name(name) {
        return Err(BadOption {
            arg: arg.to_owned(),
            why: "the name may hold only letters, digits, '_', '-' and '.'",
        });
    }
    if protocol::options::is_reserved_option_name(name) {
        return Err(BadOption {
            arg: arg.to_owned(),
            why: "the name is reserved ('module' and names starting with '_')",
        });
    }
    Ok((name.to_owned(), value.to_owned()))
}

//! `disco result`: print a correct SurvivorFixResult and exit with its code, so a bash fix
//! module ends with `exec disco result 0 "restarted sshd"` and obeys rules 8 and 9 at once.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use protocol::{Document, FixResult, ReturnCode};

use crate::error::{Error, Result};
use crate::output;

/// Arguments of `disco result`.
#[derive(Debug, Args)]
pub struct ResultArgs {
    /// The ReturnCode: 0, 1, 4 or 20..=1000, or a name (`OK`, `MODEXEC_PROBLEM`, `misconfig`).
    #[arg(value_name = "CODE", allow_hyphen_values = true)]
    pub code: String,
    /// The Comment (several words are joined with spaces); may be left out.
    #[arg(
        value_name = "COMMENT",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub comment: Vec<String>,
}

/// Why `disco result`'s CODE is not one a fix module may return.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodeError {
    /// A number no ReturnCode has.
    #[error(transparent)]
    OutOfRange(#[from] protocol::OutOfRange),
    /// Neither a number nor a ReturnCode's name.
    #[error("return code '{0}' is neither a number nor a name")]
    Unknown(String),
    /// A ReturnCode that only a runner gives (2, 3, 5, 6, 7).
    #[error(
        "return code {} ({}) is not a fix module's to return (0, 1, 4 or 20..=1000)",
        .0.value(),
        .0.name().unwrap_or("custom")
    )]
    NotAModules(ReturnCode),
}

/// The code `text` names, if a fix module may return it; `Err` says why not.
pub fn module_code(text: &str) -> std::result::Result<ReturnCode, CodeError> {
    let code = match text.trim().parse::<i64>() {
        Ok(n) => ReturnCode::new(n)?,
        Err(_) => ReturnCode::from_name(text).ok_or_else(|| CodeError::Unknown(text.to_owned()))?,
    };
    if !code.fix_module_may_return() {
        return Err(CodeError::NotAModules(code));
    }
    Ok(code)
}

pub(super) fn exec(args: ResultArgs) -> Result<ExitCode> {
    let comment = args.comment.join(" ");
    let result = match module_code(&args.code) {
        Ok(code) => FixResult::new(code, comment),
        Err(why) => {
            // Still answer a valid document, so the runner records the module's mistake
            // instead of an unreadable result.
            output::error(&why.to_string());
            FixResult::new(
                ReturnCode::MISCONFIG,
                format!("module error: {why}: {comment}"),
            )
        }
    };
    let xml = result.to_xml()?;
    let mut out = std::io::stdout().lock();
    out.write_all(&xml).map_err(Error::Write)?;
    out.flush().map_err(Error::Write)?;
    Ok(ExitCode::from(result.return_code.exit_status()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_a_module_may_return() {
        assert_eq!(module_code("0").unwrap(), ReturnCode::OK);
        assert_eq!(module_code("misconfig").unwrap(), ReturnCode::MISCONFIG);
        assert_eq!(module_code("1000").unwrap().exit_status(), 232);
        assert!(matches!(module_code("5"), Err(CodeError::NotAModules(_))));
        assert!(matches!(module_code("12"), Err(CodeError::OutOfRange(_))));
        assert!(matches!(module_code("x"), Err(CodeError::Unknown(_))));
    }
}

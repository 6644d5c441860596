//! Return codes of the Survivor protocol (`include/survivor.H`), and who may assign which.

use std::fmt;

/// A ReturnCode of the protocol: one of the named codes 0..=7, or a custom code 20..=1000.
///
/// The values 8..=19 are unassigned and values above [`ReturnCode::MAXRETURN`] do not exist, so a
/// `ReturnCode` cannot hold them: [`ReturnCode::new`] refuses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReturnCode(u16);

/// A value that is not a ReturnCode of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("return code {0} is out of range (0..=7 or 20..=1000)")]
pub struct OutOfRange(pub i64);

impl ReturnCode {
    /// `MODEXEC_OK`: the fix ran successfully.
    pub const OK: ReturnCode = ReturnCode(0);
    /// `MODEXEC_PROBLEM`: an error occurred while running the fix.
    pub const PROBLEM: ReturnCode = ReturnCode(1);
    /// `MODEXEC_WARNING`: check modules only.
    pub const WARNING: ReturnCode = ReturnCode(2);
    /// `MODEXEC_NOTICE`: check modules only.
    pub const NOTICE: ReturnCode = ReturnCode(3);
    /// `MODEXEC_MISCONFIG`: the module is misconfigured, or could not be executed at all.
    pub const MISCONFIG: ReturnCode = ReturnCode(4);
    /// `MODEXEC_TIMEDOUT`: assigned by the runner when the module ran too long.
    pub const TIMEDOUT: ReturnCode = ReturnCode(5);
    /// `MODEXEC_DEPEND`: assigned by the runner when a dependency failed.
    pub const DEPEND: ReturnCode = ReturnCode(6);
    /// `MODEXEC_NOTYET`: assigned by the runner to work not yet executed.
    pub const NOTYET: ReturnCode = ReturnCode(7);
    /// `MODEXEC_MAXRETURN`: the largest custom code.
    pub const MAXRETURN: ReturnCode = ReturnCode(1000);

    /// The first custom code.
    pub const MIN_CUSTOM: u16 = 20;

    /// The code with this value, if the protocol has it.
    pub fn new(value: i64) -> Result<ReturnCode, OutOfRange> {
        match value {
            0..=7 | 20..=1000 => Ok(ReturnCode(value as u16)),
            _ => Err(OutOfRange(value)),
        }
    }

    /// The numeric value.
    pub fn value(self) -> u16 {
        self.0
    }

    /// The protocol's name (`MODEXEC_OK`...), or `None` for a custom code.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "MODEXEC_OK",
            1 => "MODEXEC_PROBLEM",
            2 => "MODEXEC_WARNING",
            3 => "MODEXEC_NOTICE",
            4 => "MODEXEC_MISCONFIG",
            5 => "MODEXEC_TIMEDOUT",
            6 => "MODEXEC_DEPEND",
            7 => "MODEXEC_NOTYET",
            1000 => "MODEXEC_MAXRETURN",
            _ => return None,
        })
    }

    /// The code named `name` (`MODEXEC_OK` or just `OK`, any case).
    pub fn from_name(name: &str) -> Option<ReturnCode> {
        let upper = name.to_ascii_uppercase();
        let short = upper.strip_prefix("MODEXEC_").unwrap_or(&upper);
        Some(match short {
            "OK" => Self::OK,
            "PROBLEM" => Self::PROBLEM,
            "WARNING" => Self::WARNING,
            "NOTICE" => Self::NOTICE,
            "MISCONFIG" => Self::MISCONFIG,
            "TIMEDOUT" => Self::TIMEDOUT,
            "DEPEND" => Self::DEPEND,
            "NOTYET" => Self::NOTYET,
            "MAXRETURN" => Self::MAXRETURN,
            _ => return None,
        })
    }

    /// Whether this is a custom code (20..=1000).
    pub fn is_custom(self) -> bool {
        self.0 >= Self::MIN_CUSTOM
    }

    /// Whether a fix module may return this code itself: OK, PROBLEM, MISCONFIG or a custom code.
    pub fn fix_module_may_return(self) -> bool {
        matches!(self.0, 0 | 1 | 4) || self.is_custom()
    }

    /// Whether a check module may return this code itself: 0..=4 or a custom code.
    pub fn check_module_may_return(self) -> bool {
        self.0 <= 4 || self.is_custom()
    }

    /// Whether only the runner assigns this code (TIMEDOUT, DEPEND, NOTYET).
    pub fn runner_only(self) -> bool {
        matches!(self.0, 5..=7)
    }

    /// The process exit status that carries this code: the value modulo 256 (rule 9), since a
    /// process cannot exit with 1000.
    pub fn exit_status(self) -> u8 {
        (self.0 % 256) as u8
    }

    /// Whether a process exit status agrees with this code (rule 9).
    pub fn matches_exit_status(self, status: i32) -> bool {
        i32::from(self.exit_status()) == status
    }

    /// The code an exit status stands for when no document says more. A status has 256 values
    /// and the codes wrap, so this is the smallest code with that residue (8..=19 map to
    /// 264..=275).
    pub fn from_exit_status(status: u8) -> ReturnCode {
        match status {
            0..=7 | 20..=255 => ReturnCode(u16::from(status)),
            _ => ReturnCode(u16::from(status) + 256),
        }
    }
}

impl fmt::Display for ReturnCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} ({name})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

impl TryFrom<i64> for ReturnCode {
    type Error = OutOfRange;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        ReturnCode::new(value)
    }
}

impl From<ReturnCode> for i64 {
    fn from(code: ReturnCode) -> i64 {
        i64::from(code.0)
    }
}

impl From<ReturnCode> for u16 {
    fn from(code: ReturnCode) -> u16 {
        code.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_is_the_protocols() {
        for v in 0..=7 {
            assert!(ReturnCode::new(v).is_ok(), "{v}");
        }
        for v in 8..=19 {
            assert_eq!(ReturnCode::new(v), Err(OutOfRange(v)));
        }
        assert!(ReturnCode::new(20).is_ok());
        assert!(ReturnCode::new(1000).is_ok());
        assert_eq!(ReturnCode::new(1001), Err(OutOfRange(1001)));
        assert_eq!(ReturnCode::new(-1), Err(OutOfRange(-1)));
    }

    #[test]
    fn names_round_trip() {
        for v in 0..=7 {
            let code = ReturnCode::new(v).unwrap();
            assert_eq!(ReturnCode::from_name(code.name().unwrap()), Some(code));
        }
        assert_eq!(
            ReturnCode::from_name("timedout"),
            Some(ReturnCode::TIMEDOUT)
        );
        assert_eq!(ReturnCode::new(42).unwrap().name(), None);
        assert_eq!(
            ReturnCode::MAXRETURN.to_string(),
            "1000 (MODEXEC_MAXRETURN)"
        );
    }

    #[test]
    fn who_may_return_what() {
        let fix: Vec<i64> = (0..=7)
            .filter(|v| ReturnCode::new(*v).unwrap().fix_module_may_return())
            .collect();
        assert_eq!(fix, vec![0, 1, 4]);
        assert!(ReturnCode::new(20).unwrap().fix_module_may_return());
        assert!(ReturnCode::WARNING.check_module_may_return());
        assert!(!ReturnCode::TIMEDOUT.check_module_may_return());
        assert!(ReturnCode::DEPEND.runner_only());
        assert!(!ReturnCode::MISCONFIG.runner_only());
    }

    #[test]
    fn exit_status_is_modulo_256() {
        assert_eq!(ReturnCode::MAXRETURN.exit_status(), 232);
        assert_eq!(ReturnCode::new(256).unwrap().exit_status(), 0);
        assert!(ReturnCode::new(300).unwrap().matches_exit_status(44));
        assert_eq!(ReturnCode::from_exit_status(4), ReturnCode::MISCONFIG);
        assert_eq!(ReturnCode::from_exit_status(232).value(), 232);
        assert_eq!(ReturnCode::from_exit_status(9).value(), 265);
        for s in 0..=255u8 {
            assert_eq!(ReturnCode::from_exit_status(s).exit_status(), s);
        }
    }
}

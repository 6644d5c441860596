//! A fix's limits as asked for (`memory.max`, `pids.max`, `cpu.max`), parsed from headers
//! and options, and the stricter of two.

use super::CgroupError;

/// Resource limits of one fix (`--memory-max`, `--pids-max`, `--cpu-max`, or the module's
/// `# survivor-memory-max:` ... headers). `None` is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory (anonymous and page cache) its processes may use together.
    pub memory_max: Option<u64>,
    /// How many processes and threads it may have at once.
    pub pids_max: Option<u64>,
    /// CPU time it may use, in percent of one CPU per wall-clock period (200 = two CPUs).
    pub cpu_max: Option<u32>,
}

impl Limits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// The stricter of `self` and `other`, limit by limit.
    pub fn stricter(self, other: Limits) -> Limits {
        fn min<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        Limits {
            memory_max: min(self.memory_max, other.memory_max),
            pids_max: min(self.pids_max, other.pids_max),
            cpu_max: min(self.cpu_max, other.cpu_max),
        }
    }
}

/// Reads a byte count: digits with an optional binary suffix `K`, `M`, `G` or `T` (`64M`).
pub fn parse_bytes(limit: &'static str, s: &str) -> Result<u64, CgroupError> {
    let bad = |why| CgroupError::BadLimit {
        limit,
        value: s.to_owned(),
        why,
    };
    let t = s.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad("the suffix must be K, M, G or T")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| bad("not a number of bytes"))?;
    let bytes = n.checked_mul(1 << shift).ok_or_else(|| bad("too large"))?;
    if bytes < 1 << 20 {
        return Err(bad("less than 1M, too little for any module"));
    }
    Ok(bytes)
}

/// Reads a process count (at least 1).
pub fn parse_pids(limit: &'static str, s: &str) -> Result<u64, CgroupError> {
    match s.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(CgroupError::BadLimit {
            limit,
            value: s.to_owned(),
            why: "not a positive number of processes",
        }),
    }
}

/// Reads a CPU percentage (1 to 100 per CPU).
pub fn parse_percent(limit: &'static str, s: &str) -> Result<u32, CgroupError> {
    match s.trim().trim_end_matches('%').parse::<u32>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err(CgroupError::BadLimit {
            limit,
            value: s.to_owned(),
            why: "not a percentage of one CPU (1 to 100000)",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_and_combine() {
        assert_eq!(parse_bytes("m", "64M").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("m", "2g").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("m", "2097152").unwrap(), 2 << 20);
        assert!(parse_bytes("m", "12").is_err());
        assert!(parse_bytes("m", "5X").is_err());
        assert!(parse_pids("p", "0").is_err());
        assert_eq!(parse_percent("c", "50%").unwrap(), 50);
        let a = Limits {
            memory_max: Some(10),
            pids_max: None,
            cpu_max: Some(50),
        };
        let b = Limits {
            memory_max: Some(5),
            pids_max: Some(64),
            cpu_max: None,
        };
        assert_eq!(
            a.stricter(b),
            Limits {
                memory_max: Some(5),
                pids_max: Some(64),
                cpu_max: Some(50)
            }
        );
    }
}

//! Paths in a journal are bytes, as the kernel has them: a name that is UTF-8 is written as a
//! JSON string (readable), any other as an array of its bytes, and both read back exactly.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Repr {
    Text(String),
    Bytes(Vec<u8>),
}

/// Writes `path` as a string when it is UTF-8, else as its bytes.
pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    match path.to_str() {
        Some(text) => Repr::Text(text.to_owned()),
        None => Repr::Bytes(path.as_os_str().as_bytes().to_vec()),
    }
    .serialize(s)
}

/// Reads what [`serialize`] wrote.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    Ok(match Repr::deserialize(d)? {
        Repr::Text(text) => PathBuf::from(text),
        Repr::Bytes(bytes) => PathBuf::from(OsString::from_vec(bytes)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct P(#[serde(with = "super")] PathBuf);

    #[test]
    fn names_that_are_not_utf8_survive_the_journal() {
        for raw in [&b"etc/caf\xe9"[..], b"plain/name", b"\xff\xfe"] {
            let p = P(PathBuf::from(OsString::from_vec(raw.to_vec())));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<P>(&json).unwrap(), p, "{json}");
        }
        assert_eq!(serde_json::to_string(&P("a/b".into())).unwrap(), "\"a/b\"");
    }
}

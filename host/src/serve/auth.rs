//! Who may ask: the bearer token of `--token-file` (RFC 6750), its scheme matched
//! case-insensitively and the token compared in constant time.

use subtle::ConstantTimeEq;

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No `Authorization` header.
    #[error("missing bearer token (Authorization: Bearer ...)")]
    Missing,
    /// Another scheme than `Bearer`, or no token after it.
    #[error("the Authorization header is not 'Bearer TOKEN'")]
    Scheme,
    /// The wrong token.
    #[error("wrong bearer token")]
    Wrong,
}

/// The token requests must carry.
#[derive(Clone)]
pub struct Token {
    /// SHA-256 of the token: comparing digests of equal length leaks neither the token's
    /// bytes nor its length through timing.
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, b);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Token {
    /// The token `secret`.
    pub fn new(secret: &str) -> Token {
        Token {
            digest: sha256(secret.as_bytes()),
        }
    }

    /// Checks an `Authorization` header's value.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), Refused> {
        let value = authorization.ok_or(Refused::Missing)?;
        let value = std::str::from_utf8(value).map_err(|_| Refused::Scheme)?;
        let (scheme, given) = value.trim().split_once(' ').ok_or(Refused::Scheme)?;
        let given = given.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || given.is_empty() {
            return Err(Refused::Scheme);
        }
        if bool::from(sha256(given.as_bytes()).ct_eq(&self.digest)) {
            Ok(())
        } else {
            Err(Refused::Wrong)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_any_case_and_the_right_token_only() {
        let t = Token::new("s3cret");
        assert_eq!(t.check(Some(b"Bearer s3cret")), Ok(()));
        assert_eq!(t.check(Some(b"bearer s3cret")), Ok(()));
        assert_eq!(t.check(Some(b"BEARER  s3cret ")), Ok(()));
        assert_eq!(t.check(Some(b"Bearer s3cre")), Err(Refused::Wrong));
        assert_eq!(t.check(Some(b"Bearer s3cret2")), Err(Refused::Wrong));
        assert_eq!(t.check(Some(b"Basic s3cret")), Err(Refused::Scheme));
        assert_eq!(t.check(Some(b"Bearer")), Err(Refused::Scheme));
        assert_eq!(t.check(Some(b"\xff")), Err(Refused::Scheme));
        assert_eq!(t.check(None), Err(Refused::Missing));
    }
}

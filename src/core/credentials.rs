//! Credentials the client sent with its request.
//!
//! Only `Authorization: Basic` (RFC 7617) for now: the end user's name and password for the
//! password grant, or a calling client's id and secret for the client credentials grant.

use base64::Engine;

use crate::core::error::Error;

/// A user id and password (or client id and secret) from `Authorization: Basic`.
#[derive(Clone, PartialEq, Eq)]
pub struct Basic {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Basic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Basic({}, <redacted>)", self.user)
    }
}

/// Reads `Authorization: Basic`. `Ok(None)` when the header is absent or another scheme.
pub fn basic(authorization: Option<&str>) -> Result<Option<Basic>, Error> {
    let Some(value) = authorization else { return Ok(None) };
    let value = value.trim();
    let Some((scheme, rest)) = value.split_once(' ') else { return Ok(None) };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| Error::MalformedCredentials("Basic credentials are not base64"))?;
    let text = String::from_utf8(raw).map_err(|_| Error::MalformedCredentials("Basic credentials are not UTF-8"))?;
    let (user, password) = text
        .split_once(':')
        .ok_or(Error::MalformedCredentials("Basic credentials have no `:`"))?;
    if user.is_empty() {
        return Err(Error::MalformedCredentials("Basic credentials have an empty user"));
    }
    Ok(Some(Basic { user: user.to_string(), password: password.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_basic() {
        let b = basic(Some("Basic am9objpkb2U=")).unwrap().unwrap();
        assert_eq!((b.user.as_str(), b.password.as_str()), ("john", "doe"));
        // password may contain ':'; scheme is case-insensitive
        let b = basic(Some("basic am9objpkOm9l")).unwrap().unwrap();
        assert_eq!(b.password, "d:oe");
    }

    #[test]
    fn other_schemes_and_absence_are_not_basic() {
        assert_eq!(basic(None).unwrap(), None);
        assert_eq!(basic(Some("Bearer abc")).unwrap(), None);
        assert_eq!(basic(Some("Basic")).unwrap(), None);
    }

    #[test]
    fn malformed_basic_is_an_error_not_a_panic() {
        for v in ["Basic !!!", "Basic am9obg==", "Basic OmRvZQ==", "Basic //79"] {
            assert!(matches!(basic(Some(v)), Err(Error::MalformedCredentials(_))), "{v}");
        }
    }

    #[test]
    fn debug_hides_password() {
        let b = Basic { user: "u".into(), password: "hunter2".into() };
        assert!(!format!("{b:?}").contains("hunter2"));
    }
}

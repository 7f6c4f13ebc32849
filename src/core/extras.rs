//! What the filter adds to its calls to the IdP besides the protocol: Kong's
//! `*_args_names`/`*_args_values` (form or query arguments) and `*_headers_names`/
//! `*_headers_values` per endpoint, `audience`, the introspection hint and the names of the
//! token parameters of introspection and revocation. Read once, at load, into [`Extras`];
//! added as each call is built.
//!
//! An argument the protocol already carries (`grant_type`, `client_id`, `code`, …) cannot be
//! set this way, nor a header the filter or Envoy owns (`authorization`, `content-type`,
//! `host`, pseudo-headers): an extra value must not replace the filter's client
//! authentication or the credentials of the request.

use crate::core::error::ConfigError;
use crate::core::header::{HeaderName, HeaderValue, Headers};

/// Extra arguments and headers of one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extra {
    pub args: Vec<(String, String)>,
    pub headers: Headers,
}

/// Everything the filter adds to its IdP calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extras {
    /// `authorization_query_args_*` and `audience` on the login redirect.
    pub authorization: Extra,
    /// `token_post_args_*`, `token_headers_*`; `audience` for the password and client
    /// credentials grants.
    pub token: Extra,
    pub introspection: Extra,
    pub userinfo: Extra,
    /// `audience` (Kong sends it to the authorization endpoint; Auth0, for one, needs it on
    /// the password and client credentials grants too).
    pub audience: Vec<String>,
    /// `introspection_hint` (`token_type_hint`).
    pub introspection_hint: String,
    /// `introspection_token_param_name`.
    pub introspection_token_param: String,
    /// `revocation_token_param_name`.
    pub revocation_token_param: String,
}

impl Default for Extras {
    fn default() -> Self {
        Extras {
            authorization: Extra::default(),
            token: Extra::default(),
            introspection: Extra::default(),
            userinfo: Extra::default(),
            audience: Vec::new(),
            introspection_hint: "access_token".into(),
            introspection_token_param: "token".into(),
            revocation_token_param: "token".into(),
        }
    }
}

impl Extra {
    /// Appends this endpoint's arguments to `form` (after the protocol's own).
    pub fn append_args<T: form_urlencoded::Target>(&self, form: &mut form_urlencoded::Serializer<'_, T>) {
        for (k, v) in &self.args {
            form.append_pair(k, v);
        }
    }
}

/// Arguments the protocol sets itself, at one endpoint or another.
const PROTOCOL_ARGS: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "username",
    "password",
    "code",
    "code_verifier",
    "code_challenge",
    "code_challenge_method",
    "redirect_uri",
    "refresh_token",
    "token",
    "token_type_hint",
    "response_type",
    "state",
    "nonce",
    "scope",
    "audience",
    "access_token",
];

/// Where to set an argument the filter sets itself, when there is a key for it.
fn instead(name: &str) -> &'static str {
    match name {
        "scope" => " (use `scopes`)",
        "audience" => " (use `audience`)",
        "redirect_uri" => " (use `redirect_uri`)",
        "client_id" | "client_secret" => " (use `client_id`, `client_secret`)",
        _ => "",
    }
}

/// Headers the filter (client authentication, the bearer token of userinfo, the body's
/// type) or Envoy (the connection) owns.
const OWNED_HEADERS: &[&str] = &["authorization", "content-type", "content-length", "host", "transfer-encoding", "connection", "te"];

/// `names` and `values` paired by position (Kong's two lists).
fn paired(names_key: &str, names: Option<Vec<String>>, values: Option<Vec<String>>) -> Result<Vec<(String, String)>, ConfigError> {
    let (names, values) = (names.unwrap_or_default(), values.unwrap_or_default());
    let values_key = names_key.replace("_names", "_values");
    if names.len() != values.len() {
        return ConfigError::err(format!(
            "`{names_key}` has {} names and `{values_key}` {} values: give one value per name",
            names.len(),
            values.len()
        ));
    }
    Ok(names.into_iter().zip(values).collect())
}

/// Arguments: a name the protocol owns is refused; any text is allowed (it is form-encoded).
pub fn args(names_key: &str, names: Option<Vec<String>>, values: Option<Vec<String>>) -> Result<Vec<(String, String)>, ConfigError> {
    let pairs = paired(names_key, names, values)?;
    for (name, _) in &pairs {
        let name = name.trim();
        if name.is_empty() {
            return ConfigError::err(format!("`{names_key}`: an empty name"));
        }
        if PROTOCOL_ARGS.contains(&name) {
            return ConfigError::err(format!(
                "`{names_key}`: `{name}` is set by the filter itself and cannot be given here{}",
                instead(name)
            ));
        }
    }
    Ok(pairs.into_iter().map(|(n, v)| (n.trim().to_string(), v)).collect())
}

/// Headers: valid names and values, none the filter or Envoy owns.
pub fn headers(names_key: &str, names: Option<Vec<String>>, values: Option<Vec<String>>) -> Result<Headers, ConfigError> {
    paired(names_key, names, values)?
        .into_iter()
        .map(|(n, v)| {
            let name = HeaderName::new(&n).map_err(|_| ConfigError(format!("`{names_key}`: `{}` is not a valid header name", n.trim())))?;
            if name.as_str().starts_with(':') || OWNED_HEADERS.contains(&name.as_str()) {
                return ConfigError::err(format!(
                    "`{names_key}`: `{}` is set by the filter or Envoy and cannot be given here",
                    name.as_str()
                ));
            }
            let value = HeaderValue::new(v)
                .map_err(|_| ConfigError(format!("`{names_key}`: the value of `{}` has control characters", name.as_str())))?;
            Ok((name, value))
        })
        .collect()
}

/// A parameter value (`introspection_hint`: a token type, which may be a URN).
pub fn param_value(key: &str, v: &str) -> Result<String, ConfigError> {
    let v = v.trim();
    if v.is_empty() || v.chars().any(char::is_control) {
        return ConfigError::err(format!("`{key}` must be a non-empty value without control characters"));
    }
    Ok(v.to_string())
}

/// A parameter name (`introspection_token_param_name`, …): a plain form name.
pub fn param_name(key: &str, v: &str) -> Result<String, ConfigError> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.') {
        return ConfigError::err(format!("`{key}`: `{v}` is not a parameter name (letters, digits, `_`, `-`, `.`)"));
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn names_and_values_pair_up() {
        let a = args("token_post_args_names", list(&["resource", "x"]), list(&["https://api", "a b"])).unwrap();
        assert_eq!(a, vec![("resource".into(), "https://api".into()), ("x".into(), "a b".into())]);
        let e = args("token_post_args_names", list(&["resource"]), None).unwrap_err();
        assert!(e.0.contains("`token_post_args_values` 0 values"), "{e:?}");
    }

    #[test]
    fn protocol_arguments_and_owned_headers_are_refused() {
        for name in ["grant_type", "client_id", "username", "scope", "token"] {
            assert!(args("token_post_args_names", list(&[name]), list(&["x"])).is_err(), "{name}");
        }
        for name in ["Authorization", ":path", "content-type", "host"] {
            assert!(headers("token_headers_names", list(&[name]), list(&["x"])).is_err(), "{name}");
        }
        assert!(headers("token_headers_names", list(&["x-api-key"]), list(&["a\r\nb"])).is_err());
        let h = headers("token_headers_names", list(&["X-Api-Key"]), list(&["k1"])).unwrap();
        assert_eq!((h[0].0.as_str(), h[0].1.as_str()), ("x-api-key", "k1"));
        assert!(param_name("introspection_token_param_name", "access token").is_err());
        assert_eq!(param_name("introspection_token_param_name", " access_token ").unwrap(), "access_token");
    }
}

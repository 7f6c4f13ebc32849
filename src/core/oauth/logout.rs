//! Logout: recognising a logout request, revoking its tokens (RFC 7009) and sending the
//! browser to the IdP's `end_session_endpoint` (RP-Initiated Logout 1.0).

use crate::core::client_auth::ClientSettings;
use crate::core::discovery::{Metadata, Which};
use crate::core::error::{BadAnswer, Error};
use crate::core::header::HeaderValue;
use crate::core::idp::{self, IdpCall, IdpResponse, Purpose};

/// Kong's `logout_*` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogoutSettings {
    pub uri_suffix: Option<String>,
    pub query_arg: Option<String>,
    /// Upper-case methods.
    pub methods: Vec<String>,
    pub revoke: bool,
    pub revoke_access_token: bool,
    pub revoke_refresh_token: bool,
    /// A valid header value (checked at load: it may become `Location` as it is).
    pub redirect_uri: Option<HeaderValue>,
}

impl LogoutSettings {
    /// Whether this request asks to log out (by path suffix or query argument).
    pub fn matches(&self, method: &str, path: &str) -> bool {
        if !self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)) {
            return false;
        }
        let (p, query) = path.split_once('?').unwrap_or((path, ""));
        let by_suffix = self.uri_suffix.as_deref().is_some_and(|s| p.ends_with(s));
        let by_arg = self.query_arg.as_deref().is_some_and(|a| form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == a));
        by_suffix || by_arg
    }

    /// Where the browser goes after logout: the IdP's `end_session_endpoint` (with
    /// `id_token_hint` and `post_logout_redirect_uri`), else `logout_redirect_uri`.
    pub fn after(&self, client_id: &str, meta: Option<&Metadata>, id_token: Option<&str>) -> Option<HeaderValue> {
        let Some(end) = meta.and_then(|m| m.end_session_endpoint.as_ref()) else { return self.redirect_uri.clone() };
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(t) = id_token {
            q.append_pair("id_token_hint", t);
        }
        if let Some(r) = &self.redirect_uri {
            q.append_pair("post_logout_redirect_uri", r.as_str());
        }
        q.append_pair("client_id", client_id);
        HeaderValue::new(idp::with_query(&end.url, &q.finish())).ok()
    }
}

/// RFC 7009 revocation of `token`.
pub fn revocation_request(
    client: &ClientSettings,
    meta: &Metadata,
    token: &str,
    hint: &str,
    now_secs: u64,
    jti: &str,
) -> Result<IdpCall, Error> {
    let params = [(client.extras.revocation_token_param.as_str(), token), ("token_type_hint", hint)];
    client.post(meta, Which::Revocation, Purpose::Revocation, &params, now_secs, jti)
}

/// RFC 7009: 200 means revoked (or unknown, which is as good).
pub fn revocation_result(client: &ClientSettings, resp: &IdpResponse) -> Result<(), Error> {
    match resp.answered(client.timeout_ms)? {
        200 => Ok(()),
        400 | 401 | 403 => Err(Error::ClientRejected { method: client.revocation_auth.name() }),
        s => Err(idp::refusal(Purpose::Revocation, s).unwrap_or(BadAnswer::RevocationStatus.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_token_param_name_names_the_token() {
        let p = crate::core::config::Plan::parse(
            b"issuer: https://idp\nidp_cluster: idp\nclient_id: c\nclient_secret: s\nrevocation_token_param_name: access_token\n",
        )
        .unwrap();
        let meta = Metadata::parse("https://idp", br#"{"issuer":"https://idp","revocation_endpoint":"https://idp/revoke"}"#).unwrap();
        let r = revocation_request(&p.policy.client, &meta, "tok", "refresh_token", 0, "j").unwrap();
        let form: Vec<(String, String)> = form_urlencoded::parse(&r.body).into_owned().collect();
        assert_eq!(form[0], ("access_token".into(), "tok".into()));
    }

    fn settings(suffix: Option<&str>, arg: Option<&str>, redirect: Option<&str>) -> LogoutSettings {
        LogoutSettings {
            uri_suffix: suffix.map(Into::into),
            query_arg: arg.map(Into::into),
            methods: vec!["POST".into(), "DELETE".into()],
            redirect_uri: redirect.map(|r| HeaderValue::new(r).unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn logout_detection() {
        let l = settings(Some("/logout"), Some("logout"), None);
        assert!(l.matches("POST", "/app/logout"));
        assert!(l.matches("DELETE", "/x?logout=1"));
        assert!(!l.matches("GET", "/app/logout"));
        assert!(!l.matches("POST", "/app/logout/more"));
        assert!(!LogoutSettings::default().matches("POST", "/logout"));
    }

    #[test]
    fn after_logout_goes_to_end_session() {
        let l = settings(None, None, Some("http://127.0.0.1:8000/bye"));
        let meta = Metadata::parse("https://idp", br#"{"issuer":"https://idp","end_session_endpoint":"https://idp/session/end"}"#).unwrap();
        let url = l.after("web", Some(&meta), Some("IDT")).unwrap();
        assert!(
            url.as_str()
                .starts_with("https://idp/session/end?id_token_hint=IDT&post_logout_redirect_uri=http%3A%2F%2F127.0.0.1%3A8000%2Fbye"),
            "{}",
            url.as_str()
        );
        assert_eq!(l.after("web", None, None).unwrap().as_str(), "http://127.0.0.1:8000/bye");
    }
}

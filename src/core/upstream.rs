//! What goes upstream once a request is authenticated: the identity headers, with every
//! client-sent header of the same names removed first (nobody forges an identity), and the
//! client's own credentials removed as configured (`hide_credentials`).

use std::rc::Rc;

use base64::Engine;

use crate::core::claims::{self, Claims};
use crate::core::config::Plan;
use crate::core::credentials::{self, Source};
use crate::core::reply::Forward;
use crate::core::session;

/// What an auth method established about the request.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub access_token: String,
    pub id_token: Option<String>,
    /// Claims rules and claim headers read (JWT payload, introspection or userinfo answer).
    pub claims: Rc<Claims>,
    pub user_info: Option<Rc<Claims>>,
    pub introspection: Option<Rc<Claims>>,
}

/// The credential the client presented, for removal before upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    Basic,
    Bearer(Source),
    RefreshToken,
    /// A session cookie (the filter's cookies never go upstream).
    Session,
}

/// Request details needed to strip a credential from the query or cookies.
#[derive(Debug, Clone, Default)]
pub struct Original {
    pub path: Option<String>,
    pub cookie: Option<String>,
    /// The client sent exactly `Authorization: Bearer <token>`.
    pub canonical_bearer_header: bool,
}

/// Header changes for a request authenticated as `identity`. `new_refresh_token` goes back
/// to the client.
pub fn forward(
    plan: &Plan,
    identity: &Identity,
    presented: &Presented,
    original: &Original,
    new_refresh_token: Option<&str>,
) -> Forward {
    let up = &plan.upstream;
    let mut f = Forward::default();
    // The common case: the client's own `Authorization: Bearer <token>` is exactly what goes
    // upstream; leaving it in place saves rewriting a kilobyte header on every request.
    let keep_authorization = *presented == Presented::Bearer(Source::Header)
        && original.canonical_bearer_header
        && !plan.hide_credentials
        && up.access_token.as_ref().is_some_and(|h| h.name == "authorization" && h.bearer);
    f.remove.extend(up.names().filter(|n| !(keep_authorization && *n == "authorization")).map(str::to_string));
    match presented {
        // Passwords and client secrets, and refresh tokens, never go upstream.
        Presented::Basic => f.remove.push("authorization".into()),
        Presented::RefreshToken => f.remove.push(plan.refresh_token_header.clone()),
        Presented::Bearer(Source::Header) if plan.hide_credentials => f.remove.push("authorization".into()),
        Presented::Bearer(Source::Query) if plan.hide_credentials => {
            if let Some(p) = &original.path {
                f.set_path = Some(credentials::without_query_param(p, credentials::QUERY_PARAM));
            }
        }
        Presented::Bearer(_) | Presented::Session => {}
    }
    // Cookies: the filter's own never go upstream; a bearer cookie only without hide_credentials.
    if let Some(cookie) = &original.cookie {
        let hidden_bearer = match (presented, &plan.bearer.cookie) {
            (Presented::Bearer(Source::Cookie), Some(name)) if plan.hide_credentials => Some(name.as_str()),
            _ => None,
        };
        let kept: Vec<&str> = cookie
            .split(';')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .filter(|c| {
                let name = c.split_once('=').map(|(k, _)| k.trim()).unwrap_or(c);
                let own = plan.sessions.as_ref().is_some_and(|s| {
                    session::is_own(name, &s.cookie_name) || name == s.authorization_cookie_name
                });
                !own && Some(name) != hidden_bearer
            })
            .collect();
        if kept.len() != cookie.split(';').filter(|c| !c.trim().is_empty()).count() {
            f.remove.push("cookie".into());
            if !kept.is_empty() {
                f.set.push(("cookie".into(), kept.join("; ")));
            }
        }
    }
    if let Some(h) = up.access_token.as_ref().filter(|_| !keep_authorization) {
        f.set.push((h.name.clone(), h.value(&identity.access_token)));
    }
    if let (Some(h), Some(t)) = (&up.id_token, &identity.id_token) {
        f.set.push((h.name.clone(), h.value(t)));
    }
    let b64 = |c: &Claims| base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(c).unwrap_or_default());
    if let (Some(h), Some(u)) = (&up.user_info, &identity.user_info) {
        f.set.push((h.clone(), b64(u)));
    }
    if let (Some(h), Some(i)) = (&up.introspection, &identity.introspection) {
        f.set.push((h.clone(), b64(i)));
    }
    for (claim, header) in &up.claims {
        let Some(v) = identity.claims.get(claim) else { continue };
        let value = claims::header_value(v);
        // A claim with control characters could split or smuggle headers: it is left out.
        if claims::header_safe(&value) {
            f.set.push((header.clone(), value));
        }
    }
    if let Some(rt) = new_refresh_token {
        f.response_set.push((plan.downstream_refresh_token_header.clone(), rt.to_string()));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan(extra: &str) -> Plan {
        Plan::parse(format!("issuer: https://i\nidp_cluster: idp\nclient_id: c\nauth_methods: [bearer, password, refresh_token]\n{extra}").as_bytes()).unwrap()
    }

    fn identity() -> Identity {
        let claims = json!({"sub": "john", "email": "j@example.com", "groups": ["a", "b"], "evil": "x\r\nx-admin: 1"});
        Identity {
            access_token: "AT".into(),
            id_token: Some("IDT".into()),
            claims: Rc::new(claims.as_object().unwrap().clone()),
            user_info: Some(Rc::new(json!({"sub": "john"}).as_object().unwrap().clone())),
            introspection: None,
        }
    }

    fn get<'a>(f: &'a Forward, name: &str) -> Option<&'a str> {
        f.set.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn identity_headers_and_forgery_removal() {
        let p = plan("upstream_id_token_header: x-id-token\nupstream_user_info_header: x-userinfo\nupstream_introspection_header: x-introspection\nupstream_headers_claims: [sub, groups, evil, missing]\nupstream_headers_names: [x-user, x-groups, x-evil, x-missing]\n");
        let f = forward(&p, &identity(), &Presented::Bearer(Source::Query), &Original::default(), None);
        for h in ["authorization", "x-id-token", "x-userinfo", "x-introspection", "x-user", "x-groups", "x-evil", "x-missing"] {
            assert!(f.remove.iter().any(|r| r == h), "{h} not removed");
        }
        assert_eq!(get(&f, "authorization"), Some("Bearer AT"));
        assert_eq!(get(&f, "x-id-token"), Some("IDT"));
        assert_eq!(get(&f, "x-user"), Some("john"));
        assert_eq!(get(&f, "x-groups"), Some("a,b"));
        assert_eq!(get(&f, "x-evil"), None);
        assert_eq!(get(&f, "x-missing"), None);
        assert_eq!(get(&f, "x-introspection"), None);
        let ui = base64::engine::general_purpose::STANDARD.decode(get(&f, "x-userinfo").unwrap()).unwrap();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&ui).unwrap(), json!({"sub": "john"}));
    }

    #[test]
    fn the_clients_bearer_header_stays_when_it_is_what_goes_upstream() {
        let p = plan("");
        let canonical = Original { canonical_bearer_header: true, ..Default::default() };
        let f = forward(&p, &identity(), &Presented::Bearer(Source::Header), &canonical, None);
        assert!(!f.remove.contains(&"authorization".to_string()));
        assert_eq!(get(&f, "authorization"), None);
        // `bearer` in lower case (or extra spaces) is rewritten to the canonical form
        let f = forward(&p, &identity(), &Presented::Bearer(Source::Header), &Original::default(), None);
        assert_eq!(get(&f, "authorization"), Some("Bearer AT"));
        // but a token from the query replaces whatever Authorization the client sent
        let f = forward(&p, &identity(), &Presented::Bearer(Source::Query), &Original::default(), None);
        assert_eq!(get(&f, "authorization"), Some("Bearer AT"));
    }

    #[test]
    fn hide_credentials() {
        let orig = Original { path: Some("/a?access_token=AT&x=1".into()), cookie: Some("k=v; at=AT".into()), canonical_bearer_header: false };
        let p = plan("hide_credentials: true\nbearer_token_param_type: [query, cookie]\nbearer_token_cookie_name: at\nupstream_access_token_header: x-token\n");
        let f = forward(&p, &identity(), &Presented::Bearer(Source::Query), &orig, None);
        assert_eq!(f.set_path.as_deref(), Some("/a?x=1"));
        let f = forward(&p, &identity(), &Presented::Bearer(Source::Cookie), &orig, None);
        assert_eq!(get(&f, "cookie"), Some("k=v"));
        let f = forward(&p, &identity(), &Presented::Bearer(Source::Header), &orig, None);
        assert!(f.remove.contains(&"authorization".to_string()));
        let keep = plan("upstream_access_token_header: x-token\n");
        let f = forward(&keep, &identity(), &Presented::Bearer(Source::Header), &orig, None);
        assert!(!f.remove.contains(&"authorization".to_string()));
        assert!(f.set_path.is_none());
    }

    #[test]
    fn refresh_token_goes_back_to_the_client_not_upstream() {
        let p = plan("");
        let f = forward(&p, &identity(), &Presented::RefreshToken, &Original::default(), Some("RT2"));
        assert!(f.remove.contains(&"x-refresh-token".to_string()));
        assert_eq!(f.response_set, vec![("x-refresh-token".into(), "RT2".into())]);
    }
}

//! Opaque access tokens: RFC 7662 introspection (authenticated with
//! `introspection_endpoint_auth_method`, mTLS with `tls_client_auth`) and the userinfo
//! endpoint as a token check.

use crate::core::claims::Claims;
use crate::core::client_auth;
use crate::core::config::Plan;
use crate::core::discovery::{Metadata, Which};
use crate::core::error::Error;
use crate::core::idp::{IdpRequest, IdpResponse, Purpose};

/// The introspection request for `token`.
pub fn request(plan: &Plan, meta: &Metadata, token: &str, now_secs: u64, jti: &str) -> Result<IdpRequest, Error> {
    let params = [("token", token), ("token_type_hint", "access_token")];
    client_auth::post(plan, meta, Which::Introspection, plan.introspection_auth, Purpose::Introspection, &params, now_secs, jti)
}

/// Reads the introspection answer: the claims of an active token.
pub fn parse(plan: &Plan, resp: &IdpResponse) -> Result<Claims, Error> {
    match resp.answered(plan.timeout_ms)? {
        200 => {}
        400 | 401 if is_invalid_client(&resp.body) => {
            return Err(Error::ClientRejected { method: plan.introspection_auth.name() })
        }
        401 | 403 => return Err(Error::ClientRejected { method: plan.introspection_auth.name() }),
        _ => return Err(Error::IdpBadResponse("unexpected introspection status")),
    }
    let claims: Claims = serde_json::from_slice(&resp.body)
        .map_err(|_| Error::IdpBadResponse("introspection answer is not a JSON object"))?;
    if plan.introspection_check_active && claims.get("active").and_then(|a| a.as_bool()) != Some(true) {
        return Err(Error::InvalidToken("the token is not active"));
    }
    Ok(claims)
}

fn is_invalid_client(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(|e| e == "invalid_client"))
        .unwrap_or(false)
}

/// The userinfo request: the token itself is the credential (no client authentication,
/// so `idp_cluster`).
pub fn userinfo_request(plan: &Plan, meta: &Metadata, token: &str) -> Result<IdpRequest, Error> {
    let endpoint = meta.userinfo_endpoint.as_ref().ok_or(Error::EndpointMissing("userinfo_endpoint"))?;
    let mut req = IdpRequest::get(Purpose::Userinfo, &plan.idp_cluster, endpoint, plan.timeout_ms);
    req.headers.push(("authorization".into(), format!("Bearer {token}")));
    Ok(req)
}

/// Reads the userinfo answer: 200 with a JSON object accepts the token.
pub fn parse_userinfo(plan: &Plan, resp: &IdpResponse) -> Result<Claims, Error> {
    match resp.answered(plan.timeout_ms)? {
        200 => serde_json::from_slice(&resp.body).map_err(|_| Error::IdpBadResponse("userinfo is not a JSON object")),
        400 | 401 | 403 => Err(Error::InvalidToken("the identity provider's userinfo endpoint rejected the token")),
        _ => Err(Error::IdpBadResponse("unexpected userinfo status")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(extra: &str) -> Plan {
        Plan::parse(
            format!("issuer: https://idp\nidp_cluster: idp\nclient_id: c\nclient_auth: tls_client_auth\ntls_client_auth_cluster: mtls\nauth_methods: [introspection, userinfo]\n{extra}").as_bytes(),
        )
        .unwrap()
    }

    fn meta(p: &Plan) -> Metadata {
        Metadata::parse(p, br#"{"issuer":"https://idp","introspection_endpoint":"https://idp/introspect","userinfo_endpoint":"https://idp/me","mtls_endpoint_aliases":{"introspection_endpoint":"https://mtls.idp/introspect"}}"#).unwrap()
    }

    fn resp(status: u16, body: &str) -> IdpResponse {
        IdpResponse { status: Some(status), body: body.as_bytes().to_vec(), elapsed_ms: 1 }
    }

    #[test]
    fn introspection_goes_over_mtls_to_the_alias() {
        let p = plan("");
        let r = request(&p, &meta(&p), "tok", 0, "j").unwrap();
        assert_eq!((r.cluster.as_str(), r.authority.as_str(), r.path.as_str()), ("mtls", "mtls.idp", "/introspect"));
        let form: Vec<(String, String)> = form_urlencoded::parse(&r.body).into_owned().collect();
        assert_eq!(form[0], ("token".into(), "tok".into()));
        assert!(form.contains(&("client_id".into(), "c".into())));
    }

    #[test]
    fn introspection_answers() {
        let p = plan("");
        assert_eq!(parse(&p, &resp(200, r#"{"active":true,"sub":"john"}"#)).unwrap()["sub"], "john");
        assert_eq!(parse(&p, &resp(200, r#"{"active":false}"#)), Err(Error::InvalidToken("the token is not active")));
        assert_eq!(parse(&p, &resp(401, r#"{"error":"invalid_client"}"#)), Err(Error::ClientRejected { method: "tls_client_auth" }));
        assert!(matches!(parse(&p, &resp(200, "[]")), Err(Error::IdpBadResponse(_))));
        assert!(matches!(parse(&p, &resp(502, "")), Err(Error::IdpUnavailable(_))));
        let lax = plan("introspection_check_active: false\n");
        assert!(parse(&lax, &resp(200, r#"{"active":false}"#)).is_ok());
    }

    #[test]
    fn userinfo() {
        let p = plan("");
        let r = userinfo_request(&p, &meta(&p), "tok").unwrap();
        assert_eq!((r.cluster.as_str(), r.path.as_str(), r.method), ("idp", "/me", "GET"));
        assert!(r.headers.contains(&("authorization".into(), "Bearer tok".into())));
        assert!(parse_userinfo(&p, &resp(200, r#"{"sub":"john"}"#)).is_ok());
        assert!(matches!(parse_userinfo(&p, &resp(401, "")), Err(Error::InvalidToken(_))));
    }
}

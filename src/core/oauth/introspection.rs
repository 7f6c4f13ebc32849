//! Token introspection (RFC 7662) and userinfo (OpenID Connect Core 5.3) as token checks.
//!
//! Introspection is authenticated with `introspection_endpoint_auth_method` (mTLS through
//! the client-certificate upstream for `tls_client_auth`); userinfo carries the token itself
//! and goes through `idp_cluster`.

use crate::core::claims::Claims;
use crate::core::client_auth::ClientSettings;
use crate::core::discovery::{Metadata, Which};
use crate::core::error::{BadAnswer, Error, IdpFault, TokenError};
use crate::core::header::{names, HeaderValue};
use crate::core::idp::{self, IdpCall, IdpResponse, Purpose};

/// The introspection request for `token`.
pub fn request(client: &ClientSettings, meta: &Metadata, token: &str, now_secs: u64, jti: &str) -> Result<IdpCall, Error> {
    let x = &client.extras;
    let params = [(x.introspection_token_param.as_str(), token), ("token_type_hint", x.introspection_hint.as_str())];
    client.post(meta, Which::Introspection, Purpose::Introspection, &params, now_secs, jti)
}

/// Reads the introspection answer: the claims of an active token. With `check_active`
/// (`introspection_check_active`), `active: true` is required.
pub fn parse(client: &ClientSettings, check_active: bool, resp: &IdpResponse) -> Result<Claims, Error> {
    let rejected = || Error::ClientRejected { method: client.introspection_auth.name() };
    match resp.answered(client.timeout_ms)? {
        200 => {}
        s => {
            let e = match (s, idp::oauth_error(&resp.body)) {
                (400 | 401, Some(e)) if e == "invalid_client" => rejected(),
                (401 | 403, _) => rejected(),
                (400..=499, Some(error)) => Error::IdpRefused { error },
                _ => idp::refusal(Purpose::Introspection, s).unwrap_or(BadAnswer::IntrospectionStatus.into()),
            };
            return Err(e);
        }
    }
    let claims: Claims = serde_json::from_slice(&resp.body).map_err(|_| BadAnswer::IntrospectionNotObject)?;
    if check_active && claims.get("active").and_then(|a| a.as_bool()) != Some(true) {
        return Err(TokenError::Inactive.into());
    }
    Ok(claims)
}

/// The userinfo request: `GET` with the token as a bearer, through `idp_cluster`.
pub fn userinfo_request(client: &ClientSettings, meta: &Metadata, token: &str) -> Result<IdpCall, Error> {
    let endpoint = meta.userinfo_endpoint.as_ref().ok_or(IdpFault::EndpointMissing("userinfo_endpoint"))?;
    // The token has no control characters (`credentials::bearer` refuses those).
    let bearer = HeaderValue::new(format!("Bearer {token}")).map_err(|_| TokenError::Malformed)?;
    let extra = &client.extras.userinfo;
    let mut call =
        IdpCall::get(Purpose::Userinfo, &client.idp_cluster, endpoint, client.timeout_ms).with_header(names::AUTHORIZATION, bearer);
    if !extra.args.is_empty() {
        let mut query = form_urlencoded::Serializer::new(String::new());
        extra.append_args(&mut query);
        call.path = idp::with_query(&call.path, &query.finish());
    }
    call.headers.extend(extra.headers.iter().cloned());
    Ok(call)
}

/// Reads the userinfo answer.
pub fn parse_userinfo(timeout_ms: u64, resp: &IdpResponse) -> Result<Claims, Error> {
    match resp.answered(timeout_ms)? {
        200 => serde_json::from_slice(&resp.body).map_err(|_| BadAnswer::UserinfoNotObject.into()),
        400 | 401 | 403 => Err(TokenError::UserinfoRejected.into()),
        s => Err(idp::refusal(Purpose::Userinfo, s).unwrap_or(BadAnswer::UserinfoStatus.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::Plan;

    fn plan(extra: &str) -> Plan {
        Plan::parse(
            format!("issuer: https://idp\nidp_cluster: idp\nclient_id: c\nclient_auth: tls_client_auth\ntls_client_auth_cluster: mtls\nauth_methods: [introspection, userinfo]\n{extra}").as_bytes(),
        )
        .unwrap()
    }

    fn meta() -> Metadata {
        Metadata::parse("https://idp", br#"{"issuer":"https://idp","introspection_endpoint":"https://idp/introspect","userinfo_endpoint":"https://idp/me","mtls_endpoint_aliases":{"introspection_endpoint":"https://mtls.idp/introspect"}}"#).unwrap()
    }

    fn resp(status: u16, body: &str) -> IdpResponse {
        IdpResponse { status: Some(status), body: body.as_bytes().to_vec(), elapsed_ms: 1 }
    }

    #[test]
    fn introspection_goes_over_mtls_to_the_alias() {
        let p = plan("");
        let r = request(&p.policy.client, &meta(), "tok", 0, "j").unwrap();
        assert_eq!((r.cluster.as_str(), r.authority.as_str(), r.path.as_str()), ("mtls", "mtls.idp", "/introspect"));
        let form: Vec<(String, String)> = form_urlencoded::parse(&r.body).into_owned().collect();
        assert_eq!(form[0], ("token".into(), "tok".into()));
        assert!(form.contains(&("client_id".into(), "c".into())));
    }

    #[test]
    fn introspection_and_userinfo_take_their_extra_arguments_and_headers() {
        let p = plan(
            "introspection_hint: urn:ietf:params:oauth:token-type:access_token\nintrospection_token_param_name: access_token\n\
             introspection_post_args_names: [resource]\nintrospection_post_args_values: [api]\n\
             introspection_headers_names: [x-tenant]\nintrospection_headers_values: [t1]\n\
             userinfo_query_args_names: [schema]\nuserinfo_query_args_values: [openid]\n\
             userinfo_headers_names: [x-tenant]\nuserinfo_headers_values: [t2]\n",
        );
        let r = request(&p.policy.client, &meta(), "tok", 0, "j").unwrap();
        let form: Vec<(String, String)> = form_urlencoded::parse(&r.body).into_owned().collect();
        assert_eq!(form[0], ("access_token".into(), "tok".into()));
        assert_eq!(form[1], ("token_type_hint".into(), "urn:ietf:params:oauth:token-type:access_token".into()));
        assert_eq!(form.last(), Some(&("resource".into(), "api".into())));
        assert!(r.headers.iter().any(|(k, v)| k.as_str() == "x-tenant" && v.as_str() == "t1"));
        let r = userinfo_request(&p.policy.client, &meta(), "tok").unwrap();
        assert_eq!(r.path, "/me?schema=openid");
        assert!(r.headers.iter().any(|(k, v)| k.as_str() == "x-tenant" && v.as_str() == "t2"));
    }

    #[test]
    fn introspection_answers() {
        let c = &plan("").policy.client;
        assert_eq!(parse(c, true, &resp(200, r#"{"active":true,"sub":"john"}"#)).unwrap()["sub"], "john");
        assert_eq!(parse(c, true, &resp(200, r#"{"active":false}"#)), Err(TokenError::Inactive.into()));
        assert_eq!(parse(c, true, &resp(401, r#"{"error":"invalid_client"}"#)), Err(Error::ClientRejected { method: "tls_client_auth" }));
        assert_eq!(parse(c, true, &resp(200, "[]")), Err(BadAnswer::IntrospectionNotObject.into()));
        assert_eq!(parse(c, true, &resp(502, "")), Err(Error::Idp(IdpFault::ServerError)));
        assert!(parse(c, false, &resp(200, r#"{"active":false}"#)).is_ok());
        // A bare 4xx is a refusal (401); an OAuth error the client cannot fix stays the IdP's.
        assert_eq!(parse(c, true, &resp(400, "")), Err(Error::Refused { endpoint: "introspection_endpoint", status: 400 }));
        assert_eq!(parse(c, true, &resp(400, "")).unwrap_err().status(), 401);
        assert_eq!(
            parse(c, true, &resp(400, r#"{"error":"invalid_request"}"#)),
            Err(Error::IdpRefused { error: "invalid_request".into() })
        );
        assert_eq!(parse(c, true, &resp(404, "")), Err(BadAnswer::IntrospectionStatus.into()));
    }

    #[test]
    fn userinfo() {
        let p = plan("");
        let r = userinfo_request(&p.policy.client, &meta(), "tok").unwrap();
        assert_eq!((r.cluster.as_str(), r.path.as_str(), r.method), ("idp", "/me", "GET"));
        assert!(r.headers.iter().any(|(k, v)| *k == names::AUTHORIZATION && v.as_str() == "Bearer tok"));
        assert!(parse_userinfo(1000, &resp(200, r#"{"sub":"john"}"#)).is_ok());
        assert_eq!(parse_userinfo(1000, &resp(401, "")), Err(TokenError::UserinfoRejected.into()));
        assert_eq!(parse_userinfo(1000, &resp(451, "")), Err(Error::Refused { endpoint: "userinfo_endpoint", status: 451 }));
        assert_eq!(parse_userinfo(1000, &resp(429, "")), Err(BadAnswer::UserinfoStatus.into()));
    }
}

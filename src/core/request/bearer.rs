//! Bearer access tokens: JWTs verified locally against the IdP's key set (fetched by the
//! request itself when it is missing, re-fetched once when the token names an unknown key),
//! opaque tokens checked by introspection or userinfo; each answer cached as allowed.
//!
//! A JWT's `iss` chooses the key sets first: the policy's own issuer's (the discovered set,
//! then `extra_jwks_uris`), or those of one of its `issuers_allowed`. A token of any other
//! issuer is refused before a key is looked at, and no token is checked with another
//! issuer's keys. Another issuer's documents are fetched by the request like its own.

use std::rc::Rc;

use crate::core::challenge;
use crate::core::claims::Claims;
use crate::core::config::Policy;
use crate::core::credentials::{Found, Source};
use crate::core::docs::{Fetch, Kind, Need, Refetch};
use crate::core::error::{Error, IdpFault, Internal, TokenError};
use crate::core::idp::IdpResponse;
use crate::core::jwt;
use crate::core::log::Level;
use crate::core::method::AuthMethod;
use crate::core::metrics::Method;
use crate::core::oauth::introspection;
use crate::core::upstream::{Identity, Presented};

use super::{Cx, KeysFor, Next, Request, State, Then};

/// A policy's parts that cannot be missing (the plan builds them): `500` rather than a panic.
const BROKEN: Error = Error::Internal(Internal::UnknownPolicy);

impl Request {
    /// A bearer token was found: the method that checks it.
    pub(super) fn bearer_credential(&mut self, p: &Policy, authorization: Option<&str>, found: Found) -> Result<Then, Error> {
        let Found { token, source, jwt: is_jwt } = found;
        self.original.canonical_bearer_header = source == Source::Header
            && p.bearer.header_name.is_none()
            && authorization.and_then(|a| a.strip_prefix("Bearer ")) == Some(token.as_str());
        self.token = token;
        self.presented = Some(Presented::Bearer(source));
        if p.has(AuthMethod::Bearer) && is_jwt {
            Ok(Then::Bearer)
        } else if p.has(AuthMethod::Introspection) {
            Ok(Then::Introspect)
        } else if p.has(AuthMethod::Userinfo) {
            Ok(Then::Userinfo)
        } else {
            Err(TokenError::Malformed.into())
        }
    }

    /// Verifies the JWT: from the cache while its key is still published, else with the key
    /// sets of the issuer its `iss` names, if the policy accepts that issuer.
    pub(super) fn verify_jwt(&mut self, cx: &mut Cx<'_>) -> Next {
        self.method = Method::Auth(AuthMethod::Bearer);
        // A cached verification holds only while its key is still published: a key removed
        // from the JWKS (rotated out, compromised) stops its tokens at once.
        let cached = match cx.caches.jwts.get(self.token.as_str(), cx.now_ms) {
            Some((claims, kid, at)) if docs_at!(cx, *at).and_then(|d| d.current_keys()).is_some_and(|k| k.has_kid(kid)) => {
                Some(claims.clone())
            }
            _ => None,
        };
        if let Some(claims) = cached {
            let identity = Identity { access_token: self.token.clone(), claims, ..Default::default() };
            return self.finish(cx, &identity, None, Vec::new());
        }
        let iss = match jwt::issuer(&self.token) {
            Ok(iss) => iss,
            Err(e) => return self.deny(cx, e.into()),
        };
        let Some(t) = cx.policy.trusted.iter().position(|t| Some(&t.issuer) == iss.as_ref()) else {
            return self.issuer_not_allowed(cx, iss.as_deref());
        };
        self.jwt_issuer = t;
        if t == 0 {
            let meta = metadata!(self, cx, Then::Bearer);
            if meta.jwks_uri.is_none() {
                return self.deny(cx, IdpFault::EndpointMissing("jwks_uri").into());
            }
        }
        self.load_keys(cx, 0)
    }

    /// Refused before any key is looked at; the log names the issuer, never the token.
    fn issuer_not_allowed(&mut self, cx: &mut Cx<'_>, iss: Option<&str>) -> Next {
        let shown: String = iss.unwrap_or("(none)").chars().filter(|c| !c.is_control()).take(200).collect();
        let e = Error::from(TokenError::IssuerNotAllowed);
        cx.log.push(Level::Info, format!("401 invalid_token: the token's issuer `{shown}` is not allowed (`issuer`, `issuers_allowed`)"));
        self.answer(cx, challenge::reply(&e, &cx.policy.challenge))
    }

    /// The token issuer's key sets from the `from`th on that this worker lacks, each fetched
    /// at most once for the request (its discovery first, for another issuer); then checks.
    fn load_keys(&mut self, cx: &mut Cx<'_>, from: usize) -> Next {
        let p = cx.policy;
        let Some(t) = p.trusted.get(self.jwt_issuer) else { return self.deny(cx, BROKEN) };
        for (i, &d) in t.docs.iter().enumerate().skip(from) {
            let Some(docs) = docs_at!(cx, d) else { continue };
            if docs.current_keys().is_some() {
                continue;
            }
            match docs.keys_or_discovery(cx.store, cx.now_ms) {
                Need::Ready(_) => {}
                Need::Fetch(fetch, call) => return self.await_keys(cx, fetch, call, KeysFor::Load(i)),
                // An extra key set that is not there: the others may have the key.
                Need::Unavailable if i > 0 => {}
                Need::Unavailable => {
                    let e = unavailable(docs.current_metadata().is_none() && docs.settings().jwks.is_none());
                    return self.deny(cx, e);
                }
            }
        }
        self.check_jwt(cx, 0)
    }

    /// Verifies with the first of the issuer's key sets that has the token's key (never
    /// another issuer's); when none has it, re-fetches them from the `refetch`th on, one
    /// at a time (each throttled for the whole process).
    fn check_jwt(&mut self, cx: &mut Cx<'_>, refetch: usize) -> Next {
        let p = cx.policy;
        let Some(t) = p.trusted.get(self.jwt_issuer) else { return self.deny(cx, BROKEN) };
        for &d in &t.docs {
            let Some(keys) = docs_at!(cx, d).and_then(|x| x.current_keys()) else { continue };
            match keys.verify(&self.token, &t.issuer, p.leeway, cx.now()) {
                Err(TokenError::UnknownKey) => {}
                Ok(claims) => return self.verified(cx, claims, d),
                Err(e) => return self.deny(cx, e.into()),
            }
        }
        for (i, &d) in t.docs.iter().enumerate().skip(refetch) {
            let Some(docs) = docs_at!(cx, d) else { continue };
            match docs.refetch_keys(cx.store, cx.now_ms) {
                Refetch::Adopted(_) => return self.check_jwt(cx, i + 1),
                Refetch::Fetch(fetch, call) => return self.await_keys(cx, fetch, call, KeysFor::Refetch(i)),
                Refetch::No => {}
            }
        }
        self.deny(cx, TokenError::UnknownKey.into())
    }

    /// Caches the claims (with the key set `d` whose key verified them) and forwards.
    fn verified(&mut self, cx: &mut Cx<'_>, claims: Claims, d: usize) -> Next {
        let claims = Rc::new(claims);
        if let (Some(exp), Some(kid)) = (claims.get("exp").and_then(|e| e.as_u64()), jwt::kid(&self.token)) {
            cx.caches.jwts.put(self.token.as_str().into(), (claims.clone(), kid, d), exp.saturating_mul(1000), cx.now_ms);
        }
        let identity = Identity { access_token: self.token.clone(), claims, ..Default::default() };
        self.finish(cx, &identity, None, Vec::new())
    }

    pub(super) fn await_keys(&mut self, cx: &mut Cx<'_>, fetch: Fetch, call: crate::core::idp::IdpCall, then: KeysFor) -> Next {
        let call = self.bounded(cx, call);
        self.state = State::Jwks { fetch, then };
        self.call(call)
    }

    pub(super) fn jwks_answered(&mut self, cx: &mut Cx<'_>, fetch: Fetch, then: KeysFor, resp: &IdpResponse) -> Next {
        let (at, refetch) = match then {
            KeysFor::Code(code) => {
                return match cx.docs.offer(cx.store, fetch, resp, cx.now_ms) {
                    Ok(()) => self.exchange_code(cx, code),
                    Err(_) => self.respond_error(cx, crate::core::error::LoginError::KeysUnavailable.into(), false),
                };
            }
            KeysFor::Load(at) => (at, false),
            KeysFor::Refetch(at) => (at, true),
        };
        let p = cx.policy;
        let Some(docs) = p.trusted.get(self.jwt_issuer).and_then(|t| t.docs.get(at)).and_then(|&d| docs_at!(cx, d)) else {
            return self.deny(cx, BROKEN);
        };
        let discovery = fetch.kind() == Kind::Discovery;
        let offered = docs.offer(cx.store, fetch, resp, cx.now_ms).is_ok();
        match (refetch, offered) {
            // A failed re-fetch leaves the key unknown; a failed first load, no keys (unless
            // it was an extra key set: the others may have the key).
            (true, _) => self.check_jwt(cx, at + 1),
            (false, true) => self.load_keys(cx, at),
            (false, false) if at == 0 => self.deny(cx, unavailable(discovery)),
            (false, false) => self.load_keys(cx, at + 1),
        }
    }

    pub(super) fn introspect(&mut self, cx: &mut Cx<'_>) -> Next {
        self.method = Method::Auth(AuthMethod::Introspection);
        if let Some(claims) = cx.caches.introspections.get(self.token.as_str(), cx.now_ms) {
            let identity = introspected(&self.token, claims.clone());
            return self.finish(cx, &identity, None, Vec::new());
        }
        let meta = metadata!(self, cx, Then::Introspect);
        let jti = cx.jti();
        let call = introspection::request(&cx.policy.client, &meta, &self.token, cx.now(), &jti);
        self.call_or_deny(cx, State::Introspection, call)
    }

    pub(super) fn introspection_answered(&mut self, cx: &mut Cx<'_>, resp: &IdpResponse) -> Next {
        let p = cx.policy;
        match introspection::parse(&p.client, p.introspection_check_active, resp) {
            Ok(claims) => {
                let claims = Rc::new(claims);
                if p.cache_introspection {
                    if let Some(exp) = claims.get("exp").and_then(|e| e.as_u64()) {
                        cx.caches.introspections.put(self.token.as_str().into(), claims.clone(), exp.saturating_mul(1000), cx.now_ms);
                    }
                }
                let identity = introspected(&self.token, claims);
                self.finish(cx, &identity, None, Vec::new())
            }
            Err(e) => self.deny(cx, e),
        }
    }

    pub(super) fn userinfo(&mut self, cx: &mut Cx<'_>) -> Next {
        self.method = Method::Auth(AuthMethod::Userinfo);
        let meta = metadata!(self, cx, Then::Userinfo);
        let call = introspection::userinfo_request(&cx.policy.client, &meta, &self.token);
        self.call_or_deny(cx, State::Userinfo, call)
    }

    pub(super) fn userinfo_answered(&mut self, cx: &mut Cx<'_>, resp: &IdpResponse) -> Next {
        match introspection::parse_userinfo(cx.policy.timeout_ms, resp) {
            Ok(info) => {
                let info = Rc::new(info);
                let identity =
                    Identity { access_token: self.token.clone(), claims: info.clone(), user_info: Some(info), ..Default::default() };
                self.finish(cx, &identity, None, Vec::new())
            }
            Err(e) => self.deny(cx, e),
        }
    }
}

/// Why a token cannot be checked: its issuer's discovery document, or its keys, are not there.
fn unavailable(discovery: bool) -> Error {
    if discovery {
        Error::DiscoveryUnavailable
    } else {
        TokenError::KeysUnavailable.into()
    }
}

fn introspected(token: &str, claims: Rc<Claims>) -> Identity {
    Identity { access_token: token.to_string(), claims: claims.clone(), introspection: Some(claims), ..Default::default() }
}

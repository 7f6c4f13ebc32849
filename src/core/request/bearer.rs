//! Bearer access tokens: JWTs verified locally against the IdP's key set (fetched by the
//! request itself when it is missing, re-fetched once when the token names an unknown key),
//! opaque tokens checked by introspection or userinfo; each answer cached as allowed.

use std::rc::Rc;

use crate::core::claims::Claims;
use crate::core::config::Policy;
use crate::core::credentials::Source;
use crate::core::docs::{Fetch, Need, Refetch};
use crate::core::error::{Error, IdpFault, TokenError};
use crate::core::idp::IdpResponse;
use crate::core::jwt::{self, KeySet};
use crate::core::method::AuthMethod;
use crate::core::metrics::Method;
use crate::core::oauth::introspection;
use crate::core::upstream::{Identity, Presented};

use super::{Cx, KeysFor, Next, Request, State, Then};

impl Request {
    /// A bearer token was found: the method that checks it.
    pub(super) fn bearer_credential(
        &mut self,
        p: &Policy,
        authorization: Option<&str>,
        token: String,
        source: Source,
    ) -> Result<Then, Error> {
        let is_jwt = jwt::looks_like_jwt(&token);
        self.original.canonical_bearer_header =
            source == Source::Header && authorization.and_then(|a| a.strip_prefix("Bearer ")) == Some(token.as_str());
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

    /// Verifies the JWT: from the cache while its key is still published, else with the
    /// key set (`refreshed` once it was re-fetched for this token).
    pub(super) fn verify_jwt(&mut self, cx: &mut Cx<'_>, refreshed: bool) -> Next {
        self.method = Method::Auth(AuthMethod::Bearer);
        // A cached verification holds only while its key is still published: a key removed
        // from the JWKS (rotated out, compromised) stops its tokens at once.
        let current = cx.docs.current_keys();
        if let (Some((claims, kid)), Some(keys)) = (cx.caches.jwts.get(self.token.as_str(), cx.now_ms), current.as_ref()) {
            if keys.has_kid(kid) {
                let identity = Identity { access_token: self.token.clone(), claims: claims.clone(), ..Default::default() };
                return self.finish(cx, &identity, None, Vec::new());
            }
        }
        let meta = metadata!(self, cx, Then::Bearer);
        if meta.jwks_uri.is_none() {
            return self.deny(cx, IdpFault::EndpointMissing("jwks_uri").into());
        }
        let keys = match cx.docs.keys(cx.store, cx.now_ms) {
            Need::Ready(k) => k,
            Need::Fetch(fetch, call) => return self.await_keys(cx, fetch, call, KeysFor::Bearer, false),
            Need::Unavailable => return self.deny(cx, TokenError::KeysUnavailable.into()),
        };
        self.check_jwt(cx, &keys, refreshed)
    }

    fn check_jwt(&mut self, cx: &mut Cx<'_>, keys: &KeySet, refreshed: bool) -> Next {
        let p = cx.policy;
        match keys.verify(&self.token, &p.issuer, p.leeway, cx.now()) {
            Ok(claims) => {
                let claims = Rc::new(claims);
                if let (Some(exp), Some(kid)) = (claims.get("exp").and_then(|e| e.as_u64()), jwt::kid(&self.token)) {
                    cx.caches.jwts.put(self.token.as_str().into(), (claims.clone(), kid), exp.saturating_mul(1000), cx.now_ms);
                }
                let identity = Identity { access_token: self.token.clone(), claims, ..Default::default() };
                self.finish(cx, &identity, None, Vec::new())
            }
            Err(TokenError::UnknownKey) if !refreshed => match cx.docs.refetch_keys(cx.store, cx.now_ms) {
                Refetch::Adopted(newer) => self.check_jwt(cx, &newer, true),
                Refetch::Fetch(fetch, call) => self.await_keys(cx, fetch, call, KeysFor::Bearer, true),
                Refetch::No => self.deny(cx, TokenError::UnknownKey.into()),
            },
            Err(e) => self.deny(cx, e.into()),
        }
    }

    pub(super) fn await_keys(
        &mut self,
        cx: &mut Cx<'_>,
        fetch: Fetch,
        call: crate::core::idp::IdpCall,
        then: KeysFor,
        refetch: bool,
    ) -> Next {
        let call = self.bounded(cx, call);
        self.state = State::Jwks { fetch, then, refetch };
        self.call(call)
    }

    pub(super) fn jwks_answered(&mut self, cx: &mut Cx<'_>, fetch: Fetch, then: KeysFor, refetch: bool, resp: &IdpResponse) -> Next {
        let offered = cx.docs.offer(cx.store, fetch, resp, cx.now_ms);
        let keys = cx.docs.current_keys();
        match then {
            KeysFor::Bearer => match keys {
                // A failed re-fetch leaves the key unknown; a failed first load, no keys.
                Some(keys) if offered.is_ok() || refetch => self.check_jwt(cx, &keys, true),
                _ => self.deny(cx, TokenError::KeysUnavailable.into()),
            },
            KeysFor::Code(code) => match offered {
                Ok(()) => self.exchange_code(cx, code),
                Err(_) => self.respond_error(cx, crate::core::error::LoginError::KeysUnavailable.into(), false),
            },
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

fn introspected(token: &str, claims: Rc<Claims>) -> Identity {
    Identity { access_token: token.to_string(), claims: claims.clone(), introspection: Some(claims), ..Default::default() }
}

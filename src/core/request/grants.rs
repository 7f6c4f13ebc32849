//! Grants the filter runs for the request: password and client credentials (from
//! `Authorization: Basic`, results cached by a digest of the credentials) and the
//! refresh_token method (the rotated refresh token goes back to the client).

use std::rc::Rc;

use crate::core::idp::IdpResponse;
use crate::core::jwt;
use crate::core::method::AuthMethod;
use crate::core::metrics::Method;
use crate::core::oauth::token::{self, Grant};
use crate::core::upstream::Identity;

use super::{Cx, Next, Request, State, Then};

impl Request {
    pub(super) fn grant(&mut self, cx: &mut Cx<'_>, grant: Grant) -> Next {
        let p = cx.policy;
        self.method = Method::Auth(match grant {
            Grant::Password(_) => AuthMethod::Password,
            Grant::ClientCredentials(_) => AuthMethod::ClientCredentials,
            Grant::RefreshToken(_) => AuthMethod::RefreshToken,
            Grant::AuthorizationCode { .. } => AuthMethod::AuthorizationCode,
        });
        if p.cache_tokens {
            if let Some(identity) = grant.cache_key(&p.client.client.id, &p.scope).and_then(|k| cx.caches.grants.get(&k, cx.now_ms)) {
                let identity = identity.clone();
                return self.finish(cx, &identity, None, Vec::new());
            }
        }
        let meta = metadata!(self, cx, Then::Grant(grant));
        let jti = cx.jti();
        let call = token::token_request(&p.client, &meta, &grant, &p.scope, None, cx.now(), &jti);
        self.call_or_deny(cx, State::Token(grant), call)
    }

    pub(super) fn token_answered(&mut self, cx: &mut Cx<'_>, grant: Grant, resp: &IdpResponse) -> Next {
        let p = cx.policy;
        let tokens = match token::parse_token_response(&grant, grant.auth(&p.client), resp, p.timeout_ms) {
            Ok(t) => t,
            Err(e) => return self.deny(cx, e),
        };
        let claims = jwt::grant_claims(&tokens.access_token, tokens.id_token.as_deref(), tokens.scope.as_deref());
        let identity = Rc::new(Identity {
            access_token: tokens.access_token.clone(),
            id_token: tokens.id_token.clone(),
            claims: Rc::new(claims),
            ..Default::default()
        });
        if let (true, Some(key), Some(secs)) = (p.cache_tokens, grant.cache_key(&p.client.client.id, &p.scope), tokens.expires_in) {
            let exp = cx.now_ms.saturating_add(secs.saturating_mul(1000));
            cx.caches.grants.put(key, identity.clone(), exp, cx.now_ms);
        }
        let rotated = match grant {
            Grant::RefreshToken(_) => tokens.refresh_token.as_deref(),
            _ => None,
        };
        self.finish(cx, &identity, rotated, Vec::new())
    }
}

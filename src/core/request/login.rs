//! The browser's login: a redirect to the IdP with state, nonce and PKCE (the login in
//! progress sealed in a short-lived cookie), then the callback's code exchange, the ID
//! token's validation and the new session. A failed login is a `401`, never a redirect
//! loop.

use crate::core::challenge;
use crate::core::docs::Need;
use crate::core::error::{Error, LoginError};
use crate::core::header::Headers;
use crate::core::idp::IdpResponse;
use crate::core::method::AuthMethod;
use crate::core::metrics::Method;
use crate::core::oauth::authorize::{self, Pending};
use crate::core::oauth::token;
use crate::core::reply::{set_cookie, Reply};
use crate::core::session::Session;

use super::{Code, Cx, KeysFor, Next, Request, State, Then};

impl Request {
    /// Redirects a browser to the IdP (setting the authorization cookie), or answers 401.
    /// `clear` are cookies to expire along (a dead session).
    pub(super) fn login_or_deny(&mut self, cx: &mut Cx<'_>, clear: Headers) -> Next {
        let p = cx.policy;
        let (Some(s), true, true) = (p.sessions.as_ref(), p.has(AuthMethod::AuthorizationCode), self.browser) else {
            let reply = challenge::reply_with(&Error::MissingCredentials, &p.challenge, clear);
            return self.answer_error(cx, &Error::MissingCredentials, reply);
        };
        self.method = Method::Auth(AuthMethod::AuthorizationCode);
        let meta = metadata!(self, cx, Then::Login { clear });
        let mut random = [0u8; 48];
        (cx.random)(&mut random);
        let uri = self.original.path.clone().unwrap_or_else(|| "/".into());
        let pending = Pending::new(&random, &uri, cx.now());
        let location = match authorize::authorize_url(&p.login, &meta, &pending) {
            Ok(u) => u,
            Err(e) => return self.deny(cx, e),
        };
        let nonce = cx.nonce();
        let sealed = s.sealer.seal(&s.authorization_cookie_name, &serde_json::to_vec(&pending).unwrap_or_default(), nonce);
        let mut cookies: Headers = s.authorization(&sealed, self.https).into_iter().map(set_cookie).collect();
        cookies.extend(clear);
        self.answer(cx, Reply::redirect(location, cookies))
    }

    /// Exchanges the callback's code once the discovery document and the key set are there
    /// (the ID token is checked with the keys: they are fetched before the code is spent).
    pub(super) fn exchange_code(&mut self, cx: &mut Cx<'_>, code: Code) -> Next {
        self.method = Method::Auth(AuthMethod::AuthorizationCode);
        let meta = metadata!(self, cx, Then::Code(code));
        match cx.docs.keys(cx.store, cx.now_ms) {
            Need::Ready(_) => {}
            Need::Fetch(fetch, call) => return self.await_keys(cx, fetch, call, KeysFor::Code(code)),
            Need::Unavailable => return self.respond_error(cx, LoginError::KeysUnavailable.into(), false),
        }
        let p = cx.policy;
        let jti = cx.jti();
        match token::token_request(&p.client, &meta, &code.grant, "", p.login.redirect_uris.first(), cx.now(), &jti) {
            Ok(call) => {
                self.state = State::Code(code);
                self.call(call)
            }
            Err(e) => self.respond_error(cx, e, false),
        }
    }

    /// Reads the code exchange: validates the ID token, creates the session, redirects to
    /// the original URL.
    pub(super) fn code_answered(&mut self, cx: &mut Cx<'_>, code: Code, resp: &IdpResponse) -> Next {
        let p = cx.policy;
        let tokens = match token::parse_token_response(&code.grant, p.client.token_auth, resp, p.timeout_ms) {
            Ok(t) => t,
            Err(e) => return self.respond_error(cx, e, false),
        };
        let Some(id_token) = tokens.id_token.as_deref() else {
            return self.respond_error(cx, LoginError::NoIdToken.into(), false);
        };
        let Some(keys) = cx.docs.current_keys() else {
            return self.respond_error(cx, LoginError::KeysUnavailable.into(), false);
        };
        let claims = match authorize::validate_id_token(&p.login, &keys, id_token, &code.pending.nonce, cx.now()) {
            Ok(c) => c,
            Err(e) => return self.respond_error(cx, e.into(), false),
        };
        let now = cx.now();
        let session = Session {
            sub: claims.get("sub").and_then(|s| s.as_str()).unwrap_or_default().to_string(),
            at: tokens.access_token.clone(),
            rt: tokens.refresh_token.clone(),
            idt: Some(id_token.to_string()),
            exp: tokens.expires_in.map(|e| now.saturating_add(e)).unwrap_or(0),
            iat: now,
            ren: now,
        };
        let mut cookies = self.store_session(cx, &session);
        cookies.extend(self.clear_authorization(cx));
        let location = match crate::core::header::HeaderValue::new(code.pending.uri.clone()) {
            Ok(l) => l,
            Err(_) => crate::core::header::HeaderValue::from(ROOT),
        };
        self.answer(cx, Reply::redirect(location, cookies))
    }

    /// An error answer that also expires the authorization cookie (no replay) and, with
    /// `clear_session`, the session.
    pub(super) fn respond_error(&mut self, cx: &mut Cx<'_>, e: Error, clear_session: bool) -> Next {
        let mut cookies = Vec::new();
        if cx.policy.sessions.is_some() {
            cookies.extend(self.clear_authorization(cx));
            if clear_session {
                cookies.extend(self.clear_session(cx));
            }
        }
        let reply = challenge::reply_with(&e, &cx.policy.challenge, cookies);
        self.answer_error(cx, &e, reply)
    }
}

const ROOT: crate::core::header::Static = crate::core::header::HeaderValue::from_static("/");

//! Session cookies on the request path: the browser's logout, the login callback and the
//! session cookie are looked at first, in that order; an expired access token is refreshed
//! (and the cookie rewritten); a session past its timeouts is no session.

use std::rc::Rc;

use crate::core::cookies;
use crate::core::error::{Error, TokenError};
use crate::core::header::Headers;
use crate::core::idp::IdpResponse;
use crate::core::jwt;
use crate::core::method::AuthMethod;
use crate::core::metrics::Method;
use crate::core::oauth::authorize::{self, Pending};
use crate::core::oauth::token::{self, Grant};
use crate::core::reply::set_cookie;
use crate::core::session::{Chunks, Session, SessionSettings};
use crate::core::upstream::{Identity, Presented};

use super::{Code, Cx, Next, Request, State, Then};

/// How long an opened session cookie stays in the cache.
const SESSION_CACHE_MS: u64 = 300_000;

impl Request {
    /// Logout, the login callback and session cookies, in that order. `None` when none of
    /// them applies and the other credentials should be looked at.
    pub(super) fn start_browser(&mut self, cx: &mut Cx<'_>, method: &str) -> Option<Next> {
        let p = cx.policy;
        let s = p.sessions.as_ref()?;
        let cookie = self.original.cookie.clone().unwrap_or_default();
        let path = self.original.path.clone().unwrap_or_else(|| "/".into());
        let opened = self.open_session(cx, s, &cookie);
        if p.logout.matches(method, &path) {
            return Some(self.logout(cx, opened.map(|open| open.0.clone())));
        }
        if p.has(AuthMethod::AuthorizationCode) {
            if let Some(cb) = authorize::callback(&p.login, &path) {
                self.method = Method::Auth(AuthMethod::AuthorizationCode);
                let now = cx.now();
                let pending = cookies::get(&cookie, &s.authorization_cookie_name)
                    .and_then(|v| s.sealer.open(&s.authorization_cookie_name, v))
                    .and_then(|b| serde_json::from_slice::<Pending>(&b).ok())
                    .filter(|pending| now.saturating_sub(pending.iat) <= s.authorization_ttl);
                return Some(match authorize::check_callback(&cb, pending, &p.issuer) {
                    Ok((code, pending)) => {
                        let grant = Grant::AuthorizationCode { code, verifier: pending.verifier.clone() };
                        self.exchange_code(cx, Code { grant, pending })
                    }
                    Err(e) => self.respond_error(cx, e.into(), false),
                });
            }
        }
        let opened = opened?;
        let (session, identity) = (&opened.0, &opened.1);
        self.presented = Some(Presented::Session);
        self.method = Method::Auth(AuthMethod::Session);
        let now = cx.now();
        let expired = session.exp != 0 && session.exp <= now.saturating_add(p.leeway.max(1));
        if !expired {
            let renew = session.due_for_renewal(&s.timeouts, now);
            let cookies = if renew { self.store_session(cx, &Session { ren: now, ..session.clone() }) } else { Vec::new() };
            return Some(self.finish(cx, identity, None, cookies));
        }
        if s.refresh_tokens && session.rt.is_some() {
            return Some(self.refresh_session(cx, session.clone()));
        }
        // Expired without a way to refresh: a new login (or other credentials).
        self.presented = None;
        None
    }

    /// The opened session and what it establishes, from the cache or by decrypting;
    /// `None` when there is none, or it is dead (timeouts).
    fn open_session(&mut self, cx: &mut Cx<'_>, s: &SessionSettings, cookie: &str) -> Option<Rc<(Session, Identity)>> {
        let chunks = Chunks::find(cookie, &s.cookie_name);
        self.session_chunks = chunks.present();
        let sealed = chunks.join()?;
        let now_ms = cx.now_ms;
        let open = match cx.caches.sessions.get(sealed.as_str(), now_ms) {
            Some(open) => open.clone(),
            None => {
                let session: Session = serde_json::from_slice(&s.sealer.open(&s.cookie_name, &sealed)?).ok()?;
                let identity = session_identity(&session);
                let open = Rc::new((session, identity));
                cx.caches.sessions.put(sealed.into(), open.clone(), now_ms.saturating_add(SESSION_CACHE_MS), now_ms);
                open
            }
        };
        open.0.alive(&s.timeouts, cx.now()).then_some(open)
    }

    pub(super) fn refresh_session(&mut self, cx: &mut Cx<'_>, session: Session) -> Next {
        self.method = Method::Auth(AuthMethod::Session);
        let meta = metadata!(self, cx, Then::Refresh(session));
        let jti = cx.jti();
        let grant = Grant::RefreshToken(session.rt.clone().unwrap_or_default());
        let call = token::token_request(&cx.policy.client, &meta, &grant, "", None, cx.now(), &jti);
        self.call_or_deny(cx, State::Refresh(session), call)
    }

    pub(super) fn refresh_answered(&mut self, cx: &mut Cx<'_>, old: Session, resp: &IdpResponse) -> Next {
        let p = cx.policy;
        let grant = Grant::RefreshToken(old.rt.clone().unwrap_or_default());
        match token::parse_token_response(&grant, p.client.token_auth, resp, p.timeout_ms) {
            Ok(tokens) => {
                let now = cx.now();
                let session = Session {
                    at: tokens.access_token.clone(),
                    rt: tokens.refresh_token.clone().or(old.rt),
                    idt: tokens.id_token.clone().or(old.idt),
                    exp: tokens.expires_in.map(|e| now.saturating_add(e)).unwrap_or(0),
                    ren: now,
                    ..old
                };
                let cookies = self.store_session(cx, &session);
                self.finish(cx, &session_identity(&session), None, cookies)
            }
            Err(Error::InvalidToken(TokenError::RefreshRejected) | Error::InvalidCredentials) => {
                // The refresh token is gone: log in again (browser) or 401.
                let clear = self.clear_session(cx);
                self.presented = None;
                self.login_or_deny(cx, clear)
            }
            Err(e) => self.deny(cx, e),
        }
    }

    /// `Set-Cookie` headers that store `session`, expiring stale chunks.
    pub(super) fn store_session(&self, cx: &mut Cx<'_>, session: &Session) -> Headers {
        let Some(s) = cx.policy.sessions.as_ref() else { return Vec::new() };
        let nonce = cx.nonce();
        s.store(session, nonce, self.session_chunks, self.https).into_iter().map(set_cookie).collect()
    }

    /// `Set-Cookie` headers that delete the session the client sent.
    pub(super) fn clear_session(&self, cx: &Cx<'_>) -> Headers {
        let Some(s) = cx.policy.sessions.as_ref() else { return Vec::new() };
        s.clear(self.session_chunks, self.https).into_iter().map(set_cookie).collect()
    }

    /// The `Set-Cookie` header that deletes the login-in-progress cookie.
    pub(super) fn clear_authorization(&self, cx: &Cx<'_>) -> Headers {
        let Some(s) = cx.policy.sessions.as_ref() else { return Vec::new() };
        s.clear_authorization(self.https).into_iter().map(set_cookie).collect()
    }
}

/// What a session establishes: its tokens, and the access token's claims when it is a JWT,
/// else the ID token's (checked at the login).
pub(super) fn session_identity(s: &Session) -> Identity {
    let mut claims = jwt::grant_claims(&s.at, s.idt.as_deref(), None);
    claims.entry("sub").or_insert_with(|| s.sub.clone().into());
    Identity { access_token: s.at.clone(), id_token: s.idt.clone(), claims: Rc::new(claims), ..Default::default() }
}

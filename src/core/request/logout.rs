//! Logout: revoke the session's tokens one call at a time (RFC 7009, with the configured
//! client authentication), then expire the cookies and send the browser to the IdP's
//! `end_session_endpoint` (or `logout_redirect_uri`).

use crate::core::header::Headers;
use crate::core::idp::IdpResponse;
use crate::core::metrics::Method;
use crate::core::oauth::logout;
use crate::core::reply::Reply;
use crate::core::session::Session;

use super::{Cx, Next, Request, Revoking, State, Then};

impl Request {
    /// Starts a logout: revocations first (when configured), then cookies and redirect.
    pub(super) fn logout(&mut self, cx: &mut Cx<'_>, session: Option<Session>) -> Next {
        self.method = Method::Logout;
        let l = &cx.policy.logout;
        let mut queue = Vec::new();
        let mut id_token = None;
        if let Some(s) = session {
            if l.revoke && l.revoke_refresh_token {
                if let Some(rt) = &s.rt {
                    queue.push((rt.clone(), "refresh_token"));
                }
            }
            if l.revoke && l.revoke_access_token {
                queue.push((s.at.clone(), "access_token"));
            }
            id_token = s.idt;
        }
        self.revoke_next(cx, Revoking { queue, id_token })
    }

    pub(super) fn revoke_next(&mut self, cx: &mut Cx<'_>, r: Revoking) -> Next {
        let Some((token, hint)) = r.queue.first().cloned() else { return self.logged_out(cx, r.id_token) };
        let meta = metadata!(self, cx, Then::Revoke(r));
        let jti = cx.jti();
        match logout::revocation_request(&cx.policy.client, &meta, &token, hint, cx.now(), &jti) {
            Ok(call) => {
                self.state = State::Revoking(r);
                self.call(call)
            }
            Err(e) => self.respond_error(cx, e, true),
        }
    }

    pub(super) fn revocation_answered(&mut self, cx: &mut Cx<'_>, mut r: Revoking, resp: &IdpResponse) -> Next {
        if let Err(e) = logout::revocation_result(&cx.policy.client, resp) {
            return self.respond_error(cx, e, true);
        }
        if !r.queue.is_empty() {
            r.queue.remove(0);
        }
        self.revoke_next(cx, r)
    }

    /// Cookies expired; to the IdP's logout, `logout_redirect_uri`, or a JSON answer.
    fn logged_out(&mut self, cx: &mut Cx<'_>, id_token: Option<String>) -> Next {
        let mut headers: Headers = self.clear_session(cx);
        headers.extend(self.clear_authorization(cx));
        let p = cx.policy;
        let meta = cx.docs.current_metadata();
        match p.logout.after(&p.client.client.id, meta.as_deref(), id_token.as_deref()) {
            Some(location) => self.answer(cx, Reply::redirect(location, headers)),
            None => self.answer(cx, Reply::json(200, headers, &serde_json::json!({"logged_out": true}))),
        }
    }
}

"""API token auth methods: bearer JWT, introspection, userinfo, refresh_token, claim rules,
upstream headers, hide_credentials (Kong's `openid-connect` names), in real Envoy against the
real IdP.

Tokens come from the IdP's password grant (`jwt_idp` issues RS256 JWT access tokens, `idp`
opaque ones) or are crafted with `harness.idp_jwt`/`harness.make_jwt` (signed with the IdP's
own key from the test PKI, or deliberately broken) for the negative cases.
"""
from __future__ import annotations

import base64
import json
import re
import time

import pytest

import harness
from harness import JWT_AUDIENCE, idp_jwt, make_jwt


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def api_config(idp, methods=("bearer",), **extra):
    """The filter as an API gateway: its own client is client-tls-auth over mTLS."""
    return harness.mtls_plugin_config(idp, methods, **extra)


def bearer(token: str) -> dict:
    return {"authorization": f"Bearer {token}"}


def describe(r) -> str:
    return f"{r.status_code} www-authenticate={r.headers.get('www-authenticate')!r} body={r.text[:500]}"


def upstream_headers(r) -> dict:
    assert r.status_code == 200, describe(r)
    return r.json()["headers"]


def assert_forwarded(r, token: str) -> dict:
    """200 from the echo upstream, which received the token as `Authorization: Bearer`."""
    headers = upstream_headers(r)
    assert headers.get("authorization") == f"Bearer {token}", headers
    return headers


def assert_invalid_token(r, why: str = "") -> None:
    assert r.status_code == 401, f"{why}: {describe(r)}"
    challenge = r.headers.get("www-authenticate", "")
    assert 'Bearer realm="oidc"' in challenge, f"{why}: {challenge}"
    assert 'error="invalid_token"' in challenge, f"{why}: {challenge}"
    body = r.json()
    assert body["error"] == "invalid_token", f"{why}: {body}"
    # Kong's display_errors: false: no description, Kong's message
    assert body.get("message") == "Unauthorized" and "error_description" not in body, body
    assert "error_description" not in challenge, challenge
    assert "headers" not in body  # the echo upstream was not reached


def assert_insufficient_scope(r, why: str = "") -> None:
    assert r.status_code == 403, f"{why}: {describe(r)}"
    challenge = r.headers.get("www-authenticate", "")
    assert 'Bearer realm="oidc"' in challenge and 'error="insufficient_scope"' in challenge, f"{why}: {challenge}"
    body = r.json()
    assert body["error"] == "insufficient_scope" and body.get("message") == "Forbidden", f"{why}: {body}"


def count(idp, line: str) -> int:
    return idp.log().count(line)


INTROSPECTION = "IDP POST /token/introspection "
USERINFO = "IDP GET /me "


def jwt_for(idp, username="john", scope="openid profile email api:read", **kw) -> str:
    token = idp.password_grant("client-secret-basic", username=username, scope=scope, **kw)["access_token"]
    assert token.count(".") == 2, "jwt_idp should issue JWT access tokens"
    return token


def opaque_for(idp, username="john", scope="openid profile email", client_id="client-secret-basic", **kw) -> str:
    token = idp.password_grant(client_id, username=username, scope=scope, token_format="opaque",
                               **kw)["access_token"]
    assert "." not in token
    return token


def b64json(value: str) -> dict:
    return json.loads(base64.b64decode(value + "=" * (-len(value) % 4)))


# ---------------------------------------------------------------------------
# bearer: JWT access tokens verified locally against the JWKS
# ---------------------------------------------------------------------------
def test_bearer_jwt_is_verified_locally_and_forwarded(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp), idp=jwt_idp)
    token = jwt_for(jwt_idp)
    introspections, userinfos = count(jwt_idp, INTROSPECTION), count(jwt_idp, USERINFO)
    for _ in range(2):
        assert_forwarded(proxy.get("/api", headers=bearer(token)), token)
    # verified against the JWKS: no introspection or userinfo call
    assert count(jwt_idp, INTROSPECTION) == introspections
    assert count(jwt_idp, USERINFO) == userinfos
    assert "IDP GET /jwks " in jwt_idp.log()
    # jane's token works too, the scheme is case-insensitive
    jane = jwt_for(jwt_idp, "jane")
    assert_forwarded(proxy.get("/", headers={"authorization": f"bearer {jane}"}), jane)


def test_no_token_is_401_without_error_attribute(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp), idp=jwt_idp)
    r = proxy.get("/")
    assert r.status_code == 401, describe(r)
    challenge = r.headers.get("www-authenticate", "")
    assert challenge.startswith('Bearer realm="oidc"'), challenge
    assert "error=" not in challenge
    assert "error" in r.json()
    # Basic credentials are not a bearer token, and bearer-only config has no password method
    r = proxy.get("/", auth=("john", "doe"))
    assert r.status_code == 401, describe(r)
    assert "headers" not in r.json()


def test_bad_bearer_tokens_are_401_invalid_token(envoy, jwt_idp, upstream, pki):
    proxy = envoy(api_config(jwt_idp), idp=jwt_idp)
    good = jwt_for(jwt_idp)
    assert_forwarded(proxy.get("/", headers=bearer(good)), good)
    header, claims = harness.decode_jwt(good)
    now = int(time.time())
    public_pem = harness.public_key(pki.idp_key)["pem"]
    h64, p64, s64 = good.split(".")
    forged_payload = base64.urlsafe_b64encode(
        json.dumps({**claims, "sub": "jane"}).encode()).rstrip(b"=").decode()
    cases = {
        "garbage": "not-a-token",
        "garbage with dots": "a.b.c",
        "truncated signature": good[:-10],
        "payload swapped under a valid signature": f"{h64}.{forged_payload}.{s64}",
        "expired (signed by the IdP key)": idp_jwt(jwt_idp, {"exp": now - 120, "iat": now - 600}),
        "not yet valid (nbf)": idp_jwt(jwt_idp, {"nbf": now + 600}),
        "wrong issuer": idp_jwt(jwt_idp, {"iss": "https://evil.example.com"}),
        "issuer with trailing slash": idp_jwt(jwt_idp, {"iss": jwt_idp.issuer + "/"}),
        "no exp": idp_jwt(jwt_idp, drop=["exp"]),
        "alg none": make_jwt({"typ": "at+jwt", "kid": "idp-sig-1"}, claims, alg="none"),
        "alg none with a signature": make_jwt({"typ": "at+jwt", "kid": "idp-sig-1"}, claims, alg="none") + s64,
        "HS256 keyed with the IdP's public key PEM": make_jwt(
            {"typ": "at+jwt", "kid": "idp-sig-1"}, claims, alg="HS256", secret=public_pem),
        "HS256 keyed with the IdP's public key PEM, no kid": make_jwt(
            {"typ": "at+jwt"}, claims, alg="HS256", secret=public_pem),
        "signed by another key under the IdP's kid": idp_jwt(jwt_idp, key="idp2.key", kid="idp-sig-1"),
        "signed by an unknown key and kid": idp_jwt(jwt_idp, key="other.key", kid="attacker-1"),
        "RS256 key used as PS256": idp_jwt(jwt_idp, alg="PS256"),
    }
    assert header["kid"] == "idp-sig-1"
    for why, token in cases.items():
        assert_invalid_token(proxy.get("/", headers=bearer(token)), why)
    # the valid token is still accepted afterwards (nothing was poisoned)
    assert_forwarded(proxy.get("/", headers=bearer(good)), good)
    assert proxy.returncode is None


def test_crafted_token_signed_with_the_idp_key_is_accepted(envoy, jwt_idp, upstream):
    """Sanity check of the negative cases above: the same crafting, correctly done, passes."""
    proxy = envoy(api_config(jwt_idp), idp=jwt_idp)
    token = idp_jwt(jwt_idp)
    assert_forwarded(proxy.get("/", headers=bearer(token)), token)


def test_expired_access_token_from_a_short_lived_idp(envoy, idp_factory, upstream):
    short = idp_factory(env={"JWT_ACCESS_TOKENS": "1", "ACCESS_TOKEN_TTL": "2"})
    proxy = envoy(api_config(short), idp=short)
    token = jwt_for(short)
    assert_forwarded(proxy.get("/", headers=bearer(token)), token)
    time.sleep(3.2)
    assert_invalid_token(proxy.get("/", headers=bearer(token)), "expired")


def test_leeway(envoy, jwt_idp, upstream):
    now = int(time.time())
    expired = idp_jwt(jwt_idp, {"exp": now - 20, "iat": now - 300})
    early = idp_jwt(jwt_idp, {"nbf": now + 20})
    strict = envoy(api_config(jwt_idp), idp=jwt_idp)
    assert_invalid_token(strict.get("/", headers=bearer(expired)), "expired 20 s ago, leeway 0")
    assert_invalid_token(strict.get("/", headers=bearer(early)), "nbf in 20 s, leeway 0")
    lenient = envoy(api_config(jwt_idp, leeway=120), idp=jwt_idp)
    assert_forwarded(lenient.get("/", headers=bearer(expired)), expired)
    assert_forwarded(lenient.get("/", headers=bearer(early)), early)
    way_expired = idp_jwt(jwt_idp, {"exp": now - 600, "iat": now - 900})
    assert_invalid_token(lenient.get("/", headers=bearer(way_expired)), "expired 600 s ago, leeway 120")


# ---------------------------------------------------------------------------
# where the token comes from: header, query, cookie; hide_credentials
# ---------------------------------------------------------------------------
def test_token_only_from_the_header_by_default(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp), idp=jwt_idp)
    token = jwt_for(jwt_idp)
    for r in (proxy.get("/", params={"access_token": token}), proxy.get("/", cookies={"at": token})):
        assert r.status_code == 401, describe(r)
        assert "error=" not in r.headers["www-authenticate"]  # no token seen at all


def test_token_from_query_and_cookie_when_configured(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, bearer_token_param_type=["query", "cookie"], bearer_token_cookie_name="at"),
                  idp=jwt_idp)
    token = jwt_for(jwt_idp)
    # hide_credentials defaults to false: the client's credential is left in place
    r = proxy.get("/q", params={"a": "1", "access_token": token, "b": "2"})
    headers = assert_forwarded(r, token)
    assert f"access_token={token}" in r.json()["path"]
    r = proxy.get("/c", cookies={"at": token, "other": "x"})
    headers = assert_forwarded(r, token)
    assert f"at={token}" in headers["cookie"]
    # the header is not a configured source here
    r = proxy.get("/h", headers=bearer(token))
    assert r.status_code == 401, describe(r)
    # a bad token in the query is rejected like one in a header
    assert_invalid_token(proxy.get("/", params={"access_token": "garbage"}), "garbage in query")
    assert_invalid_token(proxy.get("/", cookies={"at": "garbage"}), "garbage in cookie")


def test_hide_credentials_removes_what_the_client_sent(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, bearer_token_param_type=["header", "query", "cookie"],
                             bearer_token_cookie_name="at", hide_credentials=True,
                             upstream_access_token_header="x-access-token"), idp=jwt_idp)
    token = jwt_for(jwt_idp)
    # header: the client's Authorization is gone, the token travels in x-access-token
    headers = upstream_headers(proxy.get("/", headers=bearer(token)))
    assert "authorization" not in headers
    assert headers["x-access-token"] == token
    # query: access_token is removed, the other arguments stay, in order
    r = proxy.get("/q", params={"a": "1", "access_token": token, "b": "2"})
    headers = upstream_headers(r)
    assert r.json()["path"] == "/q?a=1&b=2"
    assert token not in r.json()["path"]
    assert headers["x-access-token"] == token
    # cookie: only the bearer cookie is removed
    r = proxy.get("/c", cookies={"at": token, "other": "x"})
    headers = upstream_headers(r)
    assert "other=x" in headers.get("cookie", "")
    assert token not in headers.get("cookie", "")
    assert headers["x-access-token"] == token


def test_without_hide_credentials_the_authorization_header_stays(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, upstream_access_token_header="x-access-token"), idp=jwt_idp)
    token = jwt_for(jwt_idp)
    headers = upstream_headers(proxy.get("/", headers=bearer(token)))
    assert headers["authorization"] == f"Bearer {token}"
    assert headers["x-access-token"] == token


# ---------------------------------------------------------------------------
# JWKS rotation
# ---------------------------------------------------------------------------
def test_jwks_rotation_without_restarting_envoy(envoy, idp_factory, upstream):
    """The IdP restarts on the same port with a new signing key: tokens with the new kid are
    accepted after the filter re-fetches the JWKS (unknown kid); the removed key is refused."""
    rotating = idp_factory(env={"JWT_ACCESS_TOKENS": "1"})
    proxy = envoy(api_config(rotating), idp=rotating)
    old = jwt_for(rotating)
    assert harness.decode_jwt(old)[0]["kid"] == "idp-sig-1"
    assert_forwarded(proxy.get("/", headers=bearer(old)), old)

    rotating.restart(env={"SIGNING_KEY": "idp2.key", "SIGNING_KID": "idp-sig-2"})
    assert [k["kid"] for k in rotating.jwks()["keys"]] == ["idp-sig-2"]
    new = jwt_for(rotating)
    assert harness.decode_jwt(new)[0]["kid"] == "idp-sig-2"
    # the re-fetch may be throttled: allow up to 12 s for the new key to be adopted
    deadline = time.monotonic() + 12
    while True:
        r = proxy.get("/", headers=bearer(new))
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        assert_invalid_token(r, "new kid before the JWKS re-fetch")
        time.sleep(0.5)
    assert_forwarded(r, new)
    assert "IDP GET /jwks " in rotating.log()  # fetched from the restarted IdP
    # the old key is no longer published: its tokens are refused now
    assert_invalid_token(proxy.get("/", headers=bearer(old)), "token signed with the removed key")
    assert_forwarded(proxy.get("/", headers=bearer(new)), new)


# ---------------------------------------------------------------------------
# introspection (opaque tokens, the filter authenticated by mTLS)
# ---------------------------------------------------------------------------
def test_introspection_over_mtls_accepts_active_tokens(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, ["introspection"]), idp=jwt_idp)
    token = opaque_for(jwt_idp)
    before = [l for l in jwt_idp.log().splitlines() if l.startswith(INTROSPECTION)]
    assert_forwarded(proxy.get("/", headers=bearer(token)), token)
    calls = [l for l in jwt_idp.log().splitlines() if l.startswith(INTROSPECTION)][len(before):]
    assert len(calls) == 1, calls
    assert 'subject="CN=client-tls-auth,O=Example,C=US"' in calls[0]  # the filter's client certificate
    assert "status=200" in calls[0]


def test_introspection_revoked_and_unknown_tokens_are_401(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, ["introspection"]), idp=jwt_idp)
    revoked = opaque_for(jwt_idp)
    assert jwt_idp.revoke(revoked).status_code == 200
    assert_invalid_token(proxy.get("/", headers=bearer(revoked)), "revoked")
    assert_invalid_token(proxy.get("/", headers=bearer("no-such-token-0123456789")), "unknown")


def test_introspection_result_is_cached(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, ["introspection"]), idp=jwt_idp)
    token = opaque_for(jwt_idp)
    before = count(jwt_idp, INTROSPECTION)
    for _ in range(3):
        assert_forwarded(proxy.get("/", headers=bearer(token)), token)
    assert count(jwt_idp, INTROSPECTION) - before == 1
    # another token is introspected on its own
    other = opaque_for(jwt_idp, "jane")
    assert_forwarded(proxy.get("/", headers=bearer(other)), other)
    assert count(jwt_idp, INTROSPECTION) - before == 2


def test_introspection_without_cache_sees_revocation(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, ["introspection"], cache_introspection=False), idp=jwt_idp)
    token = opaque_for(jwt_idp)
    before = count(jwt_idp, INTROSPECTION)
    assert_forwarded(proxy.get("/", headers=bearer(token)), token)
    assert_forwarded(proxy.get("/", headers=bearer(token)), token)
    assert count(jwt_idp, INTROSPECTION) - before == 2
    assert jwt_idp.revoke(token).status_code == 200
    assert_invalid_token(proxy.get("/", headers=bearer(token)), "revoked after use")


@pytest.mark.parametrize("cert", [None, "other"])
def test_introspection_with_a_rejected_client_certificate_is_401(envoy, jwt_idp, upstream, cert):
    proxy = envoy(api_config(jwt_idp, ["introspection"]), idp=jwt_idp, mtls_cert=cert)
    token = opaque_for(jwt_idp)
    r = proxy.get("/", headers=bearer(token))
    assert r.status_code == 401, describe(r)
    assert "headers" not in r.json()
    calls = [l for l in jwt_idp.log().splitlines() if l.startswith(INTROSPECTION)]
    assert calls and "status=401" in calls[-1], calls[-3:]


def test_bearer_and_introspection_jwt_locally_opaque_introspected(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, ["introspection", "bearer"]), idp=jwt_idp)
    jwt, opaque = jwt_for(jwt_idp), opaque_for(jwt_idp)
    before = count(jwt_idp, INTROSPECTION)
    assert_forwarded(proxy.get("/", headers=bearer(jwt)), jwt)
    assert count(jwt_idp, INTROSPECTION) == before  # a JWT is verified locally
    assert_forwarded(proxy.get("/", headers=bearer(opaque)), opaque)
    assert count(jwt_idp, INTROSPECTION) == before + 1
    # a forged JWT is refused locally, not introspected
    assert_invalid_token(proxy.get("/", headers=bearer(idp_jwt(jwt_idp, key="other.key"))), "forged JWT")


def test_introspection_claims_rules(envoy, jwt_idp, upstream):
    """groups in the introspection answer feed groups_required (john: admins, jane: users)."""
    proxy = envoy(api_config(jwt_idp, ["introspection"], groups_required=["admins"]), idp=jwt_idp)
    john, jane = opaque_for(jwt_idp, "john"), opaque_for(jwt_idp, "jane")
    assert_forwarded(proxy.get("/", headers=bearer(john)), john)
    assert_insufficient_scope(proxy.get("/", headers=bearer(jane)), "jane is not in admins")


# ---------------------------------------------------------------------------
# userinfo
# ---------------------------------------------------------------------------
def test_userinfo_decides_for_opaque_tokens(envoy, idp, upstream):
    proxy = envoy(api_config(idp, ["userinfo"], upstream_user_info_header="x-userinfo"))
    token = opaque_for(idp)
    before = count(idp, USERINFO)
    headers = assert_forwarded(proxy.get("/", headers=bearer(token)), token)
    assert count(idp, USERINFO) > before
    info = b64json(headers["x-userinfo"])
    assert info["sub"] == "john" and info["email"] == "john@example.com"
    assert info["groups"] == ["admins", "users"]
    assert_invalid_token(proxy.get("/", headers=bearer("garbage-token")), "userinfo rejects")
    revoked = opaque_for(idp, "jane")
    assert idp.revoke(revoked).status_code == 200
    assert_invalid_token(proxy.get("/", headers=bearer(revoked)), "revoked, userinfo 401")


def test_userinfo_with_jwt_access_tokens(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, ["userinfo"], upstream_user_info_header="x-userinfo"), idp=jwt_idp)
    token = jwt_for(jwt_idp, "jane")
    headers = assert_forwarded(proxy.get("/", headers=bearer(token)), token)
    assert b64json(headers["x-userinfo"])["sub"] == "jane"
    forged = idp_jwt(jwt_idp, key="other.key")
    assert_invalid_token(proxy.get("/", headers=bearer(forged)), "userinfo rejects a forged JWT")


def test_bearer_then_userinfo_for_opaque_tokens(envoy, jwt_idp, upstream):
    """bearer + userinfo, no introspection: a non-JWT token goes to the userinfo endpoint."""
    proxy = envoy(api_config(jwt_idp, ["userinfo", "bearer"]), idp=jwt_idp)
    jwt, opaque = jwt_for(jwt_idp), opaque_for(jwt_idp)
    before = count(jwt_idp, USERINFO)
    assert_forwarded(proxy.get("/", headers=bearer(jwt)), jwt)
    assert count(jwt_idp, USERINFO) == before
    assert_forwarded(proxy.get("/", headers=bearer(opaque)), opaque)
    assert count(jwt_idp, USERINFO) == before + 1


# ---------------------------------------------------------------------------
# refresh_token
# ---------------------------------------------------------------------------
def test_refresh_token_method_over_mtls(envoy, idp, upstream):
    proxy = envoy(api_config(idp, ["refresh_token"], hide_credentials=True))
    tokens = idp.password_grant("client-tls-auth", cert="client", scope="openid profile offline_access")
    refresh = tokens["refresh_token"]
    r = proxy.get("/", headers={"x-refresh-token": refresh})
    headers = upstream_headers(r)
    new_access = headers["authorization"][len("Bearer "):]
    assert headers["authorization"].startswith("Bearer ") and new_access != tokens["access_token"]
    info = idp.introspect(new_access)
    assert info["active"] is True and info["sub"] == "john" and info["client_id"] == "client-tls-auth"
    assert "x-refresh-token" not in headers  # hide_credentials: the refresh token never goes upstream
    new_refresh = r.headers.get("x-refresh-token")
    assert new_refresh and new_refresh != refresh  # the IdP rotates refresh tokens
    # the refresh grant went over mTLS, as client-tls-auth
    grants = [l for l in idp.log().splitlines() if l.startswith("IDP POST /token ")]
    assert 'subject="CN=client-tls-auth,O=Example,C=US"' in grants[-1] and "status=200" in grants[-1]
    # the rotated refresh token works in turn
    r2 = proxy.get("/", headers={"x-refresh-token": new_refresh})
    assert idp.introspect(upstream_headers(r2)["authorization"][7:])["active"] is True
    assert r2.headers.get("x-refresh-token") not in (None, refresh, new_refresh)


def test_refresh_token_custom_names_and_bad_token(envoy, idp, upstream):
    proxy = envoy(api_config(idp, ["refresh_token"], refresh_token_param_name="x-my-refresh",
                             downstream_refresh_token_header="x-new-refresh"))
    refresh = idp.password_grant("client-tls-auth", cert="client")["refresh_token"]
    r = proxy.get("/", headers={"x-my-refresh": refresh})
    assert idp.introspect(upstream_headers(r)["authorization"][7:])["active"] is True
    assert r.headers.get("x-new-refresh") and "x-refresh-token" not in r.headers
    # the default header name is not read when another is configured
    r = proxy.get("/", headers={"x-refresh-token": refresh})
    assert r.status_code == 401, describe(r)
    r = proxy.get("/", headers={"x-my-refresh": "not-a-refresh-token"})
    assert r.status_code == 401, describe(r)
    assert "headers" not in r.json()


# ---------------------------------------------------------------------------
# claims rules (JWT bearer)
# ---------------------------------------------------------------------------
def test_scopes_required_and_within_entry_or_across_entries(envoy, jwt_idp, upstream):
    both = envoy(api_config(jwt_idp, scopes_required=["api:read api:write"]), idp=jwt_idp)
    either = envoy(api_config(jwt_idp, scopes_required=["api:write", "email profile"]), idp=jwt_idp)
    t_rw = jwt_for(jwt_idp, scope="openid api:read api:write")
    t_r = jwt_for(jwt_idp, scope="openid api:read")
    t_profile_email = jwt_for(jwt_idp, scope="openid email profile api:read")
    t_email = jwt_for(jwt_idp, scope="openid email api:read")
    assert_forwarded(both.get("/", headers=bearer(t_rw)), t_rw)
    assert_insufficient_scope(both.get("/", headers=bearer(t_r)), "api:write missing (AND)")
    assert_forwarded(either.get("/", headers=bearer(t_rw)), t_rw)
    assert_forwarded(either.get("/", headers=bearer(t_profile_email)), t_profile_email)
    assert_insufficient_scope(either.get("/", headers=bearer(t_email)), "profile missing, api:write missing")
    # scope as an array claim
    t_array = idp_jwt(jwt_idp, {"scope": ["api:read", "api:write"]})
    assert_forwarded(both.get("/", headers=bearer(t_array)), t_array)
    # no scope claim at all
    assert_insufficient_scope(both.get("/", headers=bearer(idp_jwt(jwt_idp, drop=["scope"]))), "no scope claim")


def test_audience_required(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, audience_required=[JWT_AUDIENCE]), idp=jwt_idp)
    default = jwt_for(jwt_idp)
    other = jwt_for(jwt_idp, audience="https://other.example.com")
    assert_forwarded(proxy.get("/", headers=bearer(default)), default)
    assert_insufficient_scope(proxy.get("/", headers=bearer(other)), "wrong audience")
    multi = envoy(api_config(jwt_idp, audience_required=["https://x.example https://y.example",
                                                         "https://other.example.com"]), idp=jwt_idp)
    xy = jwt_for(jwt_idp, audience=["https://x.example", "https://y.example"])
    x = jwt_for(jwt_idp, audience="https://x.example")
    assert_forwarded(multi.get("/", headers=bearer(xy)), xy)
    assert_forwarded(multi.get("/", headers=bearer(other)), other)
    assert_insufficient_scope(multi.get("/", headers=bearer(x)), "only one of x and y")
    # aud is not checked at all without audience_required
    plain = envoy(api_config(jwt_idp), idp=jwt_idp)
    assert_forwarded(plain.get("/", headers=bearer(other)), other)


def test_audience_claim_path(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, audience_required=["orders"], audience_claim=["client_id"]), idp=jwt_idp)
    ok = idp_jwt(jwt_idp, {"client_id": "orders"})
    assert_forwarded(proxy.get("/", headers=bearer(ok)), ok)
    assert_insufficient_scope(proxy.get("/", headers=bearer(idp_jwt(jwt_idp))), "client_id is not orders")


def test_groups_required(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, groups_required=["admins"]), idp=jwt_idp)
    john, jane = jwt_for(jwt_idp, "john"), jwt_for(jwt_idp, "jane")
    assert_forwarded(proxy.get("/", headers=bearer(john)), john)
    assert_insufficient_scope(proxy.get("/", headers=bearer(jane)), "jane is not an admin")
    both = envoy(api_config(jwt_idp, groups_required=["admins users", "auditors"]), idp=jwt_idp)
    assert_forwarded(both.get("/", headers=bearer(john)), john)
    assert_insufficient_scope(both.get("/", headers=bearer(jane)), "jane: users only")
    # a space-separated string claim counts like an array
    as_string = idp_jwt(jwt_idp, {"groups": "users admins"})
    assert_forwarded(both.get("/", headers=bearer(as_string)), as_string)
    assert_insufficient_scope(both.get("/", headers=bearer(idp_jwt(jwt_idp, drop=["groups"]))), "no groups claim")


def test_roles_required_with_a_nested_claim(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, roles_required=["writer"], roles_claim=["realm_access", "roles"]),
                  idp=jwt_idp)
    john, jane = jwt_for(jwt_idp, "john"), jwt_for(jwt_idp, "jane")
    assert_forwarded(proxy.get("/", headers=bearer(john)), john)
    assert_insufficient_scope(proxy.get("/", headers=bearer(jane)), "jane is a reader only")
    # the nested path is what counts, not a top-level `roles`
    top_only = idp_jwt(jwt_idp, {"roles": ["writer"], "realm_access": {"roles": ["reader"]}})
    assert_insufficient_scope(proxy.get("/", headers=bearer(top_only)), "writer only at the top level")
    nested_only = idp_jwt(jwt_idp, {"roles": [], "realm_access": {"roles": ["writer"]}})
    assert_forwarded(proxy.get("/", headers=bearer(nested_only)), nested_only)
    # default roles_claim is [roles]
    top = envoy(api_config(jwt_idp, roles_required=["reader writer"]), idp=jwt_idp)
    assert_forwarded(top.get("/", headers=bearer(john)), john)
    assert_insufficient_scope(top.get("/", headers=bearer(jane)), "jane lacks writer")


def test_all_configured_rules_must_pass(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, scopes_required=["api:read"], groups_required=["users"],
                             roles_required=["writer"]), idp=jwt_idp)
    john = jwt_for(jwt_idp, "john", scope="openid api:read")
    john_no_scope = jwt_for(jwt_idp, "john", scope="openid")
    jane = jwt_for(jwt_idp, "jane", scope="openid api:read")
    assert_forwarded(proxy.get("/", headers=bearer(john)), john)
    assert_insufficient_scope(proxy.get("/", headers=bearer(john_no_scope)), "scope fails, groups/roles pass")
    assert_insufficient_scope(proxy.get("/", headers=bearer(jane)), "roles fail")


def test_invalid_token_wins_over_insufficient_scope(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, groups_required=["admins"]), idp=jwt_idp)
    now = int(time.time())
    assert_invalid_token(proxy.get("/", headers=bearer(idp_jwt(jwt_idp, {"exp": now - 100}))), "expired admin")


# ---------------------------------------------------------------------------
# upstream headers and identity forging
# ---------------------------------------------------------------------------
IDENTITY_HEADERS = dict(
    upstream_id_token_header="x-id-token",
    upstream_user_info_header="x-userinfo",
    upstream_introspection_header="x-introspection",
    upstream_headers_claims=["sub", "client_id", "email"],
    upstream_headers_names=["x-user", "x-client", "x-email"],
)
FORGED = {
    "x-user": "admin", "x-client": "trusted-app", "x-email": "ceo@example.com",
    "x-id-token": "forged.id.token", "x-userinfo": base64.b64encode(b'{"sub":"admin"}').decode(),
    "x-introspection": base64.b64encode(b'{"active":true,"sub":"admin"}').decode(),
}


def test_claims_to_headers_and_forged_identity_headers_for_bearer(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, **IDENTITY_HEADERS), idp=jwt_idp)
    token = jwt_for(jwt_idp)
    headers = assert_forwarded(proxy.get("/", headers={**bearer(token), **FORGED}), token)
    assert headers["x-user"] == "john"
    assert headers["x-client"] == "client-secret-basic"
    # the JWT has no email: the client's x-email is dropped, not passed through
    for name in ("x-email", "x-id-token", "x-userinfo", "x-introspection"):
        assert name not in headers, (name, headers.get(name))
    # no token at all: forged headers never matter (401), and with a bad token neither
    assert proxy.get("/", headers=FORGED).status_code == 401
    assert_invalid_token(proxy.get("/", headers={**bearer("garbage"), **FORGED}))


def test_duplicated_forged_identity_headers_are_all_replaced(envoy, jwt_idp, upstream):
    """A client that sends an identity header several times gets none of its values through."""
    import http.client
    proxy = envoy(api_config(jwt_idp, **IDENTITY_HEADERS), idp=jwt_idp)
    token = jwt_for(jwt_idp)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.putrequest("GET", "/")
    conn.putheader("Authorization", f"Bearer {token}")
    for forged in ("admin", "root"):
        conn.putheader("X-User", forged)
    conn.endheaders()
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert resp.status == 200, body
    assert body["headers"]["x-user"] == "john", body["headers"]
    assert body["headers"]["authorization"] == f"Bearer {token}"
    # a second Authorization header does not smuggle a credential past the check
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.putrequest("GET", "/")
    conn.putheader("Authorization", f"Bearer {token}")
    conn.putheader("Authorization", "Bearer forged")
    conn.endheaders()
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 401


def test_introspection_header_and_claims_headers(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, ["introspection"], **IDENTITY_HEADERS), idp=jwt_idp)
    token = opaque_for(jwt_idp, "jane")
    headers = assert_forwarded(proxy.get("/", headers={**bearer(token), **FORGED}), token)
    info = b64json(headers["x-introspection"])
    assert info["active"] is True and info["sub"] == "jane" and info["groups"] == ["users"]
    assert headers["x-user"] == "jane" and headers["x-client"] == "client-secret-basic"
    for name in ("x-email", "x-id-token", "x-userinfo"):
        assert name not in headers, (name, headers.get(name))


def test_userinfo_header_and_claims_headers(envoy, idp, upstream):
    proxy = envoy(api_config(idp, ["userinfo"], **IDENTITY_HEADERS))
    token = opaque_for(idp, "jane")
    headers = assert_forwarded(proxy.get("/", headers={**bearer(token), **FORGED}), token)
    info = b64json(headers["x-userinfo"])
    assert info["sub"] == "jane" and info["email"] == "jane@example.com"
    assert headers["x-user"] == "jane"
    assert headers["x-email"] == "jane@example.com"  # a userinfo claim
    assert headers.get("x-client") != "trusted-app"
    for name in ("x-id-token", "x-introspection"):
        assert name not in headers, (name, headers.get(name))


def test_control_characters_in_claims_never_reach_upstream(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, upstream_headers_claims=["sub", "name"],
                             upstream_headers_names=["x-user", "x-name"]), idp=jwt_idp)
    nasty = idp_jwt(jwt_idp, {"sub": "john\r\nx-injected: 1", "name": "a\x00b\x7fc\td"})
    r = proxy.get("/", headers=bearer(nasty))
    assert r.status_code in (200, 401, 403), describe(r)
    if r.status_code == 200:
        headers = r.json()["headers"]
        assert "x-injected" not in headers
        for name, value in headers.items():
            assert not re.search(r"[\x00-\x08\x0a-\x1f\x7f]", value), (name, value)
            assert "x-injected" not in value
    assert proxy.returncode is None
    # the next request is served normally
    token = jwt_for(jwt_idp)
    assert upstream_headers(proxy.get("/", headers=bearer(token)))["x-user"] == "john"


def test_no_token_in_envoy_log(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, ["introspection", "bearer"]), idp=jwt_idp,
                  component_log_level="wasm:trace")
    jwt, opaque = jwt_for(jwt_idp), opaque_for(jwt_idp)
    assert_forwarded(proxy.get("/", headers=bearer(jwt)), jwt)
    assert_forwarded(proxy.get("/", headers=bearer(opaque)), opaque)
    proxy.get("/", headers=bearer(jwt + "x"))
    log = proxy.log()
    assert proxy.filter_log(), "the filter logged nothing"
    for secret in (jwt, jwt.split(".")[2], opaque):
        assert secret not in log


def test_claims_forbidden_refuses_a_token_that_carries_one(envoy, jwt_idp, upstream):
    """Kong's claims_forbidden: a delegated token (RFC 8693 `act`) is refused with 403, its
    plain sibling passes; nothing of the refused one goes upstream."""
    proxy = envoy(api_config(jwt_idp, claims_forbidden=["act"]), idp=jwt_idp)
    plain = idp_jwt(jwt_idp)
    assert_forwarded(proxy.get("/", headers=bearer(plain)), plain)
    delegated = idp_jwt(jwt_idp, {"act": {"sub": "agent-7"}})
    r = proxy.get("/", headers=bearer(delegated))
    assert_insufficient_scope(r, "act is forbidden")
    assert delegated not in upstream.log()


def test_cors_preflight_goes_through_unauthenticated_only_with_run_on_preflight_false(envoy, jwt_idp, upstream):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    default = envoy(api_config(jwt_idp), idp=jwt_idp)
    assert default.request("OPTIONS", "/cors", headers=preflight).status_code == 401
    proxy = envoy(api_config(jwt_idp, run_on_preflight=False), idp=jwt_idp)
    r = proxy.request("OPTIONS", "/cors", headers=preflight)
    assert r.status_code == 200 and harness.upstream_seen(r)["path"] == "/cors", describe(r)
    # an OPTIONS that is not a preflight, or a GET with the same headers, is authenticated
    assert proxy.request("OPTIONS", "/cors", headers={"Origin": "https://app.example"}).status_code == 401
    assert proxy.get("/cors", headers=preflight).status_code == 401


def test_bearer_token_header_name_reads_the_token_from_that_header(envoy, jwt_idp, upstream):
    proxy = envoy(api_config(jwt_idp, bearer_token_header_name="X-Api-Token", hide_credentials=True), idp=jwt_idp)
    token = idp_jwt(jwt_idp)
    r = proxy.get("/", headers={"x-api-token": token})
    headers = assert_forwarded(r, token)
    assert "x-api-token" not in headers, "hide_credentials removes the header the token came in"
    assert proxy.get("/", headers=bearer(token)).status_code == 401, "Authorization is not read then"

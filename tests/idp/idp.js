// Test OpenID Provider for the integration tests: panva/oidc-provider served
// over HTTPS with optional client certificates (RFC 8705 mTLS client auth and
// certificate-bound access tokens), a resource-owner password grant, and a
// minimal login page for the authorization code flow (form fields `login` and
// `password`, button #submit; #cancel answers the client error=access_denied;
// consent is automatic).
//
// Environment:
//   IDP_PORT            listen port on 127.0.0.1 (default 9443)
//   PKI_DIR             directory produced by tests/pki/gen.sh (default ../../.run/pki)
//   ISSUER              issuer identifier (default https://localhost:${IDP_PORT})
//   ACCESS_TOKEN_TTL    access token lifetime in seconds (default 3600)
//   REFRESH_TOKEN_TTL   refresh token lifetime in seconds (default 86400)
//   REDIRECT_URIS       extra redirect URIs, comma separated
//   POST_LOGOUT_REDIRECT_URIS  extra post-logout redirect URIs, comma separated
//
// Loopback redirect URIs (http://127.0.0.1, http://localhost, http://[::1])
// match on ANY port (RFC 8252 section 7.3), for every client: a registered
// http://127.0.0.1:8000/callback also allows http://127.0.0.1:PORT/callback,
// so tests need not know Envoy's port when the IdP starts.  Registered
// loopback paths: redirect /callback, /auth/callback, /oidc/callback;
// post-logout /, /logged-out.
//   IDP_MTLS_PORT       optional second HTTPS listener; when set, discovery's
//                       mtls_endpoint_aliases point at it (https://localhost:${IDP_MTLS_PORT})
//   MTLS_ALIAS_BASE     base URL for mtls_endpoint_aliases (overrides the above;
//                       default: the issuer itself, i.e. aliases equal the plain endpoints)
//   JWT_ACCESS_TOKENS=1 enable resourceIndicators; access tokens become JWTs for
//                       resource JWT_AUDIENCE (default https://api.example.com)
//   SIGNING_KEY         PKI file of the ID token / JWT access token signing key
//                       (default idp.key; gen.sh also makes idp2.key and idp-ec.key)
//   SIGNING_KID         its JWKS kid (default idp-sig-1)
//   SIGNING_ALG         RS256 (default), PS256 (RSA key) or ES256 (EC P-256 key)
//   ACCESS_TOKEN_PADDING  N: access tokens carry a claim `pad` of N random
//                       base64url characters (JWT access tokens grow by ~N
//                       bytes: big sessions, chunked session cookies)
//   RP_INITIATED_LOGOUT=0  no end_session_endpoint (logout falls back to the
//                       client's own redirect)
//
// Password grant (ours): extra parameters `token_format` (jwt | opaque; default
// jwt when JWT_ACCESS_TOKENS=1, else opaque) and `audience` (space separated;
// implies jwt; default JWT_AUDIENCE).  JWT access tokens carry iss, sub, aud,
// exp, iat, jti, scope (all granted scopes), client_id, groups, roles,
// realm_access.roles and cnf.x5t#S256 when certificate-bound; introspection of
// opaque tokens carries the same groups/roles/realm_access claims.
// GET /me accepts the JWT access tokens too (verified here, cnf enforced).
//
// Prints "IDP READY <issuer>" on stdout when listening.  Logs one line per
// request (method, path without query, client cert subject, status) and never
// logs credentials, tokens or codes.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import * as jose from 'jose';
import Provider, { errors } from 'oidc-provider';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PORT = Number(process.env.IDP_PORT || 9443);
const PKI_DIR = path.resolve(process.env.PKI_DIR || path.join(HERE, '..', '..', '.run', 'pki'));
const ISSUER = process.env.ISSUER || `https://localhost:${PORT}`;
const ACCESS_TOKEN_TTL = Number(process.env.ACCESS_TOKEN_TTL || 3600);
const REFRESH_TOKEN_TTL = Number(process.env.REFRESH_TOKEN_TTL || 86400);
const MTLS_PORT = process.env.IDP_MTLS_PORT ? Number(process.env.IDP_MTLS_PORT) : undefined;
const MTLS_ALIAS_BASE = (process.env.MTLS_ALIAS_BASE
  || (MTLS_PORT ? `https://localhost:${MTLS_PORT}` : ISSUER)).replace(/\/$/, '');
const JWT_ACCESS_TOKENS = process.env.JWT_ACCESS_TOKENS === '1';
const JWT_AUDIENCE = process.env.JWT_AUDIENCE || 'https://api.example.com';
const SIGNING_KEY = process.env.SIGNING_KEY || 'idp.key';
const SIGNING_KID = process.env.SIGNING_KID || 'idp-sig-1';
const SIGNING_ALG = process.env.SIGNING_ALG || 'RS256';
const ACCESS_TOKEN_PADDING = Number(process.env.ACCESS_TOKEN_PADDING || 0);
const RP_INITIATED_LOGOUT = process.env.RP_INITIATED_LOGOUT !== '0';
if (!['RS256', 'PS256', 'ES256'].includes(SIGNING_ALG)) throw new Error(`SIGNING_ALG ${SIGNING_ALG} not supported`);

const list = (v) => (v || '').split(',').map((s) => s.trim()).filter(Boolean);
const pki = (name) => fs.readFileSync(path.join(PKI_DIR, name));

// ---------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------
const USERS = {
  john: {
    password: 'doe',
    claims: {
      sub: 'john', name: 'John Doe', email: 'john@example.com', email_verified: true, groups: ['admins', 'users'],
      roles: ['reader', 'writer'],
    },
  },
  jane: {
    password: 'secret2',
    claims: {
      sub: 'jane', name: 'Jane Roe', email: 'jane@example.com', email_verified: true, groups: ['users'],
      roles: ['reader'],
    },
  },
};

function checkPassword(username, password) {
  const user = Object.prototype.hasOwnProperty.call(USERS, username) ? USERS[username] : undefined;
  if (!user || typeof password !== 'string') return undefined;
  const a = Buffer.from(user.password);
  const b = Buffer.from(password);
  if (a.length !== b.length || !crypto.timingSafeEqual(a, b)) return undefined;
  return username;
}

// Claims added to access tokens (JWT payload, and the introspection answer of
// opaque tokens) of a user.
function accessTokenClaims(accountId) {
  const user = accountId && Object.prototype.hasOwnProperty.call(USERS, accountId) ? USERS[accountId] : undefined;
  if (!user) return undefined;
  return {
    groups: [...user.claims.groups],
    roles: [...user.claims.roles],
    realm_access: { roles: [...user.claims.roles] },
  };
}

async function findAccount(ctx, sub) {
  const user = USERS[sub];
  if (!user) return undefined;
  return {
    accountId: sub,
    async claims() { return { ...user.claims }; },
  };
}

// ---------------------------------------------------------------------------
// Keys & clients
// ---------------------------------------------------------------------------
const signingKey = crypto.createPrivateKey(pki(SIGNING_KEY));
const signingPublicKey = crypto.createPublicKey(signingKey);
const signingJwk = {
  ...signingKey.export({ format: 'jwk' }),
  kid: SIGNING_KID, use: 'sig', alg: SIGNING_ALG,
};

const pkjwtJwk = {
  ...crypto.createPublicKey(pki('pkjwt.key')).export({ format: 'jwk' }),
  kid: 'pkjwt-1', use: 'sig', alg: 'RS256',
};

const selfSignedPem = pki('selfsigned.crt').toString();
const selfSignedJwk = {
  ...crypto.createPublicKey(selfSignedPem).export({ format: 'jwk' }),
  kid: 'selfsigned-1',
  use: 'sig',
  x5c: [selfSignedPem.replace(/-----(BEGIN|END) CERTIFICATE-----|\s/g, '')],
};

const loopbacks = (paths) => paths.flatMap((p) => [`http://localhost:8000${p}`, `http://127.0.0.1:8000${p}`]);
const redirectUris = [...loopbacks(['/callback', '/auth/callback', '/oidc/callback']), ...list(process.env.REDIRECT_URIS)];
const postLogoutRedirectUris = [...loopbacks(['/', '/logged-out']), ...list(process.env.POST_LOGOUT_REDIRECT_URIS)];

const common = {
  grant_types: ['authorization_code', 'refresh_token', 'password', 'client_credentials'],
  response_types: ['code'],
  redirect_uris: redirectUris,
  post_logout_redirect_uris: postLogoutRedirectUris,
};

// CLIENT_TLS_SUBJECT_DN: the subject registered for client-tls-auth (certificate rotation tests)
const SUBJECT_DN = process.env.CLIENT_TLS_SUBJECT_DN || 'CN=client-tls-auth,O=Example,C=US';

const clients = [
  { ...common, client_id: 'client-tls-auth', token_endpoint_auth_method: 'tls_client_auth', tls_client_auth_subject_dn: SUBJECT_DN },
  {
    ...common,
    client_id: 'client-tls-bound',
    token_endpoint_auth_method: 'tls_client_auth',
    tls_client_auth_subject_dn: SUBJECT_DN,
    tls_client_certificate_bound_access_tokens: true,
  },
  {
    ...common, client_id: 'client-self-signed', token_endpoint_auth_method: 'self_signed_tls_client_auth', jwks: { keys: [selfSignedJwk] },
  },
  { ...common, client_id: 'client-secret-basic', client_secret: 'secret-basic-1', token_endpoint_auth_method: 'client_secret_basic' },
  { ...common, client_id: 'client-secret-post', client_secret: 'secret-post-1', token_endpoint_auth_method: 'client_secret_post' },
  {
    ...common,
    client_id: 'client-secret-jwt',
    client_secret: 'a-very-long-shared-secret-for-hs256-0123456789',
    token_endpoint_auth_method: 'client_secret_jwt',
    token_endpoint_auth_signing_alg: 'HS256',
  },
  {
    ...common,
    client_id: 'client-private-key-jwt',
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'RS256',
    jwks: { keys: [pkjwtJwk] },
  },
  { ...common, client_id: 'client-none', token_endpoint_auth_method: 'none' },
  { ...common, client_id: 'resource-server', client_secret: 'rs-secret', token_endpoint_auth_method: 'client_secret_basic' },
];

// ---------------------------------------------------------------------------
// mTLS hooks (read the peer certificate straight from the TLS socket)
// ---------------------------------------------------------------------------
function peerCert(ctx) {
  const { socket } = ctx.req;
  if (!socket || typeof socket.getPeerCertificate !== 'function') return undefined;
  const cert = socket.getPeerCertificate();
  if (!cert || !cert.raw) return undefined;
  return cert;
}

// Normalise a distinguished name to a canonical, order-independent form:
// accepts RFC 4514 ("CN=a,O=b,C=US", least significant first) and Node's
// X509Certificate.subject ("C=US\nO=b\nCN=a", most significant first).
function normalizeDn(dn) {
  if (typeof dn !== 'string') return '';
  const parts = dn.includes('\n') ? dn.split('\n') : dn.split(/(?<!\\),/);
  return parts
    .map((p) => p.trim())
    .filter(Boolean)
    .map((p) => {
      const i = p.indexOf('=');
      return `${p.slice(0, i).trim().toUpperCase()}=${p.slice(i + 1).trim().replace(/\\(.)/g, '$1')}`;
    })
    .sort()
    .join(',');
}

const mTLS = {
  enabled: true,
  tlsClientAuth: true,
  selfSignedTlsClientAuth: true,
  certificateBoundAccessTokens: true,
  getCertificate(ctx) {
    const cert = peerCert(ctx);
    return cert ? new crypto.X509Certificate(cert.raw) : undefined;
  },
  certificateAuthorized(ctx) {
    return Boolean(ctx.req.socket && ctx.req.socket.authorized);
  },
  certificateSubjectMatches(ctx, property, expected) {
    const cert = peerCert(ctx);
    if (!cert) return false;
    const x509 = new crypto.X509Certificate(cert.raw);
    switch (property) {
      case 'tls_client_auth_subject_dn':
        return normalizeDn(x509.subject) === normalizeDn(expected);
      case 'tls_client_auth_san_dns':
        return (x509.subjectAltName || '').split(', ').includes(`DNS:${expected}`);
      case 'tls_client_auth_san_ip':
        return (x509.subjectAltName || '').split(', ').includes(`IP Address:${expected}`);
      case 'tls_client_auth_san_email':
        return (x509.subjectAltName || '').split(', ').includes(`email:${expected}`);
      case 'tls_client_auth_san_uri':
        return (x509.subjectAltName || '').split(', ').includes(`URI:${expected}`);
      default:
        return false;
    }
  },
};

// ---------------------------------------------------------------------------
// Provider configuration
// ---------------------------------------------------------------------------
const SCOPES = ['openid', 'profile', 'email', 'offline_access', 'api:read', 'api:write'];

const mtlsAliases = {
  token_endpoint: `${MTLS_ALIAS_BASE}/token`,
  introspection_endpoint: `${MTLS_ALIAS_BASE}/token/introspection`,
  revocation_endpoint: `${MTLS_ALIAS_BASE}/token/revocation`,
  userinfo_endpoint: `${MTLS_ALIAS_BASE}/me`,
};

const configuration = {
  clients,
  findAccount,
  jwks: { keys: [signingJwk] },
  cookies: { keys: ['test-cookie-key-1-do-not-use-in-prod', 'test-cookie-key-2'] },
  scopes: SCOPES,
  responseTypes: ['code'],
  clientAuthMethods: [
    'none', 'client_secret_basic', 'client_secret_post', 'client_secret_jwt', 'private_key_jwt',
    'tls_client_auth', 'self_signed_tls_client_auth',
  ],
  claims: {
    openid: ['sub'],
    profile: ['name', 'groups', 'roles'],
    email: ['email', 'email_verified'],
  },
  // RFC 8705 section 5: oidc-provider does not generate this itself, but
  // static discovery members can be added through `discovery`.
  discovery: { mtls_endpoint_aliases: mtlsAliases },
  clientDefaults: {
    grant_types: ['authorization_code'],
    id_token_signed_response_alg: SIGNING_ALG,
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  },
  extraTokenClaims: async (ctx, token) => {
    const claims = accessTokenClaims(token.accountId);
    if (!ACCESS_TOKEN_PADDING) return claims;
    const pad = crypto.randomBytes(Math.ceil((ACCESS_TOKEN_PADDING * 3) / 4)).toString('base64url').slice(0, ACCESS_TOKEN_PADDING);
    return { ...(claims || {}), pad };
  },
  ttl: {
    AccessToken: ACCESS_TOKEN_TTL,
    ClientCredentials: ACCESS_TOKEN_TTL,
    RefreshToken: REFRESH_TOKEN_TTL,
    IdToken: 3600,
    AuthorizationCode: 60,
    Interaction: 3600,
    Session: 86400,
    Grant: 86400,
  },
  // Always issue a refresh token to clients allowed the refresh_token grant.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  interactions: { url: async (ctx, interaction) => `/interaction/${interaction.uid}` },
  // Auto-consent: every client here is first-party.
  async loadExistingGrant(ctx) {
    const { Grant } = ctx.oidc.provider;
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    let grant = grantId ? await Grant.find(grantId) : undefined;
    if (!grant) {
      grant = new Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    }
    grant.addOIDCScope(SCOPES.join(' '));
    grant.addOIDCClaims(['sub', 'name', 'email', 'email_verified', 'groups', 'roles']);
    if (JWT_ACCESS_TOKENS) grant.addResourceScope(JWT_AUDIENCE, 'api:read api:write');
    await grant.save();
    return grant;
  },
  features: {
    devInteractions: { enabled: false },
    introspection: {
      enabled: true,
      // resource-server (and any authenticated confidential client) may
      // introspect any token; public clients only their own.
      async allowedPolicy(ctx, client, token) {
        if (client.clientId === 'resource-server') return true;
        if (client.clientAuthMethod === 'none') return token.clientId === client.clientId;
        return true;
      },
    },
    revocation: {
      enabled: true,
      async allowedPolicy(ctx, client, token) {
        if (client.clientId === 'resource-server') return true;
        return token.clientId === client.clientId;
      },
    },
    clientCredentials: { enabled: true },
    userinfo: { enabled: true },
    rpInitiatedLogout: { enabled: RP_INITIATED_LOGOUT },
    mTLS,
    resourceIndicators: {
      enabled: JWT_ACCESS_TOKENS,
      defaultResource: async () => JWT_AUDIENCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async () => ({
        scope: 'api:read api:write',
        audience: JWT_AUDIENCE,
        accessTokenTTL: ACCESS_TOKEN_TTL,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: SIGNING_ALG } },
      }),
    },
  },
};

const provider = new Provider(ISSUER, configuration);
provider.proxy = false;

// RFC 8252 section 7.3 for every client (oidc-provider does it only for
// application_type native): a loopback http redirect URI matches a registered
// one whatever its port.  Everything but the port must be equal.
const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);
function withoutLoopbackPort(uri) {
  let u;
  try { u = new URL(uri); } catch { return undefined; }
  if (u.protocol !== 'http:' || !LOOPBACK_HOSTS.has(u.hostname) || u.username || u.password) return undefined;
  return `http://${u.hostname}${u.pathname}${u.search}${u.hash}`;
}
for (const [method, registered] of [['redirectUriAllowed', 'redirectUris'],
  ['postLogoutRedirectUriAllowed', 'postLogoutRedirectUris']]) {
  const exact = provider.Client.prototype[method];
  provider.Client.prototype[method] = function loopbackAnyPort(value) {
    if (exact.call(this, value)) return true;
    const stripped = typeof value === 'string' ? withoutLoopbackPort(value) : undefined;
    return stripped !== undefined && (this[registered] || []).some((r) => withoutLoopbackPort(r) === stripped);
  };
}

// ---------------------------------------------------------------------------
// Resource-owner password credentials grant
// ---------------------------------------------------------------------------
async function passwordGrant(ctx) {
  const { provider: op, params, client } = ctx.oidc;
  const {
    Grant, AccessToken, RefreshToken, IdToken,
  } = op;

  const accountId = checkPassword(params.username, params.password);
  if (!accountId) throw new errors.InvalidGrant('invalid resource owner credentials');

  const requested = (params.scope || 'openid').split(' ').filter(Boolean);
  const unknown = requested.filter((s) => !SCOPES.includes(s));
  if (unknown.length) throw new errors.InvalidScope('requested scope is not supported', unknown.join(' '));
  const notAllowed = requested.filter((s) => client.scope && !client.scope.split(' ').includes(s));
  if (notAllowed.length) throw new errors.InvalidScope('requested scope is not allowed', notAllowed.join(' '));

  // certificate binding (RFC 8705 section 3), as the shipped grants do it
  let cert;
  if (client.tlsClientCertificateBoundAccessTokens) {
    cert = mTLS.getCertificate(ctx);
    if (!cert) throw new errors.InvalidGrant('mutual TLS client certificate not provided');
  }

  const account = await findAccount(ctx, accountId);
  ctx.oidc.entity('Account', account);

  const grant = new Grant({ accountId, clientId: client.clientId });
  grant.addOIDCScope(requested.join(' '));
  grant.addOIDCClaims(['sub', 'name', 'email', 'email_verified', 'groups', 'roles']);
  const grantId = await grant.save();
  ctx.oidc.entity('Grant', grant);

  const scope = grant.getOIDCScopeFiltered(new Set(requested));
  const at = new AccessToken({
    accountId, client, grantId, gty: 'password', scope,
  });
  if (cert) at.setThumbprint('x5t', cert);
  const format = params.token_format || (params.audience || JWT_ACCESS_TOKENS ? 'jwt' : 'opaque');
  if (!['jwt', 'opaque'].includes(format)) throw new errors.InvalidRequest('token_format must be jwt or opaque');
  if (format === 'jwt') {
    // JWT access token for the resource server(s) named by `audience`; it
    // carries every granted scope (this grant is ours, so it decides).
    const audiences = (params.audience || JWT_AUDIENCE).split(' ').filter(Boolean);
    const info = {
      scope: SCOPES.join(' '),
      audience: audiences[0],
      accessTokenTTL: ACCESS_TOKEN_TTL,
      accessTokenFormat: 'jwt',
      jwt: { sign: { alg: SIGNING_ALG } },
    };
    at.resourceServer = new op.ResourceServer(audiences[0], info);
    if (audiences.length > 1) at.aud = audiences;
    at.scope = scope || undefined;
  }
  ctx.oidc.entity('AccessToken', at);
  const accessToken = await at.save();

  let refreshToken;
  if (client.grantTypeAllowed('refresh_token')) {
    const rt = new RefreshToken({
      accountId, client, grantId, gty: 'password', scope, rotations: 0,
    });
    // public clients: bind the refresh token to the certificate (oidc-provider behaviour)
    if (client.clientAuthMethod === 'none' && at['x5t#S256']) rt['x5t#S256'] = at['x5t#S256'];
    ctx.oidc.entity('RefreshToken', rt);
    refreshToken = await rt.save();
  }

  let idToken;
  if (requested.includes('openid')) {
    const token = new IdToken({
      ...await account.claims('id_token', scope),
      sub: accountId,
      auth_time: Math.floor(Date.now() / 1000),
      amr: ['pwd'],
    }, { ctx });
    token.scope = scope;
    idToken = await token.issue({ use: 'idtoken' });
  }

  ctx.body = {
    access_token: accessToken,
    token_type: at.tokenType || 'Bearer',
    expires_in: at.expiration,
    scope,
    ...(refreshToken ? { refresh_token: refreshToken } : {}),
    ...(idToken ? { id_token: idToken } : {}),
  };
}

provider.registerGrantType('password', passwordGrant, ['username', 'password', 'scope', 'token_format', 'audience']);

// ---------------------------------------------------------------------------
// Interaction (login) pages
// ---------------------------------------------------------------------------
const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[c]));

function loginPage(uid, clientId, error) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sign in</title></head>
<body>
<h1>Sign in</h1>
<p>Client: ${escapeHtml(clientId)}</p>
${error ? `<p class="error" id="error">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
  <label>Username <input name="login" id="login" type="text" required autofocus></label>
  <label>Password <input name="password" id="password" type="password" required></label>
  <button type="submit" id="submit">Sign in</button>
</form>
<form method="post" action="/interaction/${escapeHtml(uid)}/abort">
  <button type="submit" id="cancel">Cancel</button>
</form>
</body></html>`;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > 65536) { reject(new Error('body too large')); req.destroy(); return; }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString()));
    req.on('error', reject);
  });
}

function send(res, status, body, type = 'text/html; charset=utf-8') {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

async function handleInteraction(req, res, url) {
  const m = url.pathname.match(/^\/interaction\/([^/]+)(\/login|\/abort)?$/);
  if (!m) return send(res, 404, 'not found', 'text/plain');
  try {
    const details = await provider.interactionDetails(req, res);
    const { uid, prompt, params } = details;
    if (m[2] === '/abort' && req.method === 'POST') {
      // the user cancelled: the client gets error=access_denied
      return provider.interactionFinished(req, res, {
        error: 'access_denied', error_description: 'End-User aborted interaction',
      }, { mergeWithLastSubmission: false });
    }
    if (m[2] === '/login' && req.method === 'POST') {
      const form = new URLSearchParams(await readBody(req));
      const accountId = checkPassword(form.get('login'), form.get('password'));
      if (!accountId) return send(res, 401, loginPage(uid, params.client_id, 'Invalid username or password'));
      return provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
    }
    if (req.method !== 'GET') return send(res, 405, 'method not allowed', 'text/plain');
    if (prompt.name === 'login') return send(res, 200, loginPage(uid, params.client_id));
    // consent (or anything else): auto-approve; loadExistingGrant creates the grant
    const grant = await provider.Grant.find(details.grantId) || new provider.Grant({
      accountId: details.session.accountId, clientId: params.client_id,
    });
    grant.addOIDCScope(SCOPES.join(' '));
    grant.addOIDCClaims(['sub', 'name', 'email', 'email_verified', 'groups', 'roles']);
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  } catch (err) {
    return send(res, 400, `interaction error: ${escapeHtml(err.message)}`, 'text/plain');
  }
}

// ---------------------------------------------------------------------------
// Userinfo for JWT access tokens (oidc-provider only knows its opaque ones)
// ---------------------------------------------------------------------------
function sendJson(res, status, body, extraHeaders = {}) {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...extraHeaders });
  res.end(JSON.stringify(body));
}

async function jwtUserinfo(req, res, token) {
  const invalid = (desc) => sendJson(res, 401, { error: 'invalid_token', error_description: desc }, {
    'www-authenticate': `Bearer realm="${ISSUER}", error="invalid_token", error_description="${desc}"`,
  });
  let payload;
  try {
    ({ payload } = await jose.jwtVerify(token, signingPublicKey, {
      issuer: ISSUER, algorithms: [SIGNING_ALG], typ: 'at+jwt',
    }));
  } catch (err) {
    return invalid('invalid token provided');
  }
  const bound = payload.cnf && payload.cnf['x5t#S256'];
  if (bound) {
    const sock = req.socket;
    const cert = typeof sock.getPeerCertificate === 'function' ? sock.getPeerCertificate() : undefined;
    const x5t = cert && cert.raw ? crypto.createHash('sha256').update(cert.raw).digest('base64url') : undefined;
    if (x5t !== bound) return invalid('failed x5t#S256 verification');
  }
  const user = Object.prototype.hasOwnProperty.call(USERS, payload.sub) ? USERS[payload.sub] : undefined;
  if (!user) return invalid('invalid token provided');
  return sendJson(res, 200, {
    sub: payload.sub,
    name: user.claims.name,
    email: user.claims.email,
    email_verified: user.claims.email_verified,
    groups: [...user.claims.groups],
    roles: [...user.claims.roles],
  });
}

// ---------------------------------------------------------------------------
// HTTPS server(s)
// ---------------------------------------------------------------------------
const callback = provider.callback();

function handler(req, res) {
  const started = Date.now();
  const sock = req.socket;
  const cert = typeof sock.getPeerCertificate === 'function' ? sock.getPeerCertificate() : undefined;
  const hasCert = Boolean(cert && cert.raw);
  const subject = hasCert ? new crypto.X509Certificate(cert.raw).subject.split('\n').reverse().join(',') : '-';
  const url = new URL(req.url, 'https://idp.invalid');
  res.on('finish', () => {
    // path only: query strings may carry codes/state and are never logged
    process.stdout.write(`IDP ${req.method} ${url.pathname} port=${sock.localPort} cert=${hasCert ? 'yes' : 'no'} `
      + `subject="${subject}" authorized=${hasCert ? Boolean(sock.authorized) : '-'} `
      + `status=${res.statusCode} ms=${Date.now() - started}\n`);
  });
  if (url.pathname.startsWith('/interaction/')) {
    handleInteraction(req, res, url);
    return;
  }
  if (url.pathname === '/me' && (req.method === 'GET' || req.method === 'POST')) {
    const m = /^Bearer\s+([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)\s*$/i.exec(req.headers.authorization || '');
    if (m) {
      jwtUserinfo(req, res, m[1]).catch((err) => sendJson(res, 500, { error: 'server_error', error_description: String(err) }));
      return;
    }
  }
  callback(req, res);
}

const tlsOptions = {
  key: pki('idp.key'),
  cert: pki('idp.crt'),
  ca: pki('ca.crt'),
  requestCert: true,
  rejectUnauthorized: false,
};

provider.on('server_error', (ctx, err) => {
  process.stdout.write(`IDP server_error ${err && err.stack ? err.stack : err}\n`);
});

// error details (e.g. "client certificate was not provided") are not part of
// the HTTP response (only a generic error_description is); log them here.
for (const ev of ['grant.error', 'introspection.error', 'revocation.error', 'userinfo.error',
  'authorization.error', 'end_session.error', 'discovery.error', 'jwks.error']) {
  provider.on(ev, (ctx, err) => {
    process.stdout.write(`IDP ${ev} ${err.error || err.name}: ${err.error_detail || err.error_description || ''}\n`);
  });
}

const servers = [https.createServer(tlsOptions, handler)];
if (MTLS_PORT) servers.push(https.createServer(tlsOptions, handler));

await Promise.all(servers.map((srv, i) => new Promise((resolve, reject) => {
  srv.keepAliveTimeout = 60000;
  srv.once('error', reject);
  srv.listen(i === 0 ? PORT : MTLS_PORT, '127.0.0.1', resolve);
})));

process.stdout.write(`IDP READY ${ISSUER}\n`);

const shutdown = () => { servers.forEach((s) => s.close()); process.exit(0); };
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

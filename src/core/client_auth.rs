//! OAuth client authentication at the IdP's endpoints: Kong's seven methods.
//!
//! [`ClientAuth`] names the method; [`authenticate`] turns it into the headers and form
//! fields of one request. The two RFC 8705 methods (`tls_client_auth`,
//! `self_signed_tls_client_auth`) put only `client_id` in the body: the proof is the client
//! certificate, presented by the upstream the call is sent through.
//!
//! [`ClientSettings`] is the filter's client as the configuration describes it, and decides
//! where each authenticated call goes: TLS-authenticated calls through
//! `tls_client_auth_cluster` to the configured `mtls_*_endpoint`, else the discovered
//! `mtls_endpoint_aliases` entry, else the plain endpoint (RFC 8705 section 5); the others
//! through `idp_cluster` to the plain endpoint.

use std::fmt;

use base64::Engine;
use jwt_simple::algorithms::{
    ECDSAP256KeyPairLike, ECDSAP384KeyPairLike, ES256KeyPair, ES384KeyPair, HS256Key, HS384Key, HS512Key, MACLike, PS256KeyPair,
    PS384KeyPair, PS512KeyPair, RS256KeyPair, RS384KeyPair, RS512KeyPair, RSAKeyPairLike,
};
use jwt_simple::claims::{Audiences, JWTClaims, NoCustomClaims};
use jwt_simple::prelude::Duration;

use crate::core::discovery::{Metadata, Which};
use crate::core::error::{ConfigError, Error, IdpFault, Internal};
use crate::core::extras::{Extra, Extras};
use crate::core::header::{names, HeaderName, HeaderValue};
use crate::core::idp::{Endpoint, IdpCall, Purpose};

/// The filter's own OAuth client.
pub struct Client {
    pub id: String,
    pub secret: Option<String>,
    /// Key for `private_key_jwt` / algorithm for `client_secret_jwt`.
    pub signer: Option<Signer>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("id", &self.id).field("secret", &self.secret.as_ref().map(|_| "<redacted>")).finish()
    }
}

/// Explicit RFC 8705 endpoint overrides (`mtls_*_endpoint`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MtlsOverrides {
    pub token: Option<Endpoint>,
    pub introspection: Option<Endpoint>,
    pub revocation: Option<Endpoint>,
}

impl MtlsOverrides {
    fn get(&self, which: Which) -> Option<&Endpoint> {
        match which {
            Which::Token => self.token.as_ref(),
            Which::Introspection => self.introspection.as_ref(),
            Which::Revocation => self.revocation.as_ref(),
        }
    }
}

/// The client, how it authenticates at each endpoint, and the upstreams it calls through.
#[derive(Debug)]
pub struct ClientSettings {
    pub client: Client,
    pub token_auth: ClientAuth,
    pub introspection_auth: ClientAuth,
    pub revocation_auth: ClientAuth,
    /// `idp_cluster`: discovery, JWKS, userinfo and calls authenticated without TLS.
    pub idp_cluster: String,
    /// `tls_client_auth_cluster`: presents the client certificate.
    pub tls_client_auth_cluster: Option<String>,
    pub mtls: MtlsOverrides,
    pub timeout_ms: u64,
    /// Extra arguments and headers of the calls (`token_post_args_*`, …).
    pub extras: Extras,
}

impl ClientSettings {
    /// The method configured for `which`.
    pub fn auth(&self, which: Which) -> ClientAuth {
        match which {
            Which::Token => self.token_auth,
            Which::Introspection => self.introspection_auth,
            Which::Revocation => self.revocation_auth,
        }
    }

    /// The upstream for a call authenticated with `method`.
    pub fn cluster_for(&self, method: ClientAuth) -> &str {
        match (&self.tls_client_auth_cluster, method.is_tls()) {
            (Some(c), true) => c,
            _ => &self.idp_cluster,
        }
    }

    /// The upstream and endpoint of a call to `which` authenticated with `auth`.
    pub fn route<'a>(&'a self, meta: &'a Metadata, which: Which, auth: ClientAuth) -> Option<(&'a str, &'a Endpoint)> {
        let (plain, alias) = meta.endpoints(which);
        let endpoint = if auth.is_tls() { self.mtls.get(which).or(alias).or(plain) } else { plain }?;
        Some((self.cluster_for(auth), endpoint))
    }

    /// A form POST of `params` to `which`, authenticated with its configured method.
    pub fn post(
        &self,
        meta: &Metadata,
        which: Which,
        purpose: Purpose,
        params: &[(&str, &str)],
        now: u64,
        jti: &str,
    ) -> Result<IdpCall, Error> {
        self.post_with(meta, which, self.auth(which), purpose, params, now, jti)
    }

    /// The same with `auth`.
    #[allow(clippy::too_many_arguments)]
    pub fn post_with(
        &self,
        meta: &Metadata,
        which: Which,
        auth: ClientAuth,
        purpose: Purpose,
        params: &[(&str, &str)],
        now: u64,
        jti: &str,
    ) -> Result<IdpCall, Error> {
        let (cluster, endpoint) = self.route(meta, which, auth).ok_or(IdpFault::EndpointMissing(which.name()))?;
        // The audience of a client assertion is the plain token endpoint (RFC 7523 section 3).
        let audience = meta.token_endpoint.as_ref().map(|e| e.url.as_str()).unwrap_or(&endpoint.url);
        let creds = authenticate(auth, &self.client, audience, now, jti)?;
        Ok(form_post(purpose, cluster, endpoint, self.timeout_ms, params, creds, self.extra(purpose)))
    }

    /// The extra arguments and headers of the endpoint a POST of `purpose` goes to.
    pub fn extra(&self, purpose: Purpose) -> Option<&Extra> {
        match purpose {
            Purpose::Token => Some(&self.extras.token),
            Purpose::Introspection => Some(&self.extras.introspection),
            _ => None,
        }
    }
}

/// How the filter authenticates itself as an OAuth client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    ClientSecretBasic,
    ClientSecretPost,
    ClientSecretJwt,
    PrivateKeyJwt,
    TlsClientAuth,
    SelfSignedTlsClientAuth,
    None,
}

impl ClientAuth {
    pub fn parse(key: &str, name: &str) -> Result<Self, ConfigError> {
        Ok(match name.trim() {
            "client_secret_basic" => ClientAuth::ClientSecretBasic,
            "client_secret_post" => ClientAuth::ClientSecretPost,
            "client_secret_jwt" => ClientAuth::ClientSecretJwt,
            "private_key_jwt" => ClientAuth::PrivateKeyJwt,
            "tls_client_auth" => ClientAuth::TlsClientAuth,
            "self_signed_tls_client_auth" => ClientAuth::SelfSignedTlsClientAuth,
            "none" => ClientAuth::None,
            other => {
                return Err(ConfigError(format!(
                    "`{key}`: unknown client authentication method `{other}` (client_secret_basic, client_secret_post, client_secret_jwt, private_key_jwt, tls_client_auth, self_signed_tls_client_auth, none)"
                )))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ClientAuth::ClientSecretBasic => "client_secret_basic",
            ClientAuth::ClientSecretPost => "client_secret_post",
            ClientAuth::ClientSecretJwt => "client_secret_jwt",
            ClientAuth::PrivateKeyJwt => "private_key_jwt",
            ClientAuth::TlsClientAuth => "tls_client_auth",
            ClientAuth::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
            ClientAuth::None => "none",
        }
    }

    /// RFC 8705 methods: the call must go through the cluster with the client certificate.
    pub fn is_tls(self) -> bool {
        matches!(self, ClientAuth::TlsClientAuth | ClientAuth::SelfSignedTlsClientAuth)
    }

    pub fn needs_secret(self) -> bool {
        matches!(self, ClientAuth::ClientSecretBasic | ClientAuth::ClientSecretPost | ClientAuth::ClientSecretJwt)
    }
}

/// A key that signs client assertions (`client_secret_jwt`, `private_key_jwt`).
pub enum Signer {
    Hs256(HS256Key),
    Hs384(HS384Key),
    Hs512(HS512Key),
    Rs256(RS256KeyPair),
    Rs384(RS384KeyPair),
    Rs512(RS512KeyPair),
    Ps256(PS256KeyPair),
    Ps384(PS384KeyPair),
    Ps512(PS512KeyPair),
    Es256(ES256KeyPair),
    Es384(ES384KeyPair),
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

impl Signer {
    /// `client_secret_jwt`: HMAC keyed with the client secret (`client_alg`, default HS256).
    pub fn hmac(alg: Option<&str>, secret: &str) -> Result<Self, ConfigError> {
        let key = secret.as_bytes();
        Ok(match alg.unwrap_or("HS256") {
            "HS256" => Signer::Hs256(HS256Key::from_bytes(key)),
            "HS384" => Signer::Hs384(HS384Key::from_bytes(key)),
            "HS512" => Signer::Hs512(HS512Key::from_bytes(key)),
            other => return Err(ConfigError(format!("`client_alg`: `{other}` cannot sign client_secret_jwt (HS256, HS384, HS512)"))),
        })
    }

    /// `private_key_jwt`: a PEM private key (`client_private_key`), algorithm `client_alg`
    /// (default RS256), key id `client_private_key_id`.
    pub fn private_key(alg: Option<&str>, pem: &str, kid: Option<&str>) -> Result<Self, ConfigError> {
        let bad = |e: jwt_simple::Error| {
            ConfigError(format!("`client_private_key`: not a usable private key for {}: {e}", alg.unwrap_or("RS256")))
        };
        macro_rules! load {
            ($ty:ident, $variant:ident) => {{
                let k = $ty::from_pem(pem).map_err(bad)?;
                Signer::$variant(match kid {
                    Some(kid) => k.with_key_id(kid),
                    None => k,
                })
            }};
        }
        Ok(match alg.unwrap_or("RS256") {
            "RS256" => load!(RS256KeyPair, Rs256),
            "RS384" => load!(RS384KeyPair, Rs384),
            "RS512" => load!(RS512KeyPair, Rs512),
            "PS256" => load!(PS256KeyPair, Ps256),
            "PS384" => load!(PS384KeyPair, Ps384),
            "PS512" => load!(PS512KeyPair, Ps512),
            "ES256" => load!(ES256KeyPair, Es256),
            "ES384" => load!(ES384KeyPair, Es384),
            other => {
                return Err(ConfigError(format!(
                    "`client_alg`: `{other}` cannot sign private_key_jwt (RS256/384/512, PS256/384/512, ES256, ES384)"
                )))
            }
        })
    }

    fn sign(&self, claims: JWTClaims<NoCustomClaims>) -> Result<String, jwt_simple::Error> {
        match self {
            Signer::Hs256(k) => k.authenticate(claims),
            Signer::Hs384(k) => k.authenticate(claims),
            Signer::Hs512(k) => k.authenticate(claims),
            Signer::Rs256(k) => k.sign(claims),
            Signer::Rs384(k) => k.sign(claims),
            Signer::Rs512(k) => k.sign(claims),
            Signer::Ps256(k) => k.sign(claims),
            Signer::Ps384(k) => k.sign(claims),
            Signer::Ps512(k) => k.sign(claims),
            Signer::Es256(k) => k.sign(claims),
            Signer::Es384(k) => k.sign(claims),
        }
    }
}

/// Lifetime of a client assertion.
const ASSERTION_TTL_SECS: u64 = 60;

/// Headers and form fields that authenticate one request.
#[derive(Default, PartialEq, Eq)]
pub struct Credentials {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub form: Vec<(&'static str, String)>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// RFC 6749 2.3.1: `Authorization: Basic` with form-urlencoded id and secret.
pub fn basic(id: &str, secret: &str) -> HeaderValue {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(id), enc(secret));
    // Base64 and form encoding leave nothing a header value cannot hold.
    HeaderValue::new(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw)))
        .unwrap_or_else(|_| HeaderValue::from(EMPTY))
}

const EMPTY: crate::core::header::Static = HeaderValue::from_static("");

/// Credentials for `method`. `audience` is the token endpoint URL (RFC 7523 `aud`),
/// `now` the time in seconds, `jti` a fresh random identifier.
pub fn authenticate(method: ClientAuth, client: &Client, audience: &str, now: u64, jti: &str) -> Result<Credentials, Error> {
    let mut c = Credentials::default();
    let secret = || client.secret.as_deref().ok_or(Internal::NoClientSecret);
    match method {
        ClientAuth::ClientSecretBasic => {
            c.headers.push((names::AUTHORIZATION, basic(&client.id, secret()?)));
        }
        ClientAuth::ClientSecretPost => {
            c.form.push(("client_id", client.id.clone()));
            c.form.push(("client_secret", secret()?.to_string()));
        }
        ClientAuth::ClientSecretJwt | ClientAuth::PrivateKeyJwt => {
            let signer = client.signer.as_ref().ok_or(Internal::NoSigningKey)?;
            let claims = JWTClaims {
                issued_at: Some(Duration::from_secs(now)),
                expires_at: Some(Duration::from_secs(now + ASSERTION_TTL_SECS)),
                invalid_before: None,
                issuer: Some(client.id.clone()),
                subject: Some(client.id.clone()),
                audiences: Some(Audiences::AsString(audience.to_string())),
                jwt_id: Some(jti.to_string()),
                nonce: None,
                custom: NoCustomClaims {},
            };
            let jwt = signer.sign(claims).map_err(|_| Internal::SigningFailed)?;
            c.form.push(("client_id", client.id.clone()));
            c.form.push(("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()));
            c.form.push(("client_assertion", jwt));
        }
        ClientAuth::TlsClientAuth | ClientAuth::SelfSignedTlsClientAuth | ClientAuth::None => {
            c.form.push(("client_id", client.id.clone()));
        }
    }
    Ok(c)
}

/// A form POST with the given credentials.
pub fn form_post(
    purpose: Purpose,
    cluster: &str,
    endpoint: &Endpoint,
    timeout_ms: u64,
    params: &[(&str, &str)],
    creds: Credentials,
    extra: Option<&Extra>,
) -> IdpCall {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        form.append_pair(k, v);
    }
    for (k, v) in &creds.form {
        form.append_pair(k, v);
    }
    // The endpoint's extra arguments after the protocol's and the client authentication's.
    if let Some(extra) = extra {
        extra.append_args(&mut form);
    }
    let mut call = IdpCall::form_post(purpose, cluster, endpoint, timeout_ms, form.finish());
    call.headers.extend(creds.headers);
    call.headers.extend(extra.into_iter().flat_map(|e| e.headers.iter().cloned()));
    call
}

#[cfg(test)]
mod tests {
    use super::*;
    use jwt_simple::prelude::{HS256Key, VerificationOptions};

    fn client(secret: Option<&str>, signer: Option<Signer>) -> Client {
        Client { id: "my client".into(), secret: secret.map(Into::into), signer }
    }

    #[test]
    fn tls_client_auth_sends_client_id_and_no_secret() {
        for m in [ClientAuth::TlsClientAuth, ClientAuth::SelfSignedTlsClientAuth] {
            let c = authenticate(m, &client(Some("s3cret"), None), "https://i/t", 0, "j").unwrap();
            assert!(c.headers.is_empty());
            assert_eq!(c.form, vec![("client_id", "my client".to_string())]);
            assert!(m.is_tls());
        }
    }

    #[test]
    fn basic_form_encodes_id_and_secret() {
        let c = authenticate(ClientAuth::ClientSecretBasic, &client(Some("a:b%"), None), "", 0, "j").unwrap();
        let v = c.headers[0].1.as_str();
        let raw = base64::engine::general_purpose::STANDARD.decode(v.strip_prefix("Basic ").unwrap()).unwrap();
        assert_eq!(String::from_utf8(raw).unwrap(), "my+client:a%3Ab%25");
        assert!(c.form.is_empty());
    }

    #[test]
    fn post_puts_secret_in_body() {
        let c = authenticate(ClientAuth::ClientSecretPost, &client(Some("s"), None), "", 0, "j").unwrap();
        assert_eq!(c.form, vec![("client_id", "my client".into()), ("client_secret", "s".into())]);
    }

    #[test]
    fn client_secret_jwt_is_verifiable_with_the_secret() {
        let signer = Signer::hmac(None, "shared-secret-shared-secret-shared-secret").unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let c = authenticate(ClientAuth::ClientSecretJwt, &client(Some("x"), Some(signer)), "https://i/token", now, "jti-1").unwrap();
        let jwt = &c.form.iter().find(|(k, _)| *k == "client_assertion").unwrap().1;
        let key = HS256Key::from_bytes(b"shared-secret-shared-secret-shared-secret");
        let opts = VerificationOptions::default();
        let claims = key.verify_token::<NoCustomClaims>(jwt, Some(opts)).unwrap();
        assert_eq!(claims.issuer.as_deref(), Some("my client"));
        assert_eq!(claims.subject.as_deref(), Some("my client"));
        assert_eq!(claims.jwt_id.as_deref(), Some("jti-1"));
        assert_eq!(claims.expires_at.unwrap().as_secs(), now + 60);
    }

    #[test]
    fn unknown_method_and_bad_keys_are_config_errors() {
        assert!(ClientAuth::parse("client_auth", "mtls").unwrap_err().0.contains("client_auth"));
        assert!(Signer::private_key(None, "not a pem", None).unwrap_err().0.contains("client_private_key"));
        assert!(Signer::hmac(Some("RS256"), "s").unwrap_err().0.contains("client_alg"));
    }
}

//! JWT access tokens: the IdP's key set and signature and claim verification.
//!
//! Keys come from the JWKS and are chosen by `kid` (never by trying every key). Only
//! asymmetric algorithms are accepted — RS256/384/512, PS256/384/512, ES256/384, EdDSA —
//! so `alg: none` and HMAC signed with a public key are refused before any key is touched.
//! `iss` must be the issuer whose key set it is (the caller chooses the set by the token's
//! `iss`, [`issuer`]), `exp` is required, `exp`/`nbf`/`iat` are checked with
//! `leeway`. RSA signatures are checked by [`crate::core::rsa`] (the hot path: most IdPs sign
//! with RS256), the others by `jwt-simple`; with the `ring` feature (the native build, where
//! a native crypto library is several times faster), every signature is checked by `ring`.
//! Which keys a JWK yields, and so which tokens pass, is the same in both builds: keys are
//! accepted by the same checks ([`build`]) before either library sees them.

use std::collections::HashMap;
use std::rc::Rc;

use base64::Engine;
use jwt_simple::algorithms::{
    ECDSAP256PublicKeyLike, ECDSAP384PublicKeyLike, ES256PublicKey, ES384PublicKey, Ed25519PublicKey, EdDSAPublicKeyLike,
};
use jwt_simple::claims::NoCustomClaims;
use jwt_simple::common::VerificationOptions;
use jwt_simple::prelude::Duration;
use serde::Deserialize;

use crate::core::claims::Claims;
use crate::core::error::TokenError;
use crate::core::rsa::{self, Hash};

/// What a token must say besides a valid signature.
pub struct Expect<'a> {
    pub issuer: &'a str,
    /// `aud` must contain this (ID tokens: the client id).
    pub audience: Option<&'a str>,
    /// `nonce` must equal this (ID tokens).
    pub nonce: Option<&'a str>,
    pub leeway_secs: u64,
    pub now_secs: u64,
}

/// A verifying key for one algorithm.
enum Verifier {
    /// RS* (`pss` false) or PS*; one prepared key shared by the algorithms of its JWK.
    Rsa {
        key: Rc<rsa::PublicKey>,
        hash: Hash,
        pss: bool,
    },
    Es256(ES256PublicKey),
    Es384(ES384PublicKey),
    EdDsa(Ed25519PublicKey),
    /// Any algorithm, checked by `ring` (the native build).
    #[cfg(feature = "ring")]
    Ring(ring_keys::Key),
}

impl Verifier {
    /// Checks the signature (and, through `jwt-simple`, also the claims; ours are checked
    /// by [`claims_hold`] for every algorithm).
    fn verify(&self, token: &str, opts: VerificationOptions) -> bool {
        let o = Some(opts);
        match self {
            Verifier::Rsa { key, hash, pss } => {
                let Some((signed, sig)) = token.rsplit_once('.') else { return false };
                let Ok(sig) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig) else { return false };
                if *pss {
                    key.verify_pss(*hash, signed.as_bytes(), &sig)
                } else {
                    key.verify_pkcs1v15(*hash, signed.as_bytes(), &sig)
                }
            }
            Verifier::Es256(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            Verifier::Es384(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            Verifier::EdDsa(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            #[cfg(feature = "ring")]
            Verifier::Ring(k) => k.verify(token),
        }
    }
}

/// Signature checks by `ring`, for keys [`build`] accepted.
#[cfg(feature = "ring")]
mod ring_keys {
    use base64::Engine;
    use ring::signature::{self, RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm};

    pub enum Key {
        Rsa { n: std::rc::Rc<[u8]>, e: std::rc::Rc<[u8]>, params: &'static RsaParameters },
        Other { alg: &'static dyn VerificationAlgorithm, public: Vec<u8> },
    }

    impl Key {
        /// For JWS algorithm `alg` (one of [`super::ASYMMETRIC`]).
        pub fn rsa(n: std::rc::Rc<[u8]>, e: std::rc::Rc<[u8]>, alg: &str) -> Option<Key> {
            let params = match alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                "PS512" => &signature::RSA_PSS_2048_8192_SHA512,
                _ => return None,
            };
            Some(Key::Rsa { n, e, params })
        }

        /// `public`: the uncompressed EC point, or the Ed25519 key.
        pub fn other(alg: &str, public: Vec<u8>) -> Option<Key> {
            let alg: &'static dyn VerificationAlgorithm = match alg {
                "ES256" => &signature::ECDSA_P256_SHA256_FIXED,
                "ES384" => &signature::ECDSA_P384_SHA384_FIXED,
                "EdDSA" => &signature::ED25519,
                _ => return None,
            };
            Some(Key::Other { alg, public })
        }

        pub fn verify(&self, token: &str) -> bool {
            let Some((signed, sig)) = token.rsplit_once('.') else { return false };
            let Ok(sig) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig) else { return false };
            match self {
                Key::Rsa { n, e, params } => RsaPublicKeyComponents { n: &**n, e: &**e }.verify(params, signed.as_bytes(), &sig).is_ok(),
                Key::Other { alg, public } => UnparsedPublicKey::new(*alg, public).verify(signed.as_bytes(), &sig).is_ok(),
            }
        }
    }
}

const ASYMMETRIC: [&str; 9] = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

fn b64(s: &Option<String>) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.as_deref()?.trim_end_matches('=')).ok()
}

/// The IdP's verification keys, by `kid` and algorithm.
#[derive(Default)]
pub struct KeySet {
    /// (kid, alg) → key. Keys without `kid` are stored under the empty kid.
    keys: HashMap<(String, &'static str), Verifier>,
    count: usize,
    /// Signature keys that could not be used, described for the log (kid and type).
    skipped: Vec<String>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeySet({} keys)", self.count)
    }
}

impl KeySet {
    /// Parses a JWKS. Keys that are not for signatures, or not understood, are skipped.
    pub fn parse(body: &[u8]) -> Result<KeySet, String> {
        let raw: RawJwks = serde_json::from_slice(body).map_err(|_| "JWKS is not a JSON key set".to_string())?;
        let mut set = KeySet::default();
        for v in raw.keys {
            let Ok(k) = serde_json::from_value::<RawJwk>(v) else {
                set.skipped.push("an entry that is not a JWK".to_string());
                continue;
            };
            if k.use_.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            let kid = k.kid.clone().unwrap_or_default();
            let mut added = false;
            let mut rsa_key = None;
            for alg in ASYMMETRIC {
                if k.alg.as_deref().is_some_and(|a| a != alg) {
                    continue;
                }
                if let Some(v) = build(&k, alg, &mut rsa_key) {
                    set.keys.insert((kid.clone(), alg), v);
                    added = true;
                }
            }
            set.count += usize::from(added);
            if !added {
                let kid: String = kid.chars().filter(|c| !c.is_control()).take(64).collect();
                let kty: String = k.kty.chars().filter(|c| c.is_ascii_graphic()).take(16).collect();
                let crv: String = k.crv.unwrap_or_default().chars().filter(|c| c.is_ascii_graphic()).take(16).collect();
                set.skipped.push(format!("kid `{kid}` ({kty} {crv}: unsupported or malformed)"));
            }
        }
        Ok(set)
    }

    /// A token without `kid` may use the JWKS' only key (OpenID RP conformance:
    /// kid absent, single JWK); with several keys it names none of them.
    fn only_key(&self, kid: &str, alg: &'static str) -> Option<&Verifier> {
        if !kid.is_empty() || self.count != 1 {
            return None;
        }
        self.keys.iter().find(|((_, a), _)| *a == alg).map(|(_, v)| v)
    }

    /// Signature keys of the JWKS that were skipped, described for the log.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether a key with this `kid` is (still) in the set.
    pub fn has_kid(&self, kid: &str) -> bool {
        (kid.is_empty() && self.count == 1) || self.keys.keys().any(|(k, _)| k == kid)
    }

    /// Verifies an access token and returns its claims.
    pub fn verify(&self, token: &str, issuer: &str, leeway_secs: u64, now_secs: u64) -> Result<Claims, TokenError> {
        self.verify_with(token, &Expect { issuer, audience: None, nonce: None, leeway_secs, now_secs })
    }

    /// Verifies `token` against `expect` and returns its claims.
    pub fn verify_with(&self, token: &str, expect: &Expect<'_>) -> Result<Claims, TokenError> {
        let (issuer, leeway_secs, now_secs) = (expect.issuer, expect.leeway_secs, expect.now_secs);
        let header = decode_part(token, 0)?;
        let alg = header.get("alg").and_then(|a| a.as_str()).ok_or(TokenError::Malformed)?;
        let alg = *ASYMMETRIC.iter().find(|a| **a == alg).ok_or(TokenError::AlgorithmRefused)?;
        let kid = header.get("kid").and_then(|k| k.as_str()).unwrap_or("");
        let key = match self.keys.get(&(kid.to_string(), alg)).or_else(|| self.only_key(kid, alg)) {
            Some(k) => k,
            None if self.keys.keys().any(|(k, _)| k == kid) => return Err(TokenError::KeyMismatch),
            None => return Err(TokenError::UnknownKey),
        };
        let claims = decode_part(token, 1)?;
        if !claims.get("exp").is_some_and(|e| e.is_number()) {
            return Err(TokenError::NoExpiry);
        }
        let opts = VerificationOptions {
            time_tolerance: Some(Duration::from_secs(leeway_secs)),
            artificial_time: Some(Duration::from_secs(now_secs)),
            allowed_issuers: Some(std::iter::once(issuer.to_string()).collect()),
            allowed_audiences: expect.audience.map(|a| std::iter::once(a.to_string()).collect()),
            required_nonce: expect.nonce.map(str::to_string),
            ..Default::default()
        };
        if !key.verify(token, opts) || !claims_hold(&claims, expect) {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }
}

/// `exp` (required), `nbf` and `iat` against the clock with leeway; `iss`; `aud` and
/// `nonce` when expected.
fn claims_hold(claims: &Claims, expect: &Expect<'_>) -> bool {
    // A time claim that is present must be a number.
    let time = |name: &str| match claims.get(name) {
        None => Ok(None),
        Some(v) => v.as_f64().map(|f| Some(f.max(0.0) as u64)).ok_or(()),
    };
    let (Ok(Some(exp)), Ok(nbf), Ok(iat)) = (time("exp"), time("nbf"), time("iat")) else { return false };
    let (now, leeway) = (expect.now_secs, expect.leeway_secs);
    let latest = now.saturating_add(leeway);
    let in_time = now <= exp.saturating_add(leeway) && nbf.is_none_or(|n| n <= latest) && iat.is_none_or(|i| i <= latest);
    let issuer = claims.get("iss").and_then(|i| i.as_str()) == Some(expect.issuer);
    let audience = expect.audience.is_none_or(|want| match claims.get("aud") {
        Some(serde_json::Value::String(a)) => a == want,
        Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(want)),
        _ => false,
    });
    let nonce = expect.nonce.is_none_or(|want| claims.get("nonce").and_then(|n| n.as_str()) == Some(want));
    in_time && issuer && audience && nonce
}

/// The verifier of `k` for `alg`, when the JWK is a usable key for it.
fn build(k: &RawJwk, alg: &'static str, rsa_key: &mut Option<Option<Rc<rsa::PublicKey>>>) -> Option<Verifier> {
    let own = build_own(k, alg, rsa_key)?;
    #[cfg(feature = "ring")]
    {
        // Accepted by the same checks as in Wasm, then handed to `ring`.
        drop(own);
        let strip =
            |v: Vec<u8>| -> Rc<[u8]> { v.iter().position(|b| *b != 0).map_or(Rc::from(&[][..]), |i| Rc::from(v.get(i..).unwrap_or(&[]))) };
        match k.kty.as_str() {
            "RSA" => ring_keys::Key::rsa(strip(b64(&k.n)?), strip(b64(&k.e)?), alg),
            "EC" => ring_keys::Key::other(alg, [&[4u8][..], &b64(&k.x)?, &b64(&k.y)?].concat()),
            _ => ring_keys::Key::other(alg, b64(&k.x)?),
        }
        .map(Verifier::Ring)
    }
    #[cfg(not(feature = "ring"))]
    Some(own)
}

/// Prepares each RSA key once for all the algorithms its JWK allows (computing `R² mod n`
/// is the costly part).
fn build_own(k: &RawJwk, alg: &'static str, rsa_key: &mut Option<Option<Rc<rsa::PublicKey>>>) -> Option<Verifier> {
    match (k.kty.as_str(), alg) {
        ("RSA", _) if alg.starts_with("RS") || alg.starts_with("PS") => {
            let key = rsa_key
                .get_or_insert_with(|| {
                    let (n, e) = (b64(&k.n)?, b64(&k.e)?);
                    rsa::PublicKey::from_components(&n, &e).map(Rc::new)
                })
                .clone()?;
            let hash = match alg.get(2..) {
                Some("256") => Hash::Sha256,
                Some("384") => Hash::Sha384,
                _ => Hash::Sha512,
            };
            Some(Verifier::Rsa { key, hash, pss: alg.starts_with("PS") })
        }
        ("EC", "ES256") | ("EC", "ES384") => {
            let want = if alg == "ES256" { "P-256" } else { "P-384" };
            if k.crv.as_deref() != Some(want) {
                return None;
            }
            let mut point = vec![4u8];
            point.extend(b64(&k.x)?);
            point.extend(b64(&k.y)?);
            Some(if alg == "ES256" {
                Verifier::Es256(ES256PublicKey::from_bytes(&point).ok()?)
            } else {
                Verifier::Es384(ES384PublicKey::from_bytes(&point).ok()?)
            })
        }
        ("OKP", "EdDSA") if k.crv.as_deref() == Some("Ed25519") => Some(Verifier::EdDsa(Ed25519PublicKey::from_bytes(&b64(&k.x)?).ok()?)),
        _ => None,
    }
}

/// Decodes part `i` (0 header, 1 payload) of a compact JWS as a JSON object.
fn decode_part(token: &str, i: usize) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let part = if i == 0 { h } else { p };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// The `iss` a compact JWS claims (`None`: none, or not a string), read before any key is
/// looked at, to choose the key sets of that issuer.
pub fn issuer(token: &str) -> Result<Option<String>, TokenError> {
    Ok(decode_part(token, 1)?.get("iss").and_then(|i| i.as_str()).map(str::to_string))
}

/// The `kid` of a compact JWS header (empty when absent).
pub fn kid(token: &str) -> Option<String> {
    let header = decode_part(token, 0).ok()?;
    Some(header.get("kid").and_then(|k| k.as_str()).unwrap_or("").to_string())
}

/// Claims of a JWT that came straight from the IdP's token endpoint over TLS (not verified:
/// used only to authorize and to fill upstream headers).
pub fn unverified_claims(token: &str) -> Option<Claims> {
    decode_part(token, 1).ok()
}

/// What a grant establishes about the user, as Kong reads it: the access token's claims
/// when it is a JWT, else the ID token's (both came from the token endpoint over TLS; OIDC
/// Core 3.1.3.7 lets TLS stand for the signature there), else nothing; with the token
/// response's `scope` when the claims carry none.
pub fn grant_claims(access_token: &str, id_token: Option<&str>, scope: Option<&str>) -> Claims {
    let mut claims = unverified_claims(access_token).or_else(|| id_token.and_then(unverified_claims)).unwrap_or_default();
    if let Some(s) = scope {
        claims.entry("scope").or_insert_with(|| s.into());
    }
    claims
}

#[cfg(test)]
mod tests {
    use super::*;
    use jwt_simple::prelude::*;

    const ISS: &str = "https://idp.example.com";

    fn now() -> u64 {
        1_800_000_000
    }

    fn claims(exp_in: i64) -> JWTClaims<serde_json::Value> {
        let mut c = jwt_simple::prelude::Claims::with_custom_claims(
            serde_json::json!({"scope": "api:read"}),
            jwt_simple::prelude::Duration::from_secs(60),
        );
        c.issued_at = Some(jwt_simple::prelude::Duration::from_secs(now()));
        c.invalid_before = None;
        c.expires_at = Some(jwt_simple::prelude::Duration::from_secs((now() as i64 + exp_in) as u64));
        c.issuer = Some(ISS.into());
        c
    }

    fn rsa_jwks(kp: &RS256KeyPair, kid: &str) -> Vec<u8> {
        let c = kp.public_key().to_components();
        let b = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        serde_json::json!({"keys": [
            {"kty": "RSA", "kid": kid, "use": "sig", "n": b(&c.n), "e": b(&c.e)},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": b(&c.n), "e": b(&c.e)},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}
        ]})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn rs256_by_kid() {
        let kp = RS256KeyPair::generate(2048).unwrap().with_key_id("k1");
        let set = KeySet::parse(&rsa_jwks(&kp, "k1")).unwrap();
        assert_eq!(set.len(), 1);
        let token = kp.sign(claims(300)).unwrap();
        let c = set.verify(&token, ISS, 0, now()).unwrap();
        assert_eq!(c["scope"], "api:read");
        assert_eq!(set.verify(&token, "https://other", 0, now()), Err(TokenError::Invalid));
        assert_eq!(set.verify(&token, ISS, 0, now() + 301), Err(TokenError::Invalid));
        assert!(set.verify(&token, ISS, 10, now() + 305).is_ok(), "leeway");
        // unknown kid
        let other = RS256KeyPair::generate(2048).unwrap().with_key_id("k2");
        assert_eq!(set.verify(&other.sign(claims(300)).unwrap(), ISS, 0, now()), Err(TokenError::UnknownKey));
        // same kid, other key: bad signature
        let forged = RS256KeyPair::generate(2048).unwrap().with_key_id("k1");
        assert_eq!(set.verify(&forged.sign(claims(300)).unwrap(), ISS, 0, now()), Err(TokenError::Invalid));
    }

    #[test]
    fn none_and_hmac_are_refused() {
        let kp = RS256KeyPair::generate(2048).unwrap().with_key_id("k1");
        let set = KeySet::parse(&rsa_jwks(&kp, "k1")).unwrap();
        let b = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let payload = b(&format!(r#"{{"iss":"{ISS}","exp":{}}}"#, now() + 60));
        let none = format!("{}.{}.", b(r#"{"alg":"none","kid":"k1"}"#), payload);
        assert_eq!(set.verify(&none, ISS, 0, now()), Err(TokenError::AlgorithmRefused));
        let pem = kp.public_key().to_pem().unwrap();
        let hs = HS256Key::from_bytes(pem.as_bytes()).with_key_id("k1");
        let confused = hs.authenticate(claims(60)).unwrap();
        assert_eq!(set.verify(&confused, ISS, 0, now()), Err(TokenError::AlgorithmRefused));
        assert_eq!(set.verify("a.b", ISS, 0, now()), Err(TokenError::Malformed));
        assert_eq!(set.verify("!!.!!.!!", ISS, 0, now()), Err(TokenError::Malformed));
    }

    #[test]
    fn exp_is_required_and_alg_must_match_key() {
        let kp = RS256KeyPair::generate(2048).unwrap().with_key_id("k1");
        let set = KeySet::parse(&rsa_jwks(&kp, "k1")).unwrap();
        let mut c = claims(60);
        c.expires_at = None;
        assert_eq!(set.verify(&kp.sign(c).unwrap(), ISS, 0, now()), Err(TokenError::NoExpiry));
        let es = ES256KeyPair::generate().with_key_id("k1");
        assert_eq!(set.verify(&es.sign(claims(60)).unwrap(), ISS, 0, now()), Err(TokenError::KeyMismatch));
    }

    #[test]
    fn es256_and_eddsa() {
        let es = ES256KeyPair::generate().with_key_id("ec");
        let pk = es.public_key().public_key().to_bytes_uncompressed();
        let b = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let ed = Ed25519KeyPair::generate().with_key_id("ed");
        let jwks = serde_json::json!({"keys": [
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": b(&pk[1..33]), "y": b(&pk[33..])},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b(&ed.public_key().to_bytes())}
        ]});
        let set = KeySet::parse(jwks.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.verify(&es.sign(claims(60)).unwrap(), ISS, 0, now()).is_ok());
        assert!(set.verify(&ed.sign(claims(60)).unwrap(), ISS, 0, now()).is_ok());
    }

    #[test]
    fn claim_rules() {
        let c = |v: serde_json::Value| v.as_object().unwrap().clone();
        let e = |aud, nonce| Expect { issuer: ISS, audience: aud, nonce, leeway_secs: 10, now_secs: 1000 };
        let ok = c(serde_json::json!({"iss": ISS, "exp": 1100, "aud": ["a", "b"], "nonce": "n"}));
        assert!(claims_hold(&ok, &e(Some("b"), Some("n"))));
        assert!(!claims_hold(&ok, &e(Some("c"), None)));
        assert!(!claims_hold(&ok, &e(None, Some("m"))));
        let with = |k: &str, v: serde_json::Value| {
            let mut x = ok.clone();
            x.insert(k.into(), v);
            x
        };
        assert!(claims_hold(&with("exp", 995.into()), &e(None, None)), "within leeway");
        assert!(!claims_hold(&with("exp", 989.into()), &e(None, None)));
        assert!(!claims_hold(&with("exp", "1100".into()), &e(None, None)));
        assert!(claims_hold(&with("nbf", 1010.into()), &e(None, None)));
        assert!(!claims_hold(&with("nbf", 1011.into()), &e(None, None)));
        assert!(!claims_hold(&with("nbf", "0".into()), &e(None, None)));
        assert!(!claims_hold(&with("iat", 1011.into()), &e(None, None)));
        assert!(!claims_hold(&with("iss", "https://other".into()), &e(None, None)));
        assert!(claims_hold(&with("aud", "b".into()), &e(Some("b"), None)));
        let mut no_exp = ok.clone();
        no_exp.remove("exp");
        assert!(!claims_hold(&no_exp, &e(None, None)));
    }

    #[test]
    fn a_token_without_kid_uses_the_only_key_and_no_other() {
        let kp = RS256KeyPair::generate(2048).unwrap();
        let c = kp.public_key().to_components();
        let b = |x: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(x);
        let jwk = |kid: &str| serde_json::json!({"kty": "RSA", "kid": kid, "n": b(&c.n), "e": b(&c.e)});
        let one = KeySet::parse(serde_json::json!({"keys": [jwk("k1")]}).to_string().as_bytes()).unwrap();
        let token = kp.sign(claims(300)).unwrap();
        assert!(one.verify(&token, ISS, 0, now()).is_ok());
        assert!(one.has_kid(""));
        let two = KeySet::parse(serde_json::json!({"keys": [jwk("k1"), jwk("k2")]}).to_string().as_bytes()).unwrap();
        assert_eq!(two.verify(&token, ISS, 0, now()), Err(TokenError::UnknownKey));
    }
}

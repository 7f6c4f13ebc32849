//! Proof of possession (RFC 8705 section 3): a certificate-bound access token is accepted
//! only over a TLS connection that presents the certificate it is bound to.

use base64::Engine;

use crate::core::claims::Claims;
use crate::core::error::TokenError;

/// `proof_of_possession_mtls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pop {
    Off,
    /// Every token must carry `cnf.x5t#S256` equal to the client certificate's thumbprint.
    Strict,
    /// Checked when the token carries it.
    Optional,
}

/// The token's `cnf.x5t#S256` against the lowercase hex SHA-256 of the client certificate
/// the host verified on this connection.
pub fn check(pop: Pop, claims: &Claims, peer_sha256_hex: Option<&str>) -> Result<(), TokenError> {
    let bound = claims.get("cnf").and_then(|c| c.get("x5t#S256")).and_then(|t| t.as_str());
    let bound = match (pop, bound) {
        (Pop::Off, _) | (Pop::Optional, None) => return Ok(()),
        (Pop::Strict, None) => return Err(TokenError::NotBound),
        (_, Some(b)) => b,
    };
    let Some(peer) = peer_sha256_hex.and_then(|h| decode_hex(h.trim())) else { return Err(TokenError::CertificateMissing) };
    let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(peer);
    if thumbprint != bound.trim_end_matches('=') {
        return Err(TokenError::OtherCertificate);
    }
    Ok(())
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_binding() {
        let digest = "aa".repeat(32);
        let thumb = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xaa; 32]);
        let bound: Claims = serde_json::json!({"cnf": {"x5t#S256": thumb}}).as_object().unwrap().clone();
        let unbound = Claims::new();
        assert!(check(Pop::Strict, &bound, Some(&digest)).is_ok());
        assert_eq!(check(Pop::Strict, &bound, Some(&"bb".repeat(32))), Err(TokenError::OtherCertificate));
        assert_eq!(check(Pop::Strict, &bound, None), Err(TokenError::CertificateMissing));
        assert_eq!(check(Pop::Strict, &unbound, Some(&digest)), Err(TokenError::NotBound));
        assert!(check(Pop::Optional, &unbound, None).is_ok());
        assert!(check(Pop::Optional, &bound, None).is_err());
        assert!(check(Pop::Off, &bound, None).is_ok());
        assert!(check(Pop::Strict, &bound, Some("zz")).is_err());
    }
}

//! RSA signature verification (RS256/384/512 and PS256/384/512) for JWTs, fast in Wasm.
//!
//! The public-key operation is a handful of modular multiplications (17 for e = 65537).
//! General-purpose big-integer crates spend most of their time allocating and, on Wasm
//! (no 64×64→128-bit multiply), on 64-bit limbs; here it is Montgomery multiplication
//! (CIOS) on 32-bit limbs into one preallocated buffer, with `R² mod n` computed once per
//! key when the JWKS is loaded. Only public data is involved, so nothing needs constant
//! time. Encodings are checked as RFC 8017 says: PKCS#1 v1.5 by building the expected
//! encoding and comparing (§8.2.2), PSS by EMSA-PSS-VERIFY (§9.1.2) with the salt as long as
//! the hash (RFC 7518 §3.5).

use sha2::{Digest, Sha256, Sha384, Sha512};

/// The hash of an RSA JWS algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            Hash::Sha256 => run::<Sha256>(parts),
            Hash::Sha384 => run::<Sha384>(parts),
            Hash::Sha512 => run::<Sha512>(parts),
        }
    }

    fn len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// DER `DigestInfo` prefix (RFC 8017 §9.2 note 1).
    fn digest_info(self) -> &'static [u8] {
        match self {
            Hash::Sha256 => {
                &[0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20]
            }
            Hash::Sha384 => {
                &[0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30]
            }
            Hash::Sha512 => {
                &[0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40]
            }
        }
    }
}

/// Smallest and largest modulus accepted (RFC 7518 §3.3 requires 2048 bits or more).
const MIN_BITS: usize = 2048;
const MAX_BITS: usize = 8192;

/// An RSA public key prepared for verification.
pub struct PublicKey {
    /// Modulus, little-endian 32-bit limbs, the top one non-zero.
    n: Vec<u32>,
    /// −n⁻¹ mod 2³².
    n0inv: u32,
    /// R² mod n, R = 2^(32·limbs).
    rr: Vec<u32>,
    e: u64,
    /// Modulus length in bits and bytes.
    bits: usize,
    len: usize,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RSA-{} e={}", self.bits, self.e)
    }
}

impl PublicKey {
    /// From the JWK's big-endian `n` and `e`. `None` for an even or out-of-range modulus
    /// or an exponent that is even, below 3 or above 2⁶⁴.
    pub fn from_components(n: &[u8], e: &[u8]) -> Option<PublicKey> {
        let n = strip_zeros(n);
        let e = strip_zeros(e);
        let bits = n.len().checked_mul(8)?.checked_sub(n.first()?.leading_zeros() as usize)?;
        if !(MIN_BITS..=MAX_BITS).contains(&bits) || e.len() > 8 || n.last()? & 1 == 0 {
            return None;
        }
        let e = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        if e < 3 || e & 1 == 0 {
            return None;
        }
        let limbs = n.len().div_ceil(4);
        let n_limbs = from_be(n, limbs)?;
        let n0 = *n_limbs.first()?;
        // Newton's iteration doubles the correct low bits: 1 → 32 in five steps.
        let inv = (0..5).fold(1u32, |x, _| x.wrapping_mul(2u32.wrapping_sub(n0.wrapping_mul(x))));
        // R² mod n by doubling 1, 2·32·limbs times (once per key).
        let mut r = vec![0u32; limbs];
        *r.first_mut()? = 1;
        for _ in 0..64 * limbs {
            let carry = shl1(&mut r);
            if carry || !less(&r, &n_limbs) {
                sub(&mut r, &n_limbs);
            }
        }
        Some(PublicKey { n: n_limbs, n0inv: inv.wrapping_neg(), rr: r, e, bits, len: n.len() })
    }

    /// Size of the modulus in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// RSAVP1: `sig^e mod n` as `len` big-endian bytes; `None` when `sig` is not a
    /// `len`-byte integer below n.
    fn public_op(&self, sig: &[u8]) -> Option<Vec<u8>> {
        if sig.len() != self.len {
            return None;
        }
        let k = self.n.len();
        let s = from_be(sig, k)?;
        if !less(&s, &self.n) {
            return None;
        }
        let mut t = vec![0u32; 2 * (k + 1)];
        let (mut acc, mut next) = (vec![0u32; k], vec![0u32; k]);
        self.mont_mul(&s, &self.rr, &mut t, &mut acc); // s·R
        let base = acc.clone();
        // Bits of e below the top one, except bit 0: square, and multiply where set.
        let top = 63 - self.e.leading_zeros();
        for i in (1..top).rev() {
            self.mont_mul(&acc, &acc, &mut t, &mut next);
            std::mem::swap(&mut acc, &mut next);
            if (self.e >> i) & 1 == 1 {
                self.mont_mul(&acc, &base, &mut t, &mut next);
                std::mem::swap(&mut acc, &mut next);
            }
        }
        // Bit 0 is set (`from_components` takes odd e ≥ 3 only): square, then multiply by s
        // itself, not s·R, which also leaves Montgomery form: s^(e-1)·R · s · R⁻¹ = s^e.
        self.mont_mul(&acc, &acc, &mut t, &mut next);
        self.mont_mul(&next, &s, &mut t, &mut acc);
        Some(to_be(&acc, self.len))
    }

    /// `out = a·b·R⁻¹ mod n`: CIOS with the multiplication and the reduction fused into one
    /// pass per limb of `b` (two carry chains), ping-ponging between the halves of `t`.
    /// `a`, `b`, `out` have the modulus' limb count k and `t` 2(k + 1) limbs; anything else
    /// leaves `out` untouched (and verification fails). Iterators, no indexing: this loop is
    /// nearly all of a cold RS256 check.
    fn mont_mul(&self, a: &[u32], b: &[u32], t: &mut [u32], out: &mut [u32]) {
        let n = self.n.as_slice();
        let k = n.len();
        if k == 0 || a.len() != k || b.len() != k || out.len() != k || t.len() != 2 * (k + 1) {
            return;
        }
        let (Some((&a0, a_rest)), Some((&n0, n_rest))) = (a.split_first(), n.split_first()) else { return };
        let (mut x, mut y) = t.split_at_mut(k + 1);
        x.fill(0);
        for &bi in b {
            let bi = u64::from(bi);
            let (Some((&x0, x_rest)), Some(&xk)) = (x.split_first(), x.last()) else { return };
            // Column 0 decides m so that it becomes zero; it is shifted out.
            let s0 = u64::from(x0) + u64::from(a0) * bi;
            let m = u64::from((s0 as u32).wrapping_mul(self.n0inv));
            let r0 = u64::from(s0 as u32) + m * u64::from(n0);
            let (mut c1, mut c2) = (s0 >> 32, r0 >> 32);
            // Columns 1..k, each written one limb lower.
            for (((yj, &xj), &aj), &nj) in y.iter_mut().zip(x_rest).zip(a_rest).zip(n_rest) {
                let s = u64::from(xj) + u64::from(aj) * bi + c1;
                let r = u64::from(s as u32) + m * u64::from(nj) + c2;
                *yj = r as u32;
                c1 = s >> 32;
                c2 = r >> 32;
            }
            // Column k: what is left of both chains (the sum stays below 2n < 2^(32k+1)).
            let top = u64::from(xk) + c1 + c2;
            let Some([lo, hi]) = y.get_mut(k - 1..) else { return };
            *lo = top as u32;
            *hi = (top >> 32) as u32;
            std::mem::swap(&mut x, &mut y);
        }
        let (lo, hi) = x.split_at_mut(k);
        if hi.first() != Some(&0) || !less(lo, n) {
            sub(lo, n);
        }
        out.copy_from_slice(lo);
    }

    /// RSASSA-PKCS1-v1_5 verification of `sig` over `msg`.
    pub fn verify_pkcs1v15(&self, hash: Hash, msg: &[u8], sig: &[u8]) -> bool {
        let Some(em) = self.public_op(sig) else { return false };
        let prefix = hash.digest_info();
        let t_len = prefix.len() + hash.len();
        // EM = 00 01 FF…FF (at least 8) 00 DigestInfo‖H
        let Some(ps_len) = self.len.checked_sub(t_len + 3).filter(|l| *l >= 8) else { return false };
        let mut want = Vec::with_capacity(self.len);
        want.extend_from_slice(&[0, 1]);
        want.resize(2 + ps_len, 0xff);
        want.push(0);
        want.extend_from_slice(prefix);
        want.extend_from_slice(&hash.digest(&[msg]));
        em == want
    }

    /// RSASSA-PSS verification of `sig` over `msg`, MGF1 with the same hash, salt length
    /// equal to the hash length.
    pub fn verify_pss(&self, hash: Hash, msg: &[u8], sig: &[u8]) -> bool {
        let Some(full) = self.public_op(sig) else { return false };
        let h_len = hash.len();
        let em_bits = self.bits - 1;
        let em_len = em_bits.div_ceil(8);
        // I2OSP(m, emLen): the bytes above emLen must be zero.
        let Some(extra) = self.len.checked_sub(em_len) else { return false };
        let (high, em) = full.split_at(extra);
        if high.iter().any(|b| *b != 0) || em_len < 2 * h_len + 2 || em.last() != Some(&0xbc) {
            return false;
        }
        let db_len = em_len - h_len - 1;
        let (masked_db, rest) = em.split_at(db_len);
        let Some(h) = rest.get(..h_len) else { return false };
        let zero_bits = 8 * em_len - em_bits; // 0..=7
        let top_mask = 0xffu8.checked_shr(zero_bits as u32).unwrap_or(0);
        if masked_db.first().is_some_and(|b| b & !top_mask != 0) {
            return false;
        }
        let mut db: Vec<u8> = masked_db.iter().zip(mgf1(hash, h, db_len)).map(|(m, k)| m ^ k).collect();
        if let Some(first) = db.first_mut() {
            *first &= top_mask;
        }
        // DB = PS (zeros) ‖ 01 ‖ salt
        let ps_len = db_len - h_len - 1;
        let (ps, tail) = db.split_at(ps_len);
        let Some((&one, salt)) = tail.split_first() else { return false };
        if ps.iter().any(|b| *b != 0) || one != 1 || salt.len() != h_len {
            return false;
        }
        let m_hash = hash.digest(&[msg]);
        hash.digest(&[&[0u8; 8], &m_hash, salt]) == h
    }
}

/// MGF1 (RFC 8017 B.2.1): `len` bytes from `seed`.
fn mgf1(hash: Hash, seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + hash.len());
    let mut counter = 0u32;
    while out.len() < len {
        out.extend(hash.digest(&[seed, &counter.to_be_bytes()]));
        counter = counter.wrapping_add(1);
    }
    out.truncate(len);
    out
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    b.get(start..).unwrap_or(&[])
}

/// Big-endian bytes → `limbs` little-endian limbs; `None` when they do not fit.
fn from_be(b: &[u8], limbs: usize) -> Option<Vec<u32>> {
    let b = strip_zeros(b);
    if b.len() > limbs * 4 {
        return None;
    }
    let mut out = vec![0u32; limbs];
    for (i, byte) in b.iter().rev().enumerate() {
        *out.get_mut(i / 4)? |= u32::from(*byte) << (8 * (i % 4));
    }
    Some(out)
}

/// Little-endian limbs → `len` big-endian bytes (higher limbs beyond `len` are dropped).
fn to_be(a: &[u32], len: usize) -> Vec<u8> {
    (0..len).rev().map(|i| a.get(i / 4).map_or(0, |l| (l >> (8 * (i % 4))) as u8)).collect()
}

/// a < b, same length.
fn less(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// a −= b (mod 2^(32·len)).
fn sub(a: &mut [u32], b: &[u32]) {
    let mut borrow = 0u64;
    for (x, y) in a.iter_mut().zip(b) {
        let d = u64::from(*x).wrapping_sub(u64::from(*y)).wrapping_sub(borrow);
        *x = d as u32;
        borrow = (d >> 63) & 1;
    }
}

/// a <<= 1; returns the bit shifted out.
fn shl1(a: &mut [u32]) -> bool {
    let mut carry = 0u32;
    for x in a.iter_mut() {
        let v = *x;
        *x = (v << 1) | carry;
        carry = v >> 31;
    }
    carry == 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use jwt_simple::prelude::*;

    fn parts(token: &str) -> (&str, Vec<u8>) {
        let (signed, sig) = token.rsplit_once('.').unwrap();
        (signed, base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).unwrap())
    }

    fn flip(sig: &[u8], i: usize) -> Vec<u8> {
        let mut s = sig.to_vec();
        s[i] ^= 0x01;
        s
    }

    #[test]
    fn pkcs1v15_agrees_with_jwt_simple() {
        for bits in [2048, 3072, 4096] {
            let kp = RS256KeyPair::generate(bits).unwrap();
            let c = kp.public_key().to_components();
            let key = PublicKey::from_components(&c.n, &c.e).unwrap();
            assert_eq!(key.bits(), bits);
            let kp384 = RS384KeyPair::from_der(&kp.to_der().unwrap()).unwrap();
            let kp512 = RS512KeyPair::from_der(&kp.to_der().unwrap()).unwrap();
            let claims = || Claims::create(Duration::from_hours(1));
            for (hash, token) in [
                (Hash::Sha256, kp.sign(claims()).unwrap()),
                (Hash::Sha384, kp384.sign(claims()).unwrap()),
                (Hash::Sha512, kp512.sign(claims()).unwrap()),
            ] {
                let (signed, sig) = parts(&token);
                assert!(key.verify_pkcs1v15(hash, signed.as_bytes(), &sig), "{bits} {hash:?}");
                assert!(!key.verify_pss(hash, signed.as_bytes(), &sig));
                assert!(!key.verify_pkcs1v15(hash, b"other message", &sig));
                for i in [0, 1, sig.len() / 2, sig.len() - 1] {
                    assert!(!key.verify_pkcs1v15(hash, signed.as_bytes(), &flip(&sig, i)));
                }
                let other = if hash == Hash::Sha256 { Hash::Sha512 } else { Hash::Sha256 };
                assert!(!key.verify_pkcs1v15(other, signed.as_bytes(), &sig));
            }
        }
    }

    /// A 2080-bit key: 65 limbs, not a multiple of 32 (key sizes seen in the wild are not
    /// all powers of two). A test fixture, nothing else.
    const RSA_2080_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEzwIBADANBgkqhkiG9w0BAQEFAASCBLkwggS1AgEAAoIBBQC2lKyU3a9q7bt+\n4CVC4NM16h5GzIHnuhEUXI5KNL3z2NbN4TLmwSaRBvqLisFRF0wIXRtMrb8eFhhD\naAS3rYfJU6Nez6LcyjD1LtfEmLwYrvtN3PD4dtW6Ld9vgfDX1SW8qnDVVlyPJcdg\n1hgo6G8K74QoSrdp08Xjj+nUYS3a0weCWXW15AucpmnZCDhT5mDVn/jnvNMxbvjJ\nJqCBqX54eRUI2lc/W67Zi5fqKB1XoltSQPEYynAUzMoz0b5s8L3qqJ9hVqMYcgfB\n15LE4lhAchQMqAJImqCRV9NG1sy5qpy+683GRkSEVDjTA5SHDfGJOoOdyhspFkX5\nLVsqQq8hwbx0BQIDAQABAoIBBAb1j8Z01LTcruLdJE5yR1qsu86zCNiOTQxbosjN\nTdg3kahzRv9oqVGp1G7xMQEoRCulcN7xWHGLIg2fr15Y7O4NlBKPE4Qa6NbPnEXQ\nFItUUBvdqgmubeMU0IltiIKRi0ivrnFTQ1/pbroQLweQJHtkOcNXZbpQ6iAMYjtI\nIPlQRd7vknpEYtu0rakIZOUJ3EtRMojC8FPvVOtOeUJzYkYS2FV+fPydbWhdu3ws\nxzCBr9nL/+n3cTGtEr+fPbW6dOFxr4dKpdQC8c37cgSbSc9wDVPI8BQ6ZyNHs/CU\nESHYuU3gQVYeIEVVUhVwg78WtUVHilm0Lo+ZXob3eAxLi7cDJVsZAoGDANrgMFNJ\n7P38SRD8z26YifU3oOCfebmyno9Dl9e4vCXXNYM7DLEVGMUL+M7ujK6knZ0RyOK4\n0y0a4vxR8BSpS9XAzIqrX9Vj7Hd5f21wVQTkfBB5rXgMkGRjnSqD1EQtuxW7jsxU\nseUU78kbvfJTSB4KW5Pdw9ZnaWeeiH6OBZVspr8CgYMA1YyFESdWwETN2/rOlmPy\nj04XXM7JKjiSxnJW/9CngldpSiXsUkJBK9BpBTZzIzqM5Hcxou8YzvztBG3SuPgj\n/gRmQHo3M06tsHHPd/ALNcRipx/0czGnS6aQdjQ0Hvz+WOs8Pt4LqTRpayG3bzTn\ndXdJVMCYSuyrcWSFhdG7V4V6OwKBgglrBClRUQVMycgVWMelgKowjpebxR0cdn4r\npmj95fqq2/6dl9o20i4Iadhdo2gQZUfQ8BfxZATY11OMIwyAjGbSOPrujN0dw5sQ\ne082OjJPspby5Wf5Am2Pa7/clFGqthYlT+uy6US2Nestamr28m94eqBONpMPOBXh\nWHY5njvjxPkCgYMAhlYGY3sWxI7D3W1SRiMLtICQi859l7TNCE9nUTfmGEV6s61V\nk42gR7qsRh4xoei0NwiQTgoQ1i0fwNiBZeCba7FCza7USM9mzgdaVv3HX4Rx9uZQ\nNaL3tcxLNkCyxQerzS310SqHtWKGKmGkbi2eqTNoCwu5AfEODKAKqtr7+hu6fwKB\nglWXgcTJq9xIeGl0LKpfvX2LqkCSG1ZZaxBx+ISYcOTOwyANKRk96yD8qaUXG1Ob\niupFQJNQJGM0eQ5ImAC040Zex3U7zvcIcozIUh3DCaB7tof09wGue7Hifx5N7hvb\nfv//CRdH76a43t4IP8bu2H+OxW934jPSllQTR+gYEOtybRw=\n-----END PRIVATE KEY-----";

    #[test]
    fn odd_limb_counts_verify_too() {
        let kp = RS256KeyPair::from_pem(RSA_2080_PEM).unwrap();
        let c = kp.public_key().to_components();
        let key = PublicKey::from_components(&c.n, &c.e).unwrap();
        assert_eq!((key.bits(), key.n.len()), (2080, 65));
        let token = kp.sign(Claims::create(Duration::from_hours(1))).unwrap();
        let (signed, sig) = parts(&token);
        assert!(key.verify_pkcs1v15(Hash::Sha256, signed.as_bytes(), &sig));
        for i in [0, 1, sig.len() / 2, sig.len() - 1] {
            assert!(!key.verify_pkcs1v15(Hash::Sha256, signed.as_bytes(), &flip(&sig, i)));
        }
    }

    #[test]
    fn pss_agrees_with_jwt_simple() {
        for bits in [2048, 3072, 4096] {
            let kp = PS256KeyPair::generate(bits).unwrap();
            let der = kp.to_der().unwrap();
            let c = kp.public_key().to_components();
            let key = PublicKey::from_components(&c.n, &c.e).unwrap();
            let claims = || Claims::create(Duration::from_hours(1));
            for (hash, token) in [
                (Hash::Sha256, kp.sign(claims()).unwrap()),
                (Hash::Sha384, PS384KeyPair::from_der(&der).unwrap().sign(claims()).unwrap()),
                (Hash::Sha512, PS512KeyPair::from_der(&der).unwrap().sign(claims()).unwrap()),
            ] {
                let (signed, sig) = parts(&token);
                assert!(key.verify_pss(hash, signed.as_bytes(), &sig), "{bits} {hash:?}");
                assert!(!key.verify_pkcs1v15(hash, signed.as_bytes(), &sig));
                assert!(!key.verify_pss(hash, b"other", &sig));
                for i in [0, 1, sig.len() / 2, sig.len() - 1] {
                    assert!(!key.verify_pss(hash, signed.as_bytes(), &flip(&sig, i)));
                }
            }
        }
    }

    #[test]
    fn bad_keys_and_signatures_are_refused_without_panicking() {
        let kp = RS256KeyPair::generate(2048).unwrap();
        let c = kp.public_key().to_components();
        assert!(PublicKey::from_components(&c.n[..128], &c.e).is_none(), "1024 bits");
        let mut even = c.n.clone();
        *even.last_mut().unwrap() &= 0xfe;
        assert!(PublicKey::from_components(&even, &c.e).is_none());
        assert!(PublicKey::from_components(&c.n, &[1]).is_none());
        assert!(PublicKey::from_components(&c.n, &[2]).is_none());
        assert!(PublicKey::from_components(&c.n, &[1; 9]).is_none());
        assert!(PublicKey::from_components(&[], &[]).is_none());
        assert!(PublicKey::from_components(&vec![0xff; 2000], &c.e).is_none());
        let key = PublicKey::from_components(&[&[0u8, 0][..], &c.n].concat(), &[0, 1, 0, 1]).unwrap();
        for sig in [vec![], vec![0; 255], vec![0; 257], vec![0xff; 256], c.n.clone(), vec![0; 256]] {
            assert!(!key.verify_pkcs1v15(Hash::Sha256, b"m", &sig));
            assert!(!key.verify_pss(Hash::Sha256, b"m", &sig));
        }
    }
}

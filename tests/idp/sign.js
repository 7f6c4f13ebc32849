// Craft JWS/JWTs for the integration tests (negative tests included), with
// node:crypto only.  Reads one JSON document on stdin, prints the result on
// stdout.  Used by tests/integration/harness.py (make_jwt, public_key).
//
//   {"op": "sign", "header": {...}, "claims": {...}, "alg": "RS256",
//    "key": "/path/to/key.pem", "secret": "..."}
//       -> compact JWS.  header.alg defaults to `alg` (a test may set a
//          different header.alg on purpose).  alg:
//          none                     empty signature ("h.p.")
//          HS256/384/512            HMAC with `secret` (UTF-8), else the bytes of the `key` file
//                                   (e.g. the IdP's public key PEM: the classic confusion attack)
//          RS256/384/512            RSASSA-PKCS1-v1_5 with the PEM private key `key`
//          PS256/384/512            RSASSA-PSS (salt = digest length)
//          ES256/384/512            ECDSA, IEEE P1363 (r||s) signature
//          EdDSA                    Ed25519/Ed448
//       `claims` may also be a string: used verbatim as the payload.
//   {"op": "public", "key": "/path/to/key.pem", "kid": "..."}
//       -> {"pem": SPKI PEM of the public key, "jwk": public JWK}

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';

const b64u = (buf) => Buffer.from(buf).toString('base64url');

function sign(req) {
  const alg = req.alg || (req.header && req.header.alg) || 'RS256';
  const header = { alg, ...(req.header || {}) };
  const payload = typeof req.claims === 'string' ? req.claims : JSON.stringify(req.claims || {});
  const input = `${b64u(JSON.stringify(header))}.${b64u(payload)}`;
  const data = Buffer.from(input);
  const bits = alg.slice(2);
  let sig;
  if (alg === 'none') {
    sig = Buffer.alloc(0);
  } else if (/^HS(256|384|512)$/.test(alg)) {
    const secret = req.secret !== undefined && req.secret !== null ? Buffer.from(req.secret) : fs.readFileSync(req.key);
    sig = crypto.createHmac(`sha${bits}`, secret).update(data).digest();
  } else {
    const key = crypto.createPrivateKey(fs.readFileSync(req.key));
    if (/^RS(256|384|512)$/.test(alg)) {
      sig = crypto.sign(`sha${bits}`, data, key);
    } else if (/^PS(256|384|512)$/.test(alg)) {
      sig = crypto.sign(`sha${bits}`, data, {
        key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: crypto.constants.RSA_PSS_SALTLEN_DIGEST,
      });
    } else if (/^ES(256|384|512)$/.test(alg)) {
      sig = crypto.sign(`sha${bits}`, data, { key, dsaEncoding: 'ieee-p1363' });
    } else if (alg === 'EdDSA') {
      sig = crypto.sign(null, data, key);
    } else {
      throw new Error(`unsupported alg ${alg}`);
    }
  }
  return `${input}.${b64u(sig)}`;
}

function publicKey(req) {
  const pub = crypto.createPublicKey(fs.readFileSync(req.key));
  const jwk = pub.export({ format: 'jwk' });
  if (req.kid) jwk.kid = req.kid;
  return JSON.stringify({ pem: pub.export({ format: 'pem', type: 'spki' }), jwk });
}

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const req = JSON.parse(Buffer.concat(chunks).toString() || '{}');
process.stdout.write(req.op === 'public' ? publicKey(req) : sign(req));

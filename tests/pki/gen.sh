#!/usr/bin/env bash
# Generate the test PKI used by the integration tests and the demo.
#
#   tests/pki/gen.sh DIR
#
# Idempotent: when every file already exists in DIR nothing is done; when any
# is missing the whole set is regenerated (so certificates always chain to the
# CA in the same directory).  Set FORCE=1 to regenerate unconditionally.
#
# Files written to DIR (all PEM):
#   ca.crt ca.key                    test CA
#   idp.crt idp.key                  IdP server cert (SAN DNS:localhost, IP:127.0.0.1)
#   client.crt client.key            filter's client cert, /C=US/O=Example/CN=client-tls-auth, EKU clientAuth
#   other.crt other.key              same CA, /C=US/O=Example/CN=someone-else
#   selfsigned.crt selfsigned.key    self-signed, subject of client.crt
#   downstream.crt downstream.key    CA-signed client cert CN=alice
#   downstream2.crt downstream2.key  CA-signed client cert CN=mallory
#   pkjwt.key                        RSA 2048 PKCS#8 key for private_key_jwt (the IdP derives the JWK)
#   idp2.key                         RSA 2048 PKCS#8: the IdP's next signing key (SIGNING_KEY=idp2.key, rotation)
#   idp-ec.key                       EC P-256 PKCS#8: IdP signing key for SIGNING_ALG=ES256
#   client-sds.yaml                  client.crt/key as an Envoy SDS secret `filter-client-cert`
set -euo pipefail

DIR="${1:?usage: $0 DIR}"
mkdir -p "$DIR"
cd "$DIR"

# The filter's client certificate as an Envoy file-based SDS secret (envoy/demo.yaml's
# idp-mtls cluster reads it; Envoy reloads it, and the files it names, when they are moved
# into place).
cat > client-sds.yaml.tmp <<SDS
resources:
- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: filter-client-cert
  tls_certificate:
    certificate_chain: {filename: $(pwd)/client.crt}
    private_key: {filename: $(pwd)/client.key}
SDS
mv client-sds.yaml.tmp client-sds.yaml

FILES=(ca.crt ca.key idp.crt idp.key client.crt client.key other.crt other.key
       selfsigned.crt selfsigned.key downstream.crt downstream.key
       downstream2.crt downstream2.key pkjwt.key idp2.key idp-ec.key)

if [[ "${FORCE:-0}" != 1 ]]; then
  complete=1
  for f in "${FILES[@]}"; do [[ -s "$f" ]] || complete=0; done
  if [[ $complete == 1 ]]; then
    exit 0
  fi
fi

DAYS=3650
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

newkey() { # $1 = output key file (PKCS#8, unencrypted)
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null
}

# --- CA ---------------------------------------------------------------------
newkey ca.key
openssl req -x509 -new -key ca.key -sha256 -days "$DAYS" \
  -subj "/C=US/O=Example/CN=Example Test CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectKeyIdentifier=hash" \
  -out ca.crt

# sign NAME SUBJECT EXTFILE-CONTENT
sign() {
  local name="$1" subj="$2" ext="$3"
  newkey "$name.key"
  openssl req -new -key "$name.key" -subj "$subj" -out "$TMP/$name.csr"
  printf '%s\n' "$ext" > "$TMP/$name.ext"
  openssl x509 -req -in "$TMP/$name.csr" -CA ca.crt -CAkey ca.key \
    -set_serial "0x$(openssl rand -hex 16)" -days "$DAYS" -sha256 \
    -extfile "$TMP/$name.ext" -out "$name.crt" 2>/dev/null
}

CLIENT_EXT='basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid'

sign idp "/C=US/O=Example/CN=localhost" 'basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid'

sign client      "/C=US/O=Example/CN=client-tls-auth" "$CLIENT_EXT"
sign other       "/C=US/O=Example/CN=someone-else"    "$CLIENT_EXT"
sign downstream  "/C=US/O=Example/CN=alice"           "$CLIENT_EXT"
sign downstream2 "/C=US/O=Example/CN=mallory"         "$CLIENT_EXT"

# --- self-signed client cert with the same subject as client.crt ------------
newkey selfsigned.key
openssl req -x509 -new -key selfsigned.key -sha256 -days "$DAYS" \
  -subj "/C=US/O=Example/CN=client-tls-auth" \
  -addext "basicConstraints=critical,CA:FALSE" \
  -addext "keyUsage=critical,digitalSignature,keyEncipherment" \
  -addext "extendedKeyUsage=clientAuth" \
  -out selfsigned.crt

# --- private_key_jwt key ------------------------------------------------------
newkey pkjwt.key

# --- the IdP's other signing keys (JWKS rotation, ES256) -----------------------
newkey idp2.key
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out idp-ec.key 2>/dev/null

chmod 600 ./*.key
chmod 644 ./*.crt
echo "test PKI written to $(pwd)" >&2

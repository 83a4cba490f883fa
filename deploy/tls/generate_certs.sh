#!/usr/bin/env bash
# Generate a private CA and a SuperLink server certificate for Flower's TLS.
#
# Usage: deploy/tls/generate_certs.sh [OUT_DIR] [EXTRA_SAN ...]
#   OUT_DIR    where to write the files (default: deploy/tls/certificates)
#   EXTRA_SAN  extra DNS names or IP addresses the SuperLink is reached by
#              (e.g. "superlink" in docker-compose, or the machine's hostname / IP).
#              localhost, 127.0.0.1 and ::1 are always included.
#
# Writes: ca.key, ca.crt (give ca.crt to every SuperNode and `flwr` user as
# --root-certificates / root-certificates), server.key, server.crt (SuperLink only:
# --ssl-keyfile / --ssl-certfile, with --ssl-ca-certfile ca.crt).
# Existing files are overwritten. Needs: openssl >= 1.1.1.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/certificates}"
shift || true
days="${CERT_DAYS:-365}"

mkdir -p "$out"
umask 077

san="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "$@"; do
    if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then
        san="$san,IP:$name"
    else
        san="$san,DNS:$name"
    fi
done

# CA: EC P-384 key, self-signed, may only sign (pathlen 0)
openssl ecparam -name secp384r1 -genkey -noout -out "$out/ca.key"
openssl req -x509 -new -key "$out/ca.key" -sha384 -days "$days" \
    -subj "/O=feddistill/CN=feddistill test CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$out/ca.crt"

# SuperLink server certificate, signed by the CA, valid for every name in $san
openssl ecparam -name secp384r1 -genkey -noout -out "$out/server.key"
openssl req -new -key "$out/server.key" -subj "/O=feddistill/CN=superlink" \
    -out "$out/server.csr"
cat > "$out/server.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san
EXT
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -CAcreateserial -days "$days" -sha384 -extfile "$out/server.ext" \
    -out "$out/server.crt" 2>/dev/null
rm -f "$out/server.csr" "$out/server.ext" "$out/ca.srl"
chmod 644 "$out/ca.crt" "$out/server.crt"

openssl verify -CAfile "$out/ca.crt" "$out/server.crt" >/dev/null
echo "wrote $out/{ca.crt,ca.key,server.crt,server.key} (SAN: $san)"

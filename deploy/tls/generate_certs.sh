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
# --ssl-keyfile / --ssl-certfile, with --ssl-ca-certfile ca.crt). EC P-384, SHA-384.
# Existing files are overwritten; CERT_DAYS sets the validity (default 365).
# The one implementation is feddistill.deploy_files (Python, `cryptography`): this
# script calls it with $PYTHON, else the repository's .venv, else python3.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/certificates}"
shift || true
py="${PYTHON:-}"
if [[ -z "$py" ]]; then
    if [[ -x "$here/../../.venv/bin/python" ]]; then py="$here/../../.venv/bin/python"; else py=python3; fi
fi
exec "$py" -m feddistill.deploy_files tls "$out" "$@"

#!/usr/bin/env bash
# Start a Flower SuperLink (Deployment Engine) with TLS and SuperNode authentication,
# listening on loopback only. SuperNodes reach its Fleet API through deploy/proxy.sh;
# its Control API (flwr) is for the operator on this machine (or an SSH tunnel) only.
#
# Usage: deploy/superlink.sh            (run deploy/tls/generate_certs.sh first)
# Environment (defaults in brackets):
#   CERT_DIR   folder with ca.crt, server.crt, server.key   [deploy/tls/certificates]
#   PORT       loopback port of the SuperLink's HTTPS API (Fleet, Control, Runtime) [9091]
#   DATABASE   SQLite state file (SuperNode registrations survive restarts)
#              [deploy/auth/flwr-home/superlink.db]
# ServerApps run as subprocesses (--isolation subprocess), so feddistill must be
# installed in the same environment; app dependencies are never installed at runtime.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -n "${HOST:-}" && "${HOST}" != "127.0.0.1" ]]; then
    echo "HOST=$HOST is not allowed: the SuperLink listens on 127.0.0.1 only (its Control" \
        "API would be open to everyone who reaches it); SuperNodes connect through" \
        "deploy/proxy.sh (LISTEN=0.0.0.0:9093)" >&2
    exit 2
fi
cert_dir="${CERT_DIR:-$here/tls/certificates}"
database="${DATABASE:-$here/auth/flwr-home/superlink.db}"
mkdir -p "$(dirname "$database")"
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 FLWR_DISABLE_UPDATE_CHECK=1
exec flower-superlink \
    --ssl-ca-certfile "$cert_dir/ca.crt" \
    --ssl-certfile "$cert_dir/server.crt" \
    --ssl-keyfile "$cert_dir/server.key" \
    --enable-supernode-auth \
    --isolation subprocess \
    --host 127.0.0.1 --port "${PORT:-9091}" \
    --database "$database"

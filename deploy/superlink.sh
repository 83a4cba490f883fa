#!/usr/bin/env bash
# Start a Flower SuperLink (Deployment Engine) with TLS and SuperNode authentication.
#
# Usage: deploy/superlink.sh            (run deploy/tls/generate_certs.sh first)
# Environment (defaults in brackets):
#   CERT_DIR   folder with ca.crt, server.crt, server.key   [deploy/tls/certificates]
#   HOST       address to listen on; 0.0.0.0 for other machines   [127.0.0.1]
#   PORT       the SuperLink's HTTP API (Fleet for SuperNodes, Control for flwr)   [9093]
#   DATABASE   SQLite state file (SuperNode registrations survive restarts)
#              [deploy/auth/flwr-home/superlink.db]
# ServerApps run as subprocesses (--isolation subprocess), so feddistill must be
# installed in the same environment; app dependencies are never installed at runtime.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
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
    --host "${HOST:-127.0.0.1}" --port "${PORT:-9093}" \
    --database "$database"

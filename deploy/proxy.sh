#!/usr/bin/env bash
# Start the Fleet-only reverse proxy (nginx) in front of the loopback SuperLink: the one
# port SuperNodes connect to. It forwards only POST /v1/fleet/<name> and answers every
# other request (Control API: flwr run/stop/log, supernode register/list; Runtime API)
# with HTTP 403. Runs in the foreground; stop it with Ctrl-C or `kill PID`.
#
# Usage: deploy/proxy.sh                (after deploy/superlink.sh)
# Environment (defaults in brackets):
#   LISTEN     HOST:PORT the SuperNodes dial; 0.0.0.0:9093 for other machines [127.0.0.1:9093]
#   SUPERLINK  the SuperLink's loopback HOST:PORT                              [127.0.0.1:9091]
#   CERT_DIR   folder with ca.crt, server.crt, server.key    [deploy/tls/certificates]
#   PREFIX     nginx's folder (nginx.conf, pid, logs)         [deploy/proxy/run]
# Needs nginx (Debian/Ubuntu: apt-get install -y nginx) and feddistill (writes nginx.conf).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prefix="${PREFIX:-$here/proxy/run}"
conf="$(python -m feddistill.proxy \
    --listen "${LISTEN:-127.0.0.1:9093}" \
    --superlink "${SUPERLINK:-127.0.0.1:9091}" \
    --cert-dir "${CERT_DIR:-$here/tls/certificates}" \
    --prefix "$prefix")"
nginx="$(command -v nginx || echo /usr/sbin/nginx)"
exec "$nginx" -p "$prefix" -c "$conf" -e "$prefix/error.log" -g "daemon off;"

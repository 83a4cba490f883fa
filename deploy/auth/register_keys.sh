#!/usr/bin/env bash
# Register SuperNode public keys on the (running) SuperLink: only SuperNodes whose key
# is registered may connect (the SuperLink runs with --enable-supernode-auth).
#
# Usage: deploy/auth/register_keys.sh [PUBLIC_KEY ...]   [deploy/auth/keys/*.pub]
# Uses the flwr connection "feddistill-deployment" in $FLWR_HOME (written by
# deploy/auth/connection.sh; FLWR_HOME defaults to deploy/auth/flwr-home).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export FLWR_HOME="${FLWR_HOME:-$here/flwr-home}" FLWR_DISABLE_UPDATE_CHECK=1
if [[ $# -eq 0 ]]; then
    set -- "$here"/keys/*.pub
fi
for key in "$@"; do
    flwr supernode register "$key" feddistill-deployment
done
flwr supernode list feddistill-deployment

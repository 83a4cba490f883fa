#!/usr/bin/env bash
# Write a flwr CLI connection "feddistill-deployment" (TLS, root-certificates) to
# $FLWR_HOME/config.toml, for `flwr supernode register` and `flwr run`.
#
# Usage: export FLWR_HOME=$PWD/deploy/auth/flwr-home; deploy/auth/connection.sh
# Environment: SUPERLINK [127.0.0.1:9091: the SuperLink's own loopback address, where the
#              Control API is; only the operator reaches it, from elsewhere through an
#              SSH tunnel], CA_CERT [deploy/tls/certificates/ca.crt],
#              FLWR_HOME [deploy/auth/flwr-home]. An existing config.toml is kept
#              unless it is the one this script wrote.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
home="${FLWR_HOME:-$here/flwr-home}"
ca_cert="${CA_CERT:-$here/../tls/certificates/ca.crt}"
ca="$(cd "$(dirname "$ca_cert")" && pwd)/$(basename "$ca_cert")"  # flwr wants an absolute path
mkdir -p "$home"
if [[ -f "$home/config.toml" ]] && ! grep -q "# written by deploy/auth/connection.sh" "$home/config.toml"; then
    echo "$home/config.toml exists; add this section to it yourself:" >&2
    target=/dev/stderr
else
    target="$home/config.toml"
fi
cat > "$target" <<TOML
# written by deploy/auth/connection.sh
[superlink]
default = "feddistill-deployment"

[superlink.feddistill-deployment]
address = "${SUPERLINK:-127.0.0.1:9091}"
root-certificates = "$ca"
TOML
[[ "$target" == /dev/stderr ]] && exit 1
echo "wrote $target"

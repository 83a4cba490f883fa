#!/usr/bin/env bash
# Start one Flower SuperNode (one client machine) with TLS and SuperNode authentication.
# It connects to the Fleet-only proxy (deploy/proxy.sh), never to the SuperLink itself.
#
# Usage: deploy/supernode.sh PARTITION_ID NUM_PARTITIONS
# Environment (defaults in brackets):
#   SUPERLINK         the proxy's host:port (Fleet API only)          [127.0.0.1:9093]
#   CA_CERT           CA certificate that signed the SuperLink's     [deploy/tls/certificates/ca.crt]
#   AUTH_KEY          this node's private key (its .pub must be registered on the
#                     SuperLink: deploy/auth/register_keys.sh)   [deploy/auth/keys/supernode-<ID>]
#   CLIENTAPPIO_PORT  local port for this node's ClientApp runtime API; distinct per
#                     SuperNode on one machine                   [9094 + PARTITION_ID]
#   STATE_DIR         where the ClientApp keeps this client's teacher and error-feedback
#                     state (node-config state-dir)              [<out-dir>/client-state]
# The partition (and state dir) reach the ClientApp through --node-config.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ $# -ne 2 ]]; then
    echo "usage: $0 PARTITION_ID NUM_PARTITIONS" >&2
    exit 2
fi
partition_id="$1"
num_partitions="$2"
node_config="partition-id=$partition_id num-partitions=$num_partitions"
if [[ -n "${STATE_DIR:-}" ]]; then
    node_config="$node_config state-dir=\"$STATE_DIR\""
fi
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 FLWR_DISABLE_UPDATE_CHECK=1
exec flower-supernode \
    --superlink "${SUPERLINK:-127.0.0.1:9093}" \
    --root-certificates "${CA_CERT:-$here/tls/certificates/ca.crt}" \
    --auth-supernode-private-key "${AUTH_KEY:-$here/auth/keys/supernode-$partition_id}" \
    --node-config "$node_config" \
    --isolation subprocess \
    --host 127.0.0.1 --port "${CLIENTAPPIO_PORT:-$((9094 + partition_id))}"

#!/usr/bin/env bash
# Generate SuperNode authentication keys (ECDSA P-384, OpenSSH format).
#
# Usage: deploy/auth/generate_keys.sh [NUM_SUPERNODES] [OUT_DIR]
#   NUM_SUPERNODES  how many key pairs (default 2)
#   OUT_DIR         where to write them (default: deploy/auth/keys)
#
# Writes supernode-<i> (private key: stays on SuperNode i, passed as
# --auth-supernode-private-key) and supernode-<i>.pub (public key: registered on the
# SuperLink with `flwr supernode register supernode-<i>.pub <connection>`), i = 0..N-1.
# Existing keys are kept (delete them to rotate). Needs: ssh-keygen (OpenSSH).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
num="${1:-2}"
out="${2:-$here/keys}"
mkdir -p "$out"

for ((i = 0; i < num; i++)); do
    key="$out/supernode-$i"
    if [[ -f "$key" ]]; then
        echo "keep $key"
        continue
    fi
    ssh-keygen -q -t ecdsa -b 384 -N "" -C "feddistill-supernode-$i" -f "$key"
    echo "wrote $key and $key.pub"
done

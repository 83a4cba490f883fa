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
# Existing keys are kept (delete them to rotate).
# The one implementation is feddistill.deploy_files (Python, `cryptography`): this
# script calls it with $PYTHON, else the repository's .venv, else python3.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
num="${1:-2}"
out="${2:-$here/keys}"
py="${PYTHON:-}"
if [[ -z "$py" ]]; then
    if [[ -x "$here/../../.venv/bin/python" ]]; then py="$here/../../.venv/bin/python"; else py=python3; fi
fi
exec "$py" -m feddistill.deploy_files keys "$num" "$out"

#!/usr/bin/env bash
# Build the Node binding (node/) and run its tests. From the repository root:
#   bash .ci/node.sh
# Needs Rust >= 1.88, Node >= 18 with npm, and a C compiler (cc: the C
# interop test builds a C peer in a temporary directory, removed after).
# Leaves node/shmport.node and node/node_modules (both git-ignored); no
# processes, no /dev/shm files.
set -euo pipefail
start=$(date +%s)
cd "$(dirname "$0")/../node"
shm_before=$(ls /dev/shm | wc -l)
npm install --no-audit --no-fund
npm run build
# The addon's Rust unit tests (no Node symbols needed).
cargo test -p shmport-node --release --lib
# The issue's 1,000 forked and killed children for the leak test (npm test
# alone runs 100).
SHMPORT_SOAK=1000 npm test
node examples/worker/main.js
node examples/reply_stream/main.js
node examples/forward/main.js
shm_after=$(ls /dev/shm | wc -l)
if [ "$shm_before" != "$shm_after" ]; then
  echo "node.sh: /dev/shm has $shm_before entries before and $shm_after after" >&2
  exit 1
fi
echo "node.sh: done in $(( $(date +%s) - start )) s"

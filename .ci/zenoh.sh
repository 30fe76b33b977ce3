#!/usr/bin/env bash
# shmport-zenoh (ports across hosts, zenoh/): build it, lint it, run its
# tests (real processes on 127.0.0.1), the remote-worker example and the
# benchmark in quick mode; then check that nothing was left behind (files
# in /dev/shm, processes). zenoh is built in one profile only (release),
# shared by the tests, the example and the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
start=$SECONDS
shm_before=$(ls -A /dev/shm 2>/dev/null | sort || true)

build_start=$SECONDS
cargo build --release -p shmport-zenoh --all-targets
echo "== zenoh: build (release, all targets): $((SECONDS - build_start)) s"

step_start=$SECONDS
cargo clippy --release -p shmport-zenoh --all-targets -- -D warnings
echo "== zenoh: clippy: $((SECONDS - step_start)) s"

step_start=$SECONDS
cargo test --release -p shmport-zenoh
cargo run --release -p shmport-zenoh --example remote_worker -- --quick
# The bench profile differs from release (debug info): building it would
# build zenoh a second time.
cargo bench --profile release -p shmport-zenoh --bench bridge -- --quick
echo "== zenoh: tests, example, benchmark: $((SECONDS - step_start)) s"

shm_after=$(ls -A /dev/shm 2>/dev/null | sort || true)
if [ "$shm_before" != "$shm_after" ]; then
  echo "files left in /dev/shm:"; diff <(echo "$shm_before") <(echo "$shm_after") || true
  exit 1
fi
stray='target/.*/(deps/(hosts|bridge)-|examples/remote_worker|shmport-zenoh-bridge)'
if pgrep -f "$stray" >/dev/null; then
  echo "stray processes:"; pgrep -af "$stray"
  exit 1
fi
echo "== zenoh: passed in $((SECONDS - start)) s"

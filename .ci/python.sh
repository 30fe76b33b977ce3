#!/usr/bin/env bash
# The Python package: a fresh virtual environment, maturin, numpy and pytest
# from PyPI, `pip install ./python` (the README's command), then the pytest
# suite (real processes) and its duration. Leaves the repository as it was:
# the venv and pip's build live in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

start=$SECONDS
venv=$(mktemp -d /tmp/shmport-venv.XXXXXX)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q maturin numpy pytest
echo "python: $("$venv/bin/python" --version), $("$venv/bin/maturin" --version)"
# The build goes to the workspace's target/ (cargo's), nothing in python/.
"$venv/bin/python" -m pip install -q ./python
echo "python: venv and build $((SECONDS - start)) s"

# Run from the tests' own directory, against the installed package (not
# the source tree's shmport/, which has no compiled extension).
tests_start=$SECONDS
shm_before=$(ls -A /dev/shm 2>/dev/null | sort || true)
(cd python/tests && "$venv/bin/python" -m pytest -q -p no:cacheprovider .)
shm_after=$(ls -A /dev/shm 2>/dev/null | sort || true)
if [ "$shm_before" != "$shm_after" ]; then
  echo "files left in /dev/shm:"; diff <(echo "$shm_before") <(echo "$shm_after") || true
  exit 1
fi
echo "python: pytest $((SECONDS - tests_start)) s, all $((SECONDS - start)) s"

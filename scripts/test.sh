#!/usr/bin/env bash
# Runs every test: unit, HTTP integration, and the parity suite against the
# Python reference (made once in a virtualenv by scripts/python-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/prepd-target}"
PREPD_PYTHON="$(bash scripts/python-env.sh)"
export PREPD_PYTHON
cargo test --locked "$@"

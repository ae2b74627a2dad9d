# Sourced by the bench scripts: where things are, and a release build of prepd.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
shared="${PREPD_SHARED:-$here/../shared}"
vocab="$shared/vocab/bert-base-uncased/vocab.txt"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/prepd-target}"
(cd "$here" && cargo build --release --locked -q)
bin="$CARGO_TARGET_DIR/release/prepd"

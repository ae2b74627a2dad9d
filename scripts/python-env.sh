#!/usr/bin/env bash
# Makes (once) the virtualenv with the Python reference (transformers,
# pandas, pyarrow) and prints its interpreter's path.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${PREPD_VENV:-$HOME/.cache/prepd-venv}"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$here/tests/requirements.txt" "$stamp"; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/tests/requirements.txt" >&2
  cp "$here/tests/requirements.txt" "$stamp"
fi
echo "$venv/bin/python"

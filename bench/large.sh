#!/usr/bin/env bash
# A dataset larger than memory: generates a course-shaped CSV of at least
# GB gigabytes (default 20), runs `prepd run` on it (release build), prints
# wall time, rows/s and peak RSS, and deletes everything it wrote. Needs
# about 2.5x GB of free disk (input, compressed runs, Parquet).
#
#   bench/large.sh [GB=20] [workers=2]
set -euo pipefail
gb="${1:-20}"
workers="${2:-2}"
source "$(dirname "$0")/lib.sh"
work="$(mktemp -d "${TMPDIR:-/tmp}/prepd-large.XXXXXX")"
trap 'rm -rf "$work"' EXIT
made="$(python3 "$here/bench/make_dataset.py" --bytes "${gb}e9" --out "$work/in.csv")"
rows="$(sed -n 's/^wrote \([0-9]*\) rows.*/\1/p' <<<"$made")"
/usr/bin/time -f "%e %M" -o "$work/time" env PREPD_WORKERS="$workers" PREPD_DATA_DIR="$work/data" \
  "$bin" run --input "$work/in.csv" --out "$work/out" --tokenizer "$vocab" 2>"$work/log" \
  || { cat "$work/log"; exit 1; }
read -r wall rss_kb < "$work/time"
echo "input: $(( $(stat -c %s "$work/in.csv") / 1000000 )) MB, $rows rows; output: $(du -sm "$work/out" | cut -f1) MB"
echo "wall: ${wall} s; rows/s: $(python3 -c "print(round($rows / $wall))"); peak RSS: $((rss_kb / 1024)) MB"
tail -1 "$work/log"

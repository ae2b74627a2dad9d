#!/usr/bin/env bash
# Peak RSS of a whole job (`prepd run`, release build) at N rows and at
# multiples of N: a job's memory must be set by its configuration, not by
# the dataset. Prints rows, input size, wall time, rows/s and peak RSS.
#
#   bench/memory.sh [N=1000000] [multipliers="1 10"] [workers=2]
set -euo pipefail
rows="${1:-1000000}"
multipliers="${2:-1 10}"
workers="${3:-2}"
source "$(dirname "$0")/lib.sh"
work="$(mktemp -d "${TMPDIR:-/tmp}/prepd-memory.XXXXXX")"
trap 'rm -rf "$work"' EXIT
printf '%-11s %-9s %-9s %-9s %s\n' rows "input MB" "wall s" "rows/s" "peak RSS MB"
for m in $multipliers; do
  n=$((rows * m))
  python3 "$here/bench/make_dataset.py" --rows "$n" --out "$work/in.csv" >/dev/null
  mb=$(( $(stat -c %s "$work/in.csv") / 1000000 ))
  /usr/bin/time -f "%e %M" -o "$work/time" env PREPD_WORKERS="$workers" PREPD_DATA_DIR="$work/data" \
    "$bin" run --input "$work/in.csv" --out "$work/out" --tokenizer "$vocab" 2>/dev/null
  read -r wall rss_kb < "$work/time"
  printf '%-11s %-9s %-9s %-9s %s\n' "$n" "$mb" "$wall" "$(python3 -c "print(round($n / $wall))")" "$((rss_kb / 1024))"
  rm -rf "$work/out" "$work/in.csv" "$work/data"
done

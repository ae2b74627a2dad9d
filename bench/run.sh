#!/usr/bin/env bash
# The offline benchmark, in one run on one machine (release build):
#   1. a course-shaped CSV of N rows (or the file in PREPD_BENCH_INPUT);
#   2. the tokenizers crate's BERT pipeline on the same cleaned texts, same
#      vocab, same threads, in process: the tokenizer limit;
#   3. each prepd stage alone (prepd bench-stages), whole jobs through
#      `prepd run` (with all workers and with one; and at SCALE x N rows for
#      peak RSS) and through the HTTP service (upload, job, artifacts);
#   4. the Python peers on the same file (bench/peers.py): the course's
#      pandas + Ray Data + BertTokenizer pipeline and Hugging Face
#      datasets.map with BertTokenizerFast, in a virtualenv made here;
#   5. one table: rows/s, MB/s, peak RSS, and the ratios.
#
#   bench/run.sh [N=1000000]
#   env: PREPD_BENCH_INPUT=file.csv  WORKERS=cores  SCALE=10 (0: skip)
#        PEERS="course hf" ("" skips them)  PEER_VENV=~/.cache/prepd-bench-venv
#        RESULTS=file.jsonl (keep the raw figures)
set -euo pipefail
rows="${1:-1000000}"
workers="${WORKERS:-$(nproc)}"
scale="${SCALE:-10}"
peers="${PEERS-course hf}"
venv="${PEER_VENV:-$HOME/.cache/prepd-bench-venv}"
source "$(dirname "$0")/lib.sh"
work="$(mktemp -d "${TMPDIR:-/tmp}/prepd-bench.XXXXXX")"
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
results="${RESULTS:-$work/results.jsonl}"
: > "$results"
note() { echo "bench: $*" >&2; }

input="${PREPD_BENCH_INPUT:-}"
if [ -z "$input" ]; then
  input="$work/course.csv"
  python3 "$here/bench/make_dataset.py" --rows "$rows" --out "$input" >&2
fi
input_bytes=$(stat -c %s "$input")

note "stages alone and the tokenizer limit ($workers threads)"
"$bin" bench-stages --input "$input" --tokenizer "$vocab" --workers "$workers" --json \
  | python3 -c 'import json,sys
for line in sys.stdin:
    s = json.loads(line); print(json.dumps({"name": s["stage"], "rows": s["rows"], "seconds": s["seconds"], "note": s["note"]}))' >> "$results"

# A whole job through `prepd run`: wall time and peak RSS from /usr/bin/time.
job_run() { # name workers input
  local name="$1" n="$2" file="$3"
  note "prepd run: $name"
  rm -rf "$work/out" "$work/data"
  /usr/bin/time -f "%e %M" -o "$work/time" env PREPD_WORKERS="$n" PREPD_DATA_DIR="$work/data" \
    "$bin" run --input "$file" --out "$work/out" --tokenizer "$vocab" 2> "$work/run.log"
  read -r wall rss_kb < "$work/time"
  local done_rows stages
  done_rows=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["rows"]; print(r["train"]+r["validation"])' "$work/out/manifest.json")
  stages=$(sed -n 's/^prepd: stages: //p' "$work/run.log")
  printf '{"name": "%s", "rows": %s, "seconds": %s, "peak_rss_mb": %s, "input_bytes": %s, "note": "%s"}\n' \
    "$name" "$done_rows" "$wall" "$((rss_kb / 1024))" "$(stat -c %s "$file")" "$stages" >> "$results"
}
job_run "prepd run" "$workers" "$input"
[ "$workers" -gt 1 ] && job_run "prepd run, 1 worker" 1 "$input"

if [ "$scale" -gt 0 ] && [ -z "${PREPD_BENCH_INPUT:-}" ]; then
  python3 "$here/bench/make_dataset.py" --rows "$((rows * scale))" --out "$work/scaled.csv" >&2
  job_run "prepd run, ${scale}x rows" "$workers" "$work/scaled.csv"
  rm -f "$work/scaled.csv"
fi

note "the HTTP service: upload, job, artifacts"
PREPD_ADDR=127.0.0.1:0 PREPD_DATA_DIR="$work/service" PREPD_WORKERS="$workers" "$bin" serve 2> "$work/serve.log" &
server=$!
until grep -q "listening on" "$work/serve.log"; do sleep 0.1; done
base="$(sed -n 's/.*listening on //p' "$work/serve.log" | head -1)"
started=$(date +%s.%N)
job="$(curl -sf -F file=@"$input" -F tokenizer=@"$vocab" "$base/jobs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
until curl -sf "$base/jobs/$job" > "$work/job.json" && grep -q '"status":"\(succeeded\|failed\)"' "$work/job.json"; do sleep 0.05; done
ended=$(date +%s.%N)
grep -q '"status":"succeeded"' "$work/job.json" || { cat "$work/job.json" >&2; exit 1; }
rss_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$server/status")
kill "$server"; wait "$server" 2>/dev/null || true; server=""
python3 - "$work/job.json" "$started" "$ended" "$rss_kb" >> "$results" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))
rows = job["result"]["rows"] if "result" in job else None
rows = (rows["train"] + rows["validation"]) if rows else job["progress"]["rows_total"]
print(json.dumps({"name": "prepd service", "rows": rows, "seconds": float(sys.argv[3]) - float(sys.argv[2]),
                  "peak_rss_mb": int(sys.argv[4]) // 1024, "note": "multipart upload to succeeded, polled every 50 ms"}))
PY

if [ -n "$peers" ]; then
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import ray, datasets, transformers, sklearn, psutil" 2>/dev/null; then
    note "making the peers' virtualenv in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r "$here/bench/requirements.txt"
  fi
  for peer in $peers; do
    note "peer: $peer"
    "$venv/bin/python" "$here/bench/peers.py" measure "$peer" --input "$input" --vocab "$vocab" --cores "$workers" \
      > "$work/peer.json" || { note "peer $peer failed: left out of the table"; continue; }
    python3 -c 'import json,sys; r=json.load(sys.stdin); names={"course":"course pipeline (pandas + Ray Data + BertTokenizer)","hf":"datasets.map + BertTokenizerFast"}
print(json.dumps({"name": names[r["peer"]], "rows": r["rows"], "seconds": r["seconds"], "peak_rss_mb": round(r["peak_rss_mb"])}))' < "$work/peer.json" >> "$results"
  done
fi

python3 "$here/bench/table.py" "$results" "$input_bytes" "$workers"

#!/usr/bin/env bash
# The offline benchmark, in one run on one machine (release build):
#   1. a course-shaped CSV of N rows (or the file in PREPD_BENCH_INPUT);
#   2. the tokenizers crate's BERT pipeline on the same cleaned texts, same
#      vocab, same threads, in process: the tokenizer limit;
#   3. each prepd stage alone (prepd bench-stages), whole jobs through
#      `prepd run` (with all workers and with one, in turn with the limit;
#      and at SCALE x N rows for peak RSS) and through the HTTP service
#      (upload, job, artifacts);
#   4. the Python peers on the same file (bench/peers.py): the course's
#      pandas + Ray Data + BertTokenizer pipeline and Hugging Face
#      datasets.map with BertTokenizerFast, in a virtualenv made here;
#   5. one table: rows/s, MB/s, peak RSS, and the ratios.
#
#   bench/run.sh [N=1000000]
#   env: PREPD_BENCH_INPUT=file.csv  WORKERS=cores  SCALE=10 (0: skip)
#        REPEAT=3 (prepd's in-process stages and `prepd run` at N, taken in
#        turn: the median of this many rounds, the machine being shared and
#        noisy)
#        PEERS="course hf" ("" skips them)  PEER_VENV=~/.cache/prepd-bench-venv
#        RESULTS=file.jsonl (keep the raw figures)
set -euo pipefail
rows="${1:-1000000}"
workers="${WORKERS:-$(nproc)}"
scale="${SCALE:-10}"
repeat="${REPEAT:-3}"
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

# A whole job through `prepd run`: wall time and peak RSS from /usr/bin/time.
# Each run adds its figures to the job's files; job_result reports them.
job_once() { # name workers input [cpus]
  local n="$2" file="$3" pin=() key
  key="$(echo "$1" | tr -c 'a-z0-9' _)"
  [ -n "${4:-}" ] && pin=(taskset -c "$4")
  rm -rf "$work/out" "$work/data"
  /usr/bin/time -f "%e %M" -o "$work/time" env PREPD_WORKERS="$n" PREPD_DATA_DIR="$work/data" \
    "${pin[@]}" "$bin" run --input "$file" --out "$work/out" --tokenizer "$vocab" 2> "$work/run.log"
  cat "$work/time" >> "$work/$key.times"
  sed -n 's/^prepd: stages: //p' "$work/run.log" >> "$work/$key.stages"
}
job_result() { # name input: the median wall time, the largest peak RSS
  local key
  key="$(echo "$1" | tr -c 'a-z0-9' _)"
  python3 - "$1" "$work/out/manifest.json" "$(stat -c %s "$2")" "$work/$key.times" "$work/$key.stages" <<'PY' >> "$results"
import json, statistics, sys
name, manifest, input_bytes, times, stages = sys.argv[1:]
rows = json.load(open(manifest))["rows"]
runs = [line.split() for line in open(times).read().splitlines()]
walls = [float(wall) for wall, _ in runs]
rss_kb = max(int(rss) for _, rss in runs)
stages = open(stages).read().splitlines()
median = statistics.median(walls)
note = stages[walls.index(sorted(walls)[len(walls) // 2])]
if len(walls) > 1:
    note += "; runs: " + ", ".join(f"{w:.2f} s" for w in walls)
print(json.dumps({"name": name, "rows": rows["train"] + rows["validation"], "seconds": median,
                  "peak_rss_mb": rss_kb // 1024, "input_bytes": int(input_bytes), "note": note}))
PY
}
job_run() { # name workers input: one run, reported
  note "prepd run: $1"
  job_once "$1" "$2" "$3"
  job_result "$1" "$3"
}

# The tokenizer limit and the whole job are compared as a ratio, and so are
# the job with all workers and with one: on a shared machine whose load
# drifts, each round measures them all, one after the other, so that their
# medians come from the same minutes. A job's CPU is its pool's threads, so
# one worker is one core: pinned to one core, the job should take the same
# time (a check that it does).
one_worker="" pinned=""
if [ "$workers" -gt 1 ]; then
  one_worker=1
  if command -v taskset > /dev/null; then pinned=1; fi
fi
note "stages alone, the tokenizer limit and prepd run${one_worker:+ (all workers, then one)}, in turn ($workers threads, median of $repeat)"
for _ in $(seq "$repeat"); do
  "$bin" bench-stages --input "$input" --tokenizer "$vocab" --workers "$workers" --json >> "$work/stages.jsonl"
  job_once "prepd run" "$workers" "$input"
  if [ -n "$one_worker" ]; then job_once "prepd run, 1 worker" 1 "$input"; fi
  if [ -n "$pinned" ]; then job_once "prepd run, 1 worker on 1 core" 1 "$input" 0; fi
done
python3 -c 'import json, statistics, sys
runs = {}
for line in sys.stdin:
    s = json.loads(line); runs.setdefault(s["stage"], []).append(s)
for stage, all_runs in runs.items():
    print(json.dumps({"name": stage, "rows": all_runs[0]["rows"], "seconds": statistics.median(r["seconds"] for r in all_runs),
                      "note": all_runs[0]["note"]}))' < "$work/stages.jsonl" >> "$results"
job_result "prepd run" "$input"
if [ -n "$one_worker" ]; then job_result "prepd run, 1 worker" "$input"; fi
if [ -n "$pinned" ]; then job_result "prepd run, 1 worker on 1 core" "$input"; fi

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

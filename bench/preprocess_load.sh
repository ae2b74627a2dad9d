#!/usr/bin/env bash
# Online benchmark: starts a release prepd, runs a job on the course's
# dataset, then drives POST /preprocess with one record per request and, in
# the same run, the baseline route (same JSON body parsed, fixed answer).
# Prints requests/s, p50/p99/p999 latency and the server's own mean time per
# request (from its /metrics, before and after) for both (wrk, from Debian).
# wrk runs no Lua per response: a response() hook cost the larger
# /preprocess answer tens of microseconds a round trip in wrk itself.
#
# The two routes take turns, in slices (five of 2 s each for 10 s a route):
# on a shared machine a few seconds of another tenant's load then fall on
# both routes alike, where one 10-second run each gave ratios from 0.65x to
# 1.02x for the same binary. Requests/s are a route's requests over its
# seconds; p50/p99/p999 are the medians of its slices'.
#
#   bench/preprocess_load.sh [seconds] [connections] [slices]
set -euo pipefail
seconds="${1:-10}"
connections="${2:-8}"
slices="${3:-5}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
source "$(dirname "$0")/lib.sh"
work="$(mktemp -d)"
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
PREPD_ADDR=127.0.0.1:0 PREPD_DATA_DIR="$work/data" "$bin" serve 2>"$work/log" &
pid=$!
until grep -q "listening on" "$work/log"; do sleep 0.1; done
base="$(sed -n 's/.*listening on //p' "$work/log" | head -1)"
job="$(curl -sf -F file=@"$shared/datasets/madewithml/dataset.csv" -F tokenizer=@"$vocab" "$base/jobs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
until curl -sf "$base/jobs/$job" | grep -q '"status":"succeeded"'; do sleep 0.2; done
body="$(python3 - "$job" <<'PY'
import json, sys
print(json.dumps({"job_id": sys.argv[1], "records": [{"title": "Comparison between YOLO and RCNN on real world videos", "description": "Bringing theory to experiment is cool. We can easily train models in colab and find the results in minutes."}], "padding": "none"}))
PY
)"
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = [[$body]]
function done(summary, latency, requests)
  io.write(string.format("%.0f %.0f %.0f %d %.6f %d\n",
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    summary.requests, summary.duration / 1e6,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA
# The server's summed time and count of a route's requests, from /metrics.
handled() {
  curl -sf "$base/metrics" | python3 -c 'import sys
route = sys.argv[1]; total = {"sum": 0.0, "count": 0.0}
for line in sys.stdin:
    for kind in total:
        if line.startswith(f"prepd_http_request_duration_seconds_{kind}{{") and f"route=\"{route}\"" in line:
            total[kind] += float(line.rsplit(" ", 1)[1])
print(total["sum"], total["count"])' "$1"
}
curl -sf -X POST -H 'content-type: application/json' -d "$body" "$base/preprocess" >/dev/null
slice="$(python3 -c "print(max(round($seconds / $slices), 1))")"
for _ in $(seq "$slices"); do
  for route in preprocess/baseline preprocess; do
    key="${route//\//_}"
    read -r sum0 count0 < <(handled "/$route")
    wrk -t1 -c"$connections" -d"${slice}s" -s "$work/post.lua" "$base/$route" | tail -1 >> "$work/$key.slices"
    read -r sum1 count1 < <(handled "/$route")
    echo "$sum0 $count0 $sum1 $count1" >> "$work/$key.server"
  done
done
for route in preprocess/baseline preprocess; do
  key="${route//\//_}"
  echo "== POST /$route ($slices slices of ${slice} s, $connections connections, 1 wrk thread)"
  python3 - "$work/$key.slices" "$work/$key.server" <<'PY'
import statistics, sys
slices = [list(map(float, line.split())) for line in open(sys.argv[1]) if line.strip()]
server = [list(map(float, line.split())) for line in open(sys.argv[2]) if line.strip()]
p50, p99, p999 = (statistics.median(s[i] for s in slices) for i in range(3))
requests, duration, errors = sum(s[3] for s in slices), sum(s[4] for s in slices), sum(s[5] for s in slices)
served = sum(s[2] - s[0] for s in server) / max(sum(s[3] - s[1] for s in server), 1)
print(f"p50 {p50:.0f} us, p99 {p99:.0f} us, p999 {p999:.0f} us, {requests / duration:.0f} requests/s, "
      f"{errors:.0f} errors, server time {1e6 * served:.1f} us")
PY
done

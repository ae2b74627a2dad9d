#!/usr/bin/env bash
# Online benchmark: starts a release prepd, runs a job on the course's
# dataset, then drives POST /preprocess with one record per request and, in
# the same run, the baseline route (same JSON body parsed, fixed answer).
# Prints requests/s, p50/p99/p999 latency and the server's own mean time per
# request (from its /metrics, before and after) for both (wrk, from Debian).
# wrk runs no Lua per response: a response() hook cost the larger
# /preprocess answer tens of microseconds a round trip in wrk itself.
#
#   bench/preprocess_load.sh [seconds] [connections]
set -euo pipefail
seconds="${1:-10}"
connections="${2:-8}"
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
  io.write(string.format("p50 %.0f us, p99 %.0f us, p999 %.0f us, %.0f requests/s, %d errors",
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    summary.requests / (summary.duration / 1e6),
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
for route in preprocess/baseline preprocess; do
  echo "== POST /$route ($seconds s, $connections connections, 1 wrk thread)"
  read -r sum0 count0 < <(handled "/$route")
  summary="$(wrk -t1 -c"$connections" -d"${seconds}s" -s "$work/post.lua" "$base/$route" | tail -1)"
  read -r sum1 count1 < <(handled "/$route")
  echo "$summary, server time $(python3 -c "print(f'{1e6 * ($sum1 - $sum0) / max($count1 - $count0, 1):.1f}')") us"
done

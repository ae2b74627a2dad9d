#!/usr/bin/env bash
# Online benchmark: starts a release prepd, runs a job on the course's
# dataset, then drives POST /preprocess with one record per request and, in
# the same run, the baseline route (same JSON body parsed, fixed answer).
# Prints requests/s, p50/p99/p999 latency and the server's own mean time per
# request (its x-response-time header) for both (wrk, from Debian).
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
-- The server's own time per request (its x-response-time header), beside
-- wrk's round trip: what the route costs above the HTTP stack and scheduling.
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) handled = 0; handled_ms = 0 end
function response(status, headers, body)
  local t = headers["x-response-time"]
  if t then handled_ms = handled_ms + tonumber(string.sub(t, 1, -3)); handled = handled + 1 end
end
function done(summary, latency, requests)
  local ms, n = 0, 0
  for _, t in ipairs(threads) do ms = ms + t:get("handled_ms"); n = n + t:get("handled") end
  io.write(string.format("p50 %.0f us, p99 %.0f us, p999 %.0f us, %.0f requests/s, %d errors, server time %.1f us\n",
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    summary.requests / (summary.duration / 1e6),
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    1000 * ms / math.max(n, 1)))
end
LUA
curl -sf -X POST -H 'content-type: application/json' -d "$body" "$base/preprocess" >/dev/null
for route in preprocess/baseline preprocess; do
  echo "== POST /$route ($seconds s, $connections connections, 1 wrk thread)"
  wrk -t1 -c"$connections" -d"${seconds}s" -s "$work/post.lua" "$base/$route" | tail -1
done

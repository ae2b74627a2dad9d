#!/usr/bin/env python3
"""Prints bench/run.sh's results (JSON lines) as one Markdown table, then the
ratios the performance targets are stated in.

    python3 bench/table.py results.jsonl INPUT_BYTES WORKERS
"""
import json
import sys

STAGES = {"read", "split", "clean_tokenize", "clean", "tokenize", "write"}


def main():
    path, input_bytes, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    results = [json.loads(line) for line in open(path) if line.strip()]
    by_name = {r["name"]: r for r in results}
    limit = by_name["tokenizer_limit"]
    limit_rate = limit["rows"] / limit["seconds"]

    def rate(r):
        return r["rows"] / r["seconds"]

    def mb_per_s(r):
        return r.get("input_bytes", input_bytes) / 1e6 / r["seconds"]

    print(f"input: {limit['rows']:,} rows, {input_bytes / 1e6:,.1f} MB; {workers} workers/threads/cores\n")
    print("| what | rows | seconds | rows/s | MB/s | peak RSS | ÷ tokenizer limit |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        name = r["name"]
        label = {"tokenizer_limit": "tokenizer limit (tokenizers crate)"}.get(name, name)
        if name in STAGES:
            label = f"stage alone: {name}"
        rss = f"{r['peak_rss_mb']:,} MB" if "peak_rss_mb" in r else "—"
        print(f"| {label} | {r['rows']:,} | {r['seconds']:.2f} | {rate(r):,.0f} | {mb_per_s(r):,.1f} | {rss} | "
              f"{rate(r) / limit_rate:.2f}x |")
    print()
    for r in results:
        if r.get("note"):
            print(f"- {r['name']}: {r['note']}")
    print()
    job = by_name["prepd run"]
    ratios = [("prepd run ÷ tokenizer limit (target >= 10x)", rate(job) / limit_rate)]
    for name, r in by_name.items():
        if name.startswith(("course", "datasets")):
            ratios.append((f"prepd run ÷ {name}", rate(job) / rate(r)))
    if "prepd service" in by_name:
        ratios.append(("prepd service ÷ tokenizer limit", rate(by_name["prepd service"]) / limit_rate))
    if "prepd run, 1 worker" in by_name:
        ratios.append((f"{workers} workers ÷ 1 worker (target >= 1.8x)", rate(job) / rate(by_name["prepd run, 1 worker"])))
    if "prepd run, 1 worker on 1 core" in by_name:
        ratios.append((f"{workers} workers on {workers} cores ÷ 1 worker on 1 core",
                       rate(job) / rate(by_name["prepd run, 1 worker on 1 core"])))
    scaled = [r for n, r in by_name.items() if n.startswith("prepd run, ") and n.endswith("x rows")]
    for r in scaled:
        ratios.append((f"peak RSS at {r['rows'] / job['rows']:.0f}x rows ÷ at 1x (target <= 1.2x)",
                       r["peak_rss_mb"] / job["peak_rss_mb"]))
    for name, value in ratios:
        print(f"- {name}: {value:.2f}x")


if __name__ == "__main__":
    main()

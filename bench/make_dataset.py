#!/usr/bin/env python3
"""Writes a course-shaped CSV of N rows by repeating a source CSV (by default
the course's dataset.csv in ../shared) with fresh, unique ids, so length and
label distribution follow the course's.

    python3 bench/make_dataset.py --rows 1000000 --out /tmp/course-1m.csv [--source path]
    python3 bench/make_dataset.py --bytes 20e9 --out /tmp/course-20gb.csv   # at least 20 GB
"""
import argparse
import csv
import os
import sys

DEFAULT_SOURCE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "madewithml", "dataset.csv")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--bytes", type=float, help="write whole rows until the file has at least this many bytes")
    parser.add_argument("--out", required=True)
    parser.add_argument("--source", default=DEFAULT_SOURCE)
    args = parser.parse_args()
    with open(args.source, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    if not rows:
        sys.exit("the source has no rows")
    id_at = header.index("id") if "id" in header else None
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        n = 0
        while (f.tell() < args.bytes) if args.bytes else (n < args.rows):
            row = list(rows[n % len(rows)])
            if id_at is not None:
                row[id_at] = str(n + 1)
            writer.writerow(row)
            n += 1
    print(f"wrote {n} rows to {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()

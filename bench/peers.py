#!/usr/bin/env python3
"""The Python peers prepd is measured against, on the same CSV and vocab.

  course: the course's own pipeline: Ray Data reads the CSV, shuffles,
          splits stratified on the label (per-class train_test_split in
          map_groups), fits the class mapping on train, and maps pandas
          batches through the cleaning (transcribed from DESIGN.md, shared
          with tests/parity/reference.py) and transformers' BertTokenizer;
          both splits are written as Parquet.
  hf:     Hugging Face datasets: load the CSV, map(batched=True,
          num_proc=cores) cleaning and BertTokenizerFast, a stratified
          train_test_split, both splits written as Parquet.

    python3 bench/peers.py measure course --input in.csv --vocab vocab.txt --cores 2

`measure` runs the peer in a child process and samples the summed RSS of
its whole process tree (Ray starts a GCS server, a raylet and workers) every
50 ms; it prints one JSON line: rows, seconds (the pipeline, from the
framework's start to the written Parquet, imports excluded), peak RSS.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "parity"))
STOPWORDS = os.path.join(HERE, "..", "src", "pipeline", "stopwords-en.txt")
SEED = 1234
TEST_SIZE = 0.2


def cleaner():
    from reference import make_cleaner

    with open(STOPWORDS, encoding="utf-8") as f:
        return make_cleaner([line.strip() for line in f if line.strip()])


def joined(title, description):
    return f"{title} {description}"


def course(args, out):
    import numpy as np
    import pandas as pd
    import pyarrow.csv
    import ray
    from sklearn.model_selection import train_test_split
    from transformers import BertTokenizer

    started = time.perf_counter()
    ray.init(num_cpus=args.cores, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    clean_text = cleaner()
    # Quoted fields may hold newlines (pandas reads them; pyarrow only when told).
    ds = ray.data.read_csv(args.input, parse_options=pyarrow.csv.ParseOptions(newlines_in_values=True))
    ds = ds.random_shuffle(seed=SEED)

    def split_group(group: pd.DataFrame) -> pd.DataFrame:
        train, test = train_test_split(group, test_size=TEST_SIZE, random_state=SEED)
        train = train.assign(_split="train")
        test = test.assign(_split="test")
        return pd.concat([train, test])

    # Materialised once, so that the two splits and the label scan do not
    # each recompute the read, shuffle and split (the fastest fair use of Ray).
    both = ds.groupby("tag").map_groups(split_group, batch_format="pandas").materialize()
    train_ds = both.filter(lambda row: row["_split"] == "train")
    val_ds = both.filter(lambda row: row["_split"] == "test")
    tags = sorted(train_ds.unique(column="tag"))
    class_to_index = {tag: i for i, tag in enumerate(tags)}
    tokenizer = BertTokenizer(vocab_file=args.vocab, do_lower_case=True)

    def preprocess(df: pd.DataFrame):
        text = [clean_text(joined(t, d)) for t, d in zip(df["title"], df["description"])]
        encoded = tokenizer(text, return_tensors="np", padding="longest")
        return {
            "ids": list(encoded["input_ids"]),
            "masks": list(encoded["attention_mask"]),
            "targets": np.array([class_to_index[t] for t in df["tag"]]),
        }

    rows = 0
    for name, split in (("train", train_ds), ("val", val_ds)):
        processed = split.map_batches(preprocess, batch_format="pandas").materialize()
        processed.write_parquet(os.path.join(out, name))
        rows += processed.count()
    seconds = time.perf_counter() - started
    ray.shutdown()
    return rows, seconds


def hf(args, out):
    import datasets
    from transformers import BertTokenizerFast

    datasets.disable_progress_bars()
    started = time.perf_counter()
    clean_text = cleaner()
    tokenizer = BertTokenizerFast(vocab_file=args.vocab, do_lower_case=True)
    ds = datasets.load_dataset("csv", data_files=args.input, split="train", cache_dir=os.path.join(out, "cache"))

    def preprocess(batch):
        text = [clean_text(joined(t, d)) for t, d in zip(batch["title"], batch["description"])]
        encoded = tokenizer(text)
        return {"text": text, "ids": encoded["input_ids"], "masks": encoded["attention_mask"]}

    ds = ds.map(preprocess, batched=True, num_proc=args.cores)
    ds = ds.class_encode_column("tag")
    split = ds.train_test_split(test_size=TEST_SIZE, stratify_by_column="tag", seed=SEED)
    rows = 0
    for name, part in (("train", split["train"]), ("val", split["test"])):
        part.to_parquet(os.path.join(out, f"{name}.parquet"))
        rows += len(part)
    return rows, time.perf_counter() - started


PEERS = {"course": course, "hf": hf}


def tree_rss(pid):
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measure(args):
    with tempfile.TemporaryDirectory(prefix=f"prepd-peer-{args.peer}-") as out:
        result_file = os.path.join(out, "result.json")
        cmd = [sys.executable, __file__, "run", args.peer, "--input", args.input, "--vocab", args.vocab,
               "--cores", str(args.cores), "--out", out, "--result", result_file]
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(out, "log"), "w"))
        peak = 0
        done = threading.Event()

        def sample():
            nonlocal peak
            while not done.is_set():
                peak = max(peak, tree_rss(child.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        code = child.wait()
        done.set()
        sampler.join()
        if code != 0:
            with open(os.path.join(out, "log")) as f:
                sys.stderr.write(f.read()[-4000:])
            sys.exit(f"peer {args.peer} failed ({code})")
        with open(result_file) as f:
            result = json.load(f)
    result.update(peer=args.peer, peak_rss_mb=peak / 2**20)
    print(json.dumps(result))


def run(args):
    rows, seconds = PEERS[args.peer](args, args.out)
    with open(args.result, "w") as f:
        json.dump({"rows": rows, "seconds": seconds}, f)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["measure", "run"])
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--input", required=True)
    parser.add_argument("--vocab", required=True)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--out")
    parser.add_argument("--result")
    args = parser.parse_args()
    (measure if args.mode == "measure" else run)(args)


if __name__ == "__main__":
    main()

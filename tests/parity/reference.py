#!/usr/bin/env python3
"""The reference prepd must equal, byte for byte.

Cleaning is transcribed from DESIGN.md ("The reference semantics"), the
course's own steps with Python's `re` and `str`; tokenization is Hugging Face
`transformers.BertTokenizer(vocab_file=..., do_lower_case=True)`.

Reads JSON lines of raw texts (each line a JSON string) and writes, per line,
a JSON object {"clean": ..., "ids": [...]} (ids only with --vocab).

    python3 reference.py --stopwords stopwords.txt [--vocab vocab.txt] < in > out
"""
import argparse
import json
import re
import sys

PUNCTUATION = re.compile(r"([!\"'#$%&()*\+,-./:;<=>?@\\\[\]^_`{|}~])")


def make_cleaner(stopwords):
    stopword_pattern = re.compile(r"\b(" + r"|".join(stopwords) + r")\b\s*")

    def clean_text(text):
        text = text.lower()  # 1
        text = stopword_pattern.sub(" ", text)  # 2
        text = PUNCTUATION.sub(r" \1 ", text)  # 3
        text = re.sub("[^A-Za-z0-9]+", " ", text)  # 4
        text = re.sub(" +", " ", text)  # 5
        text = text.strip()  # 6
        text = re.sub(r"http\S+", "", text)  # 7
        return text

    return clean_text


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--stopwords", required=True)
    parser.add_argument("--vocab")
    args = parser.parse_args()
    with open(args.stopwords, encoding="utf-8") as f:
        stopwords = [line.strip() for line in f if line.strip()]
    clean_text = make_cleaner(stopwords)
    tokenizer = None
    if args.vocab:
        import transformers

        transformers.logging.set_verbosity_error()
        tokenizer = transformers.BertTokenizer(vocab_file=args.vocab, do_lower_case=True)
        # The pure-Python WordPiece (transformers 4.x), not a wrapper of the Rust crate.
        assert not getattr(tokenizer, "is_fast", False), "the reference must be the pure-Python tokenizer"
    out = sys.stdout
    for line in sys.stdin:
        text = json.loads(line)
        cleaned = clean_text(text)
        result = {"clean": cleaned}
        if tokenizer is not None:
            result["ids"] = tokenizer(cleaned)["input_ids"]
        out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

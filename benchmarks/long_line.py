"""Peak memory of tokenizing a corpus that is one long line, with and without tokenizing it in pieces.

Why: a 50 MB single-line corpus peaked at 9.2 GB, because the fast tokenizer's encoding of a whole line (ids,
offsets, word ids of millions of tokens) lives at once. `data.tokenize_corpus` now tokenizes texts longer than
`data.PIECE_CHARS` characters piece by piece (cut at spaces, the same blocks). Each setting runs in its own
process and reports its peak resident memory (ru_maxrss), side by side on the same text.

    python benchmarks/long_line.py --megabytes 10
"""

import argparse
import resource
import subprocess
import sys
import time


def one_run(megabytes: float, pieces: bool) -> None:
    from datasets import Dataset

    from retromae_hf import data
    from retromae_hf.quickstart import python_sentences, train_wordpiece_tokenizer

    if not pieces:
        data.PIECE_CHARS = 10**12  # the old behaviour: every text in one call
    sentences = python_sentences()
    tokenizer = train_wordpiece_tokenizer(sentences[:5000], vocab_size=4000)
    text = " ".join(sentences)
    line = (text + " ") * int(megabytes * 1e6 // (len(text) + 1) + 1)
    line = line[: int(megabytes * 1e6)]
    dataset = Dataset.from_dict({"text": [line]})
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.time()
    blocks = data.tokenize_corpus(dataset, tokenizer, max_length=512)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"pieces={pieces}: {len(line) / 1e6:.0f} MB line -> {len(blocks)} blocks in {time.time() - start:.0f} s; "
          f"peak RSS {peak / 1e6:.2f} GB (before tokenizing {base / 1e6:.2f} GB)", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=10)
    parser.add_argument("--one", choices=["pieces", "whole"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_run(args.megabytes, args.one == "pieces")
        return
    for setting in ("whole", "pieces"):
        subprocess.run([sys.executable, __file__, "--megabytes", str(args.megabytes), "--one", setting], check=True)


if __name__ == "__main__":
    main()

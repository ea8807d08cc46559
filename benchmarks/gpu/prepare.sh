#!/usr/bin/env bash
# Prepare the GPU run kit on a machine WITH network (PyPI) and the shared data at ../shared (or $RETROMAE_SHARED).
# Run from the repository root:  bash benchmarks/gpu/prepare.sh
#
# 1. Downloads into .whl/ (git-ignored) the wheels that the GPU machine lacks (it has torch, transformers,
#    sentence-transformers, numpy, pandas, pyarrow, scipy, scikit-learn, ... but not datasets or mteb).
# 2. Packs the data the reproduction reads into .gpu_data/data.tar.xz (git-ignored): corpus, BEIR SciFact and
#    CISI, STS-B and SICK-R test files, the SNLI triplets, and the tokenizer files (not the weights) of
#    models/all-MiniLM-L6-v2, whose bert-base-uncased WordPiece vocabulary every arm uses.
# Files this script did not create are never touched: it only writes .whl/*.whl and .gpu_data/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
source benchmarks/gpu/common.sh
SHARED=${RETROMAE_SHARED:-$ROOT/../shared}
PYTHON=${PYTHON:-python}

if [ ! -d "$SHARED/data" ]; then
    echo "prepare.sh: no shared data at $SHARED/data. Set RETROMAE_SHARED to the folder that holds data/ and models/." >&2
    exit 2
fi

# The wheels the GPU machine lacks (common.sh), with transformers 5.24.0 as CI has it. polars is not carried: its
# runtime wheel is ~54 MB and mteb needs it only for leaderboard tables; the stand-in package in
# benchmarks/gpu/shim/ is put on PYTHONPATH there instead.
download_wheels .whl transformers==5.24.0 "${MTEB_WHEELS[@]}"

# Only installed if the machine's huggingface-hub is too old for datasets 5.2 / transformers 5.24 (they need
# >= 1.31); 1.x keeps transformers 5.17 (< 2.0) working too.
download_wheels .whl/fallback huggingface-hub==1.33.0

# The data, compressed (the Gutenberg text is 37 MB raw).
mkdir -p .gpu_data
tar -C "$SHARED" -cJf .gpu_data/data.tar.xz \
    data/corpus/gutenberg_en.txt data/corpus/wiki1m_for_simcse_head.txt \
    data/beir/scifact/corpus.jsonl data/beir/scifact/queries.jsonl data/beir/scifact/qrels \
    data/beir/cisi/corpus.jsonl data/beir/cisi/queries.jsonl data/beir/cisi/qrels \
    data/sts/stsbenchmark/sts-test.tsv data/sts/sick/sick-test.tsv data/transfer \
    data/pairs/snli_devtest/snli_devtest_triplets.csv \
    models/all-MiniLM-L6-v2/tokenizer.json models/all-MiniLM-L6-v2/tokenizer_config.json \
    models/all-MiniLM-L6-v2/vocab.txt models/all-MiniLM-L6-v2/special_tokens_map.json \
    models/all-MiniLM-L6-v2/config.json \
    reference/gpu-reproduction-2026-11-27

ls -l .whl .whl/fallback .gpu_data
echo "total to carry: $(du -cb .whl/*.whl .whl/fallback/*.whl .gpu_data/data.tar.xz | tail -1 | cut -f1 | awk '{printf "%.1f MiB", $1/1048576}')"

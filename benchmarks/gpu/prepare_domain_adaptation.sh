#!/usr/bin/env bash
# Prepare the kit of benchmarks/gpu/domain_adaptation.sh on a machine WITH network (PyPI) and the shared data at
# ../shared (or $RETROMAE_SHARED). Run from the repository root:  bash benchmarks/gpu/prepare_domain_adaptation.sh
#
# Writes only .gpu_da/ and .gpu_da_part2/ (both git-ignored):
#   .gpu_da/wheels/              what the GPU machine lacks for this benchmark: datasets, mteb and their needs. Not
#                                transformers or sentence-transformers: the machine's own (5.17 / 6.0) are used.
#   .gpu_da/data.tar.xz          SciFact, CISI, STS-B test, the SNLI pairs, and all-MiniLM-L6-v2 without its weights
#   .gpu_da/weights.part1        the first 40,000,000 bytes of all-MiniLM-L6-v2's model.safetensors
#   .gpu_da_part2/weights.part2  the rest; .gpu_da/weights.sha256 checks the whole file once it is put together.
# One call to the lent GPU machine carries at most 64 MiB, and the weights alone are 87 MiB: the first call carries
# .gpu_da (about 55 MiB), the second .gpu_da_part2 (about 49 MiB). See README.md in this folder.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
source benchmarks/gpu/common.sh
SHARED=${RETROMAE_SHARED:-$ROOT/../shared}
PYTHON=${PYTHON:-python}
MODEL=models/all-MiniLM-L6-v2
SPLIT_BYTES=40000000

if [ ! -f "$SHARED/$MODEL/model.safetensors" ] || [ ! -d "$SHARED/data/beir" ]; then
    echo "prepare_domain_adaptation.sh: no shared data at $SHARED (data/beir and $MODEL/model.safetensors are" \
        "needed). Set RETROMAE_SHARED to the folder that holds data/ and models/." >&2
    exit 2
fi

mkdir -p .gpu_da_part2
download_wheels .gpu_da/wheels "${MTEB_WHEELS[@]}"

tar -C "$SHARED" -cJf .gpu_da/data.tar.xz --exclude model.safetensors \
    data/beir/scifact/corpus.jsonl data/beir/scifact/queries.jsonl data/beir/scifact/qrels \
    data/beir/cisi/corpus.jsonl data/beir/cisi/queries.jsonl data/beir/cisi/qrels \
    data/sts/stsbenchmark/sts-test.tsv data/pairs/snli_devtest/snli_devtest_pairs.tsv \
    "$MODEL"

head -c "$SPLIT_BYTES" "$SHARED/$MODEL/model.safetensors" >.gpu_da/weights.part1
tail -c +"$((SPLIT_BYTES + 1))" "$SHARED/$MODEL/model.safetensors" >.gpu_da_part2/weights.part2
(cd "$SHARED/$MODEL" && sha256sum model.safetensors) >.gpu_da/weights.sha256

du -b .gpu_da .gpu_da_part2 | awk '{printf "%s: %.1f MiB\n", $2, $1 / 1048576}'

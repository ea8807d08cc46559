#!/usr/bin/env bash
# Prepare the kit of benchmarks/gpu/speed.sh on a machine WITH network (PyPI) and the shared data at ../shared (or
# $RETROMAE_SHARED). Run from the repository root:  bash benchmarks/gpu/prepare_speed.sh
#
# Writes $KIT (default .gpu_speed/, git-ignored), nothing else:
#   wheels/liger_kernel-*.whl   the fused linear-cross-entropy kernel (pure Python + Triton; the GPU machine has
#                               torch and triton, so no dependency is carried). NO_WHEELS=1 skips the download.
#   data.tar.xz                 the tokenizer files (not the weights) of models/all-MiniLM-L6-v2, and the first
#                               $TEXT_BYTES bytes of data/corpus/gutenberg_en.txt under the same name: the speed
#                               benchmarks read at most 32 x 8,192 tokens (~1.6 MB of text) of it.
# Then checks that the kit and the repository's tracked files together fit what one call to the lent GPU machine
# carries (64 MiB), and exits 1 if they do not.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
source benchmarks/gpu/common.sh
SHARED=${RETROMAE_SHARED:-$ROOT/../shared}
PYTHON=${PYTHON:-python}
KIT=${KIT:-.gpu_speed}
TEXT_BYTES=${TEXT_BYTES:-4000000}
LIMIT_BYTES=$((64 * 1024 * 1024))
LIGER=liger-kernel==0.8.5

TOKENIZER_FILES=(tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json config.json)
for file in "${TOKENIZER_FILES[@]/#/models/all-MiniLM-L6-v2/}" data/corpus/gutenberg_en.txt; do
    if [ ! -f "$SHARED/$file" ]; then
        echo "prepare_speed.sh: $SHARED/$file is missing. Set RETROMAE_SHARED to the folder that holds data/ and models/." >&2
        exit 2
    fi
done
if [ -e "$KIT" ] && [ ! -f "$KIT/.made_by_prepare_speed" ]; then
    echo "prepare_speed.sh: $KIT exists and was not made by this script; move it away or set KIT to another folder." >&2
    exit 2
fi

# Built in a staging folder beside $KIT, then renamed into place: an interrupted run leaves the old kit whole.
STAGE=$(mktemp -d "${KIT%/}.staging.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
touch "$STAGE/.made_by_prepare_speed"
if [ "${NO_WHEELS:-0}" != 1 ]; then
    download_wheels "$STAGE/wheels" "$LIGER"
fi
mkdir -p "$STAGE/src/models/all-MiniLM-L6-v2" "$STAGE/src/data/corpus"
for file in "${TOKENIZER_FILES[@]}"; do
    cp "$SHARED/models/all-MiniLM-L6-v2/$file" "$STAGE/src/models/all-MiniLM-L6-v2/"
done
head -c "$TEXT_BYTES" "$SHARED/data/corpus/gutenberg_en.txt" >"$STAGE/src/data/corpus/gutenberg_en.txt"
tar -C "$STAGE/src" -cJf "$STAGE/data.tar.xz" models data
rm -rf "$STAGE/src"

KIT_BYTES=$(find "$STAGE" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
TREE_BYTES=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
TOTAL=$((KIT_BYTES + TREE_BYTES))
awk -v k="$KIT_BYTES" -v t="$TREE_BYTES" -v l="$LIMIT_BYTES" 'BEGIN {
    printf "kit %.1f MiB + tracked files %.1f MiB = %.1f MiB of the %.0f MiB one call carries\n",
        k / 1048576, t / 1048576, (k + t) / 1048576, l / 1048576 }'
if [ "$TOTAL" -gt "$LIMIT_BYTES" ]; then
    echo "prepare_speed.sh: the kit and the tracked files exceed 64 MiB; lower TEXT_BYTES." >&2
    exit 1
fi
rm -rf "$KIT"
mv "$STAGE" "$KIT"
trap - EXIT
ls -lR "$KIT"

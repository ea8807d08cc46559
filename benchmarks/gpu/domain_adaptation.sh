#!/usr/bin/env bash
# The domain-adaptation benchmark (benchmarks/domain_adaptation.py) on one GPU: two budgets, three seeds, both
# datasets, every arm, one process per budget x dataset x arm side by side. Run from the repository root, $OUT set.
#
#   OUT=... bash benchmarks/gpu/domain_adaptation.sh --receive  # call 1 on the lent machine: keep the kit's first half
#   OUT=... bash benchmarks/gpu/domain_adaptation.sh            # call 2 there (or the only call where ../shared is)
#   OUT=$(mktemp -d) bash benchmarks/gpu/domain_adaptation.sh --tiny   # an end-to-end check on a CPU, in minutes
#
# Kit (benchmarks/gpu/prepare_domain_adaptation.sh): .gpu_da/ (wheels, data, the first part of the model's weights)
# travels with the first call, .gpu_da_part2/ (the rest of the weights) with the second; `--receive` installs the
# wheels into $SITE and unpacks everything into $STASH, which outlive the call while the machine stays warm.
# Without a kit, ../shared (or $RETROMAE_SHARED) is used as it is.
#
# Budgets (tags): "gpu" is the CPU budget of docs/domain_adaptation.md (60 steps x 16 texts x 128 tokens, fp32),
# three seeds: the CPU result's check on another machine, with seed spread; "gpu_long": 500 steps x 64 texts x 256
# tokens (about 6 passes over SciFact's documents, 22 over CISI's), bf16 autocast, three seeds.
# ARMS (default: all six; the in-domain ones end at once on CISI) and SEEDS pick the lanes; the run of
# docs/domain_adaptation.md had ARMS="retromae masked_lm retromae_mnrl" (12 processes, 457 s on an H200).
# Pieces are synced to $OUT/pieces.tar.gz every $SYNC_S seconds; at $DEADLINE_S the runs are stopped, so what
# finished comes back. The report (bootstrap intervals) is built afterwards where the pieces land:
#   tar -xzf pieces.tar.gz && python benchmarks/domain_adaptation.py --report-only --tag gpu_long ... (README.md)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
source benchmarks/gpu/common.sh
if [ -z "${OUT:-}" ]; then
    echo "domain_adaptation.sh: set OUT to an (empty) folder for what comes back, e.g. OUT=\$(mktemp -d) bash $0" >&2
    exit 2
fi
MODE=run
case "${1:-}" in
    --receive) MODE=receive ;;
    --tiny) MODE=tiny ;;
    "") ;;
    *) echo "domain_adaptation.sh: unknown option $1 (options: --receive, --tiny)" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
STASH=${STASH:-/tmp/retromae_da}
DEADLINE_S=${DEADLINE_S:-420}
SYNC_S=${SYNC_S:-30}
SEEDS=${SEEDS:-42 43 44}
ARMS=${ARMS:-retromae retromae_decoder masked_lm retromae_mnrl mnrl_domain retromae_mnrl_domain}
START=$(date +%s)
exec > >(tee -a "$OUT/run.log") 2>&1
echo "== domain_adaptation.sh $MODE, $(date -u +%FT%TZ), in $ROOT"

export PYTHONPATH="$ROOT/benchmarks/gpu/shim:$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
MODEL=models/all-MiniLM-L6-v2
if [ -d .gpu_da ] && [ ! -f "$STASH/received" ]; then
    # The first half of the kit: wheels into $SITE, data and the first part of the weights into $STASH.
    if ! "$PYTHON" -c "import mteb, datasets" >/dev/null 2>&1; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
            .gpu_da/wheels/*.whl || exit 1
    fi
    mkdir -p "$STASH/shared"
    tar -C "$STASH/shared" -xJf .gpu_da/data.tar.xz || exit 1
    cp .gpu_da/weights.part1 .gpu_da/weights.sha256 "$STASH/" && touch "$STASH/received"
fi
if [ "$MODE" = receive ]; then
    "$PYTHON" -c "import mteb, datasets, pytrec_eval, polars, retromae_hf.sentence_transformers" || exit 1
    echo "== kit received in $STASH and $SITE ($(($(date +%s) - START)) s); next: the same command without --receive"
    exit 0
fi
if [ -f "$STASH/weights.part1" ]; then
    if [ ! -f .gpu_da_part2/weights.part2 ]; then
        echo "domain_adaptation.sh: the second part of the weights (.gpu_da_part2/) did not come with this call" >&2
        exit 2
    fi
    cat "$STASH/weights.part1" .gpu_da_part2/weights.part2 >"$STASH/shared/$MODEL/model.safetensors"
    (cd "$STASH/shared/$MODEL" && sha256sum -c "$STASH/weights.sha256") || exit 1
    export RETROMAE_SHARED=$STASH/shared
elif [ -d .gpu_da_part2 ]; then
    echo "domain_adaptation.sh: no first half of the kit in $STASH: this machine did not run --receive (it may" \
        "have been given back between the two calls). Run both calls again." >&2
    exit 2
else
    export RETROMAE_SHARED=${RETROMAE_SHARED:-$ROOT/../shared}
fi

{
    echo "date: $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "nvidia-smi: not available"
    echo "cpus: $(nproc)"
    "$PYTHON" - <<'EOF'
import importlib.metadata as m, sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| device",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
for name in ("transformers", "sentence-transformers", "datasets", "mteb", "tokenizers", "huggingface-hub"):
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        print(name, "missing")
EOF
} | tee "$OUT/env.txt"

WORK=runs/domain_adaptation_gpu
COMMON=(--work "$WORK" --no-report --seeds $SEEDS)
GPU_BUDGET=(--tag gpu --device cuda)
LONG_BUDGET=(--tag gpu_long --device cuda --bf16 --steps 500 --batch-size 64 --max-length 256)
TAGS=(gpu gpu_long)
DATASETS=(cisi scifact)
if [ "$MODE" = tiny ]; then
    WORK=$(mktemp -d /tmp/retromae_da_tiny.XXXXXX)
    COMMON=(--work "$WORK" --no-report --seeds 1 --eval-batch-size 32)
    GPU_BUDGET=(--tag tiny --device cpu --steps 2 --batch-size 4)
    TAGS=(tiny)
    DATASETS=(cisi)
    DEADLINE_S=${DEADLINE_S_TINY:-1800}
fi
mkdir -p "$WORK/logs"

pieces() {  # <dataset>/unadapted.json and <dataset>/<tag>/seed<S>/<arm>.json, relative to the current folder
    find . -maxdepth 4 \( -path "./*/unadapted.json" -o -path "./*/*/seed*/*.json" \) -not -name ".*"
}
sync_out() {  # the pieces (JSON) and the logs, small, in one archive replaced whole
    local files
    files=$(cd "$WORK" && pieces; ls logs/*.log 2>/dev/null)
    [ -n "$files" ] && (cd "$WORK" && tar -czf "$OUT/.pieces.tar.gz.tmp" $files) && mv "$OUT/.pieces.tar.gz.tmp" "$OUT/pieces.tar.gz"
    return 0
}

# One process per budget x dataset x arm; the unadapted model is scored first by the first budget's first lane.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
PIDS=()
for tag in "${TAGS[@]}"; do
    case $tag in gpu_long) BUDGET=("${LONG_BUDGET[@]}") ;; *) BUDGET=("${GPU_BUDGET[@]}") ;; esac
    for dataset in "${DATASETS[@]}"; do
        for arm in $ARMS; do
            MODELS=("$arm")
            [ "$tag" = "${TAGS[0]}" ] && [ "$arm" = "${ARMS%% *}" ] && MODELS=(unadapted "$arm")
            setsid "$PYTHON" benchmarks/domain_adaptation.py "${COMMON[@]}" "${BUDGET[@]}" --datasets "$dataset" \
                --models "${MODELS[@]}" >"$WORK/logs/${tag}_${dataset}_${arm}.log" 2>&1 &
            PIDS+=($!)
        done
    done
done
echo "== ${#PIDS[@]} processes started ($(($(date +%s) - START)) s)"
progress() { echo "$(cd "$WORK" && pieces | wc -l) pieces"; }
supervise progress sync_out "${PIDS[@]}"
FAILED=0
for pid in "${PIDS[@]}"; do wait "$pid" || FAILED=$((FAILED + 1)); done
sync_out
grep -h "domain_adaptation .*nDCG@10" "$WORK"/logs/*.log | cut -c25-
for log in "$WORK"/logs/*.log; do grep -q Traceback "$log" && { echo "== $log"; tail -n 15 "$log"; }; done
echo "== done in $(($(date +%s) - START)) s; $FAILED of ${#PIDS[@]} processes failed or were stopped; pieces in $WORK"
if [ "$MODE" = tiny ]; then  # the report, as it will be built from the GPU's pieces
    "$PYTHON" benchmarks/domain_adaptation.py --report-only --work "$WORK" --tag tiny --datasets cisi --seeds 1 \
        --steps 2 --batch-size 4 --bootstrap 200 --output "$WORK/report" || FAILED=$((FAILED + 1))
fi
[ "$FAILED" = 0 ]

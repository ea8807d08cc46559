#!/usr/bin/env bash
# The GPU reproduction, in one go: run from the repository root with $OUT set (an empty folder for what comes back).
#
#   OUT=/path/to/out bash benchmarks/gpu/run.sh           # on a GPU machine (see README.md in this folder)
#   OUT=$(mktemp -d) bash benchmarks/gpu/run.sh --tiny    # a tiny end-to-end check, on a CPU too (fp32)
#
# 1. Installs the wheels of .whl/ into $SITE (default /tmp/site) when the machine lacks mteb or datasets, and puts
#    the polars stand-in (benchmarks/gpu/shim) first on PYTHONPATH. If the carried transformers does not import
#    beside the machine's own packages, it is dropped and the machine's transformers is used.
# 2. Unpacks .gpu_data/data.tar.xz (from prepare.sh) into a temporary folder and points RETROMAE_SHARED at it;
#    without it, ../shared is used.
# 3. Tokenizes the corpus once, then runs two processes side by side on the one GPU (the models are small, the GPU
#    is mostly idle with one): (a) the gpu preset (the reference protocol) for seed $SEED, all three arms, both
#    stages; (b) 3x the stage-1 steps for masked-LM and enhanced RetroMAE (tag "long"), both stages; with
#    TRANSFER=1, (c) STS + the five transfer tasks for masked-LM, enhanced, and enhanced with a contrastive-only
#    stage 2 (tag "transfer", results ${RESULTS}_transfer.json).
# 4. Copies results to $OUT as they appear (every $SYNC_S seconds): run.log (this log), a.log, b.log, env.txt,
#    results.tar.gz (results JSON/Markdown/per-query JSON, figures, training logs, evaluation summaries). At
#    $DEADLINE_S seconds after the start the runs are stopped, and whatever finished is reported and copied.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
source benchmarks/gpu/common.sh
if [ -z "${OUT:-}" ]; then
    echo "run.sh: set OUT to an (empty) folder where the results should go, e.g. OUT=\$(mktemp -d) bash $0" >&2
    exit 2
fi
mkdir -p "$OUT"
TINY=0
case "${1:-}" in
    --tiny) TINY=1 ;;
    "") ;;
    *) echo "run.sh: unknown option $1 (the only option is --tiny)" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
SEED=${SEED:-44}
DEADLINE_S=${DEADLINE_S:-520}
SYNC_S=${SYNC_S:-30}
START=$(date +%s)
exec > >(tee -a "$OUT/run.log") 2>&1

echo "== run.sh started $(date -u +%FT%TZ) in $ROOT (tiny=$TINY)"

# ---------------------------------------------------------------------------------------------------- packages
export PYTHONPATH="$ROOT/benchmarks/gpu/shim:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PYTHON" -c "import mteb, datasets" >/dev/null 2>&1; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "run.sh: this machine lacks mteb/datasets and there are no wheels in .whl/: run benchmarks/gpu/prepare.sh first (or pip install -e . matplotlib)." >&2
        exit 2
    fi
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
    export PYTHONPATH="$ROOT/benchmarks/gpu/shim:$SITE:$ROOT"
fi
IMPORTS="import transformers, datasets, mteb, sentence_transformers, pytrec_eval, polars, retromae_hf.training, retromae_hf.evaluation"
if ! "$PYTHON" -c "$IMPORTS" 2>"$OUT/import_error.txt"; then
    # Fallbacks, in order: the machine's own transformers instead of the carried one; then also a newer
    # huggingface-hub (datasets 5.2 needs >= 1.31) from .whl/fallback.
    echo "the carried packages do not import together (see import_error.txt); dropping the carried transformers"
    rm -rf "$SITE"/transformers "$SITE"/transformers-*.dist-info
    if ! "$PYTHON" -c "$IMPORTS" 2>>"$OUT/import_error.txt" && ls .whl/fallback/*.whl >/dev/null 2>&1; then
        echo "still failing; adding the carried huggingface-hub from .whl/fallback"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/fallback/*.whl
    fi
    "$PYTHON" -c "$IMPORTS" || { echo "run.sh: the packages still do not import; see the error above." >&2; exit 1; }
fi

# ---------------------------------------------------------------------------------------------------- data
if [ -f .gpu_data/data.tar.xz ]; then
    DATA_DIR=$(mktemp -d /tmp/retromae_shared.XXXXXX)
    tar -C "$DATA_DIR" -xJf .gpu_data/data.tar.xz
    export RETROMAE_SHARED=$DATA_DIR
else
    export RETROMAE_SHARED=${RETROMAE_SHARED:-$ROOT/../shared}
fi
D=$RETROMAE_SHARED/data
REFERENCE=$RETROMAE_SHARED/reference/gpu-reproduction-2026-11-27

{
    echo "date: $(date -u +%FT%TZ)"
    nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    nproc
    free -g 2>/dev/null
    "$PYTHON" - <<'EOF'
import importlib.metadata as m, sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "cuda", torch.version.cuda,
      "| device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
for name in ("transformers", "datasets", "mteb", "sentence-transformers", "tokenizers", "huggingface-hub", "numpy"):
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        print(name, "missing")
import polars, transformers
print("polars from", polars.__file__, "| transformers from", transformers.__file__)
EOF
} | tee "$OUT/env.txt"

CUDA=$("$PYTHON" -c "import torch; print(int(torch.cuda.is_available()))")
if [ "$TINY" = 0 ] && [ "$CUDA" = 0 ]; then
    echo "run.sh: no GPU here; the full run is for a GPU machine. Use --tiny for an end-to-end check on a CPU." >&2
    exit 2
fi
MACHINE=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU')")

# ---------------------------------------------------------------------------------------------------- settings
RUNS=runs/reproduce_gpu
RESULTS=docs/results/reproduce_gpu
FIGURES=docs/figures
COMMON=(--preset gpu --seeds "$SEED" --output-dir "$RUNS" --figures "$FIGURES" --machine "$MACHINE, 16 CPU cores shared by the runs side by side")
# One process per arm, side by side on the one GPU (each model is tiny: one alone leaves the GPU mostly idle).
# The masked-LM process also evaluates the untrained initialisation. LONG=1 adds (b), the 3x-steps run.
WORKERS=${WORKERS:-4}
A_MLM=(--workers "$WORKERS" --arms mlm)
A_ENH=(--workers "$WORKERS" --arms enhanced --no-untrained)
A_PLAIN=(--workers "$WORKERS" --arms plain --no-untrained)
B_EXTRA=(--workers "$WORKERS" --tag long --stage1-steps 4056 --arms mlm enhanced)
# TRANSFER=1 adds (c): the paper's other claim, STS + SentEval transfer tasks after stage 2, for masked-LM, enhanced
# RetroMAE, and enhanced RetroMAE with a contrastive-only stage 2 (docs/reproduction.md, "Transfer tasks").
C_TASKS=(--tasks "$D/sts/stsbenchmark/sts-test.tsv" "$D/sts/sick/sick-test.tsv" "$D/transfer")
C_EXTRA=(--workers "$WORKERS" --tag transfer --arms mlm enhanced enhanced_contrastive "${C_TASKS[@]}")
if [ "$TINY" = 1 ]; then
    RUNS=$(mktemp -d /tmp/retromae_tiny_runs.XXXXXX)
    RESULTS=$RUNS/results/reproduce_tiny
    FIGURES=$RUNS/figures
    COMMON=(--preset gpu --seeds "$SEED" --output-dir "$RUNS" --figures "$FIGURES" --machine "$MACHINE (tiny check)"
        --stage1-steps 3 --stage2-steps 2 --batch-size 8 --stage2-batch-size 8 --hidden-size 32 --layers 1 --heads 2
        --intermediate-size 64 --eval-max-length 32 --eval-batch-size 64 --bootstrap 200
        --corpus "$D/corpus/wiki1m_for_simcse_head.txt" --pairs "$D/pairs/snli_devtest/snli_devtest_triplets.csv"
        --tasks "$D/beir/cisi" "$D/sts/stsbenchmark/sts-test.tsv")
    A_MLM=(--workers 1 --arms mlm)
    A_ENH=(--workers 1 --arms enhanced --no-untrained)
    A_PLAIN=(--workers 1 --arms plain --no-untrained)
    DEADLINE_S=${DEADLINE_S_TINY:-1800}  # a shared CPU can be slow; the GPU deadline is for the real run
    B_EXTRA=(--workers 1 --tag long --stage1-steps 9 --arms mlm enhanced)
    C_EXTRA=(--workers 1 --tag transfer --arms mlm enhanced enhanced_contrastive "${C_TASKS[@]}")
fi
if [ "$CUDA" = 0 ]; then
    COMMON+=(--no-bf16)
fi

sync_out() {
    # Everything that matters, small (no checkpoints, no mteb predictions), in one archive replaced atomically.
    local files
    files=$(ls "$RESULTS"*.json "$RESULTS"*.md "$FIGURES"/reproduce_*gpu*.png "$FIGURES"/reproduce_tiny*.png 2>/dev/null
        find "$RUNS" \( -name budget.json -o -name corpus_stats.json -o -name training_log.jsonl \
            -o -name summary.json -o -name per_query.json -o -name cls_collapse.json -o -name wall_time.json \
            -o -name training_summary.json -o -name recipe.yaml -o -name "*.log" \) -not -path "*/predictions/*" \
            -not -path "*/final/training_log.jsonl" 2>/dev/null)
    [ -n "$files" ] && tar -czf "$OUT/.results.tar.gz.tmp" $files 2>/dev/null && mv "$OUT/.results.tar.gz.tmp" "$OUT/results.tar.gz"
    cat "$RUNS"/a_*.log >"$OUT/a.log" 2>/dev/null
    [ -f "$RUNS/b.log" ] && cp "$RUNS/b.log" "$OUT/b.log"
    [ -f "$RUNS/c.log" ] && cp "$RUNS/c.log" "$OUT/c.log"
    return 0
}

mkdir -p "$RUNS" "$(dirname "$RESULTS")"
echo "== tokenizing the corpus once ($(($(date +%s) - START)) s)"
"$PYTHON" benchmarks/reproduce.py "${COMMON[@]}" --results "$RESULTS.json" --tokenize-only 2>&1 | tail -3

echo "== starting (a): one process per arm, side by side ($(($(date +%s) - START)) s)"
PIDS=()
for part in mlm enhanced plain; do
    case $part in mlm) EXTRA=("${A_MLM[@]}") ;; enhanced) EXTRA=("${A_ENH[@]}") ;; *) EXTRA=("${A_PLAIN[@]}") ;; esac
    setsid "$PYTHON" benchmarks/reproduce.py "${COMMON[@]}" "${EXTRA[@]}" --results "$RUNS/results_$part.json" \
        >"$RUNS/a_$part.log" 2>&1 &
    PIDS+=($!)
done
if [ "${LONG:-0}" = 1 ]; then
    echo "== starting (b): 3x the stage-1 steps, masked-LM and enhanced"
    setsid "$PYTHON" benchmarks/reproduce.py "${COMMON[@]}" "${B_EXTRA[@]}" --results "${RESULTS}_long.json" \
        >"$RUNS/b.log" 2>&1 &
    PIDS+=($!)
fi
if [ "${TRANSFER:-0}" = 1 ]; then
    echo "== starting (c): STS + transfer tasks; masked-LM, enhanced, enhanced with a contrastive-only stage 2"
    setsid "$PYTHON" benchmarks/reproduce.py "${COMMON[@]}" "${C_EXTRA[@]}" --results "${RESULTS}_transfer.json" \
        --figure-prefix "$(basename "$RESULTS")_transfer" >"$RUNS/c.log" 2>&1 &
    PIDS+=($!)
fi
progress() { grep -h -E 'reproduce INFO (trained|evaluated) ' "$RUNS"/*.log 2>/dev/null | tail -3 | cut -c21-110 | tr '\n' '|'; }
supervise progress sync_out "${PIDS[@]}"
RC_A=0
for pid in "${PIDS[@]}"; do wait "$pid" || RC_A=1; done
echo "== runs finished, any failure: $RC_A ($(($(date +%s) - START)) s)"
tail -n 4 "$RUNS"/*.log

echo "== combined report"
"$PYTHON" benchmarks/reproduce.py "${COMMON[@]}" --results "$RESULTS.json" --report-only --report-tags base long \
    --include-reference "$REFERENCE" >"$RUNS/report.log" 2>&1
RC_R=$?
tail -n +1 "$RESULTS.md" 2>/dev/null | head -150
sync_out
echo "== done in $(($(date +%s) - START)) s; report exit $RC_R; files in $OUT:"
ls -l "$OUT"
[ "$RC_A" = 0 ] && [ "$RC_R" = 0 ]

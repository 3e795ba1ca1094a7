#!/usr/bin/env bash
# The one prepared run on a lent H200 (benchmarks/gpu/README.md): install the carried wheels, check the
# stack and the GPU, then run every benchmark on CUDA. Results and the log go to $OUT.
#   device run, carry [".whl"]:   bash benchmarks/gpu/run_h200.sh
#   rehearsal here (CPU, quick):  PY=.venv/bin/python WHEELS=/tmp/whl311 DEVICE=cpu QUICK=1 OUT=/tmp/h200 bash benchmarks/gpu/run_h200.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
START=$SECONDS
PY="${PY:-python3}"
WHEELS="${WHEELS:-.whl}"
SITE="${SITE:-/tmp/site}"
DEVICE="${DEVICE:-cuda}"
OUT="${OUT:-$PWD/bench-results/h200}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-420}"  # the benchmarks' share of a ~6 minute run; results are kept as each one ends
mkdir -p "$OUT"
LOG="$OUT/run.log"
log() { echo "[run_h200 +$((SECONDS - START))s] $*" | tee -a "$LOG"; }

ls "$WHEELS"/*.whl >/dev/null 2>&1 || { log "no wheels in $WHEELS/: run benchmarks/gpu/fetch_wheels.sh here and carry .whl"; exit 2; }
log "installing $(ls "$WHEELS"/*.whl | wc -l) wheels into $SITE"
"$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$WHEELS"/*.whl 2>&1 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" = 0 ] || { log "pip install failed"; exit 3; }
export PYTHONPATH="$SITE:$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# Versions (and where each comes from: /tmp/site = carried), then CUDA must be visible.
DEVICE="$DEVICE" "$PY" - <<'PY' 2>&1 | tee -a "$LOG"
import importlib, os, sys
print("python", sys.version.split()[0], sys.executable)
for name in ("torch", "transformers", "trl", "datasets", "accelerate", "peft", "tokenizers", "huggingface_hub",
             "safetensors", "pyarrow", "fsspec", "dill", "multiprocess", "regex", "triton", "rdo"):
    try:
        m = importlib.import_module(name)
        print(f"  {name:16s} {getattr(m, '__version__', '?'):14s} {os.path.dirname(m.__file__)}")
    except Exception as e:
        print(f"  {name:16s} MISSING: {type(e).__name__}: {e}")
import torch
if os.environ["DEVICE"] == "cuda":
    assert torch.cuda.is_available(), "torch sees no CUDA device"
    p = torch.cuda.get_device_properties(0)
    print(f"cuda {torch.version.cuda}: {p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}, {torch.cuda.device_count()} device(s)")
PY
[ "${PIPESTATUS[0]}" = 0 ] || { log "stack check failed"; exit 4; }

log "benchmarks on $DEVICE${QUICK:+ (quick)}, at most ${BENCH_TIMEOUT}s"
timeout "$BENCH_TIMEOUT" "$PY" -m benchmarks.run --device "$DEVICE" ${QUICK:+--quick} --out "$OUT" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
[ "$rc" = 124 ] && log "timed out: results.json holds the benchmarks that finished"
log "done, exit $rc; files: $(ls "$OUT" | tr '\n' ' ')"
exit "$rc"

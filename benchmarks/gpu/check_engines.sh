#!/usr/bin/env bash
# Engine checks on a lent GPU machine (benchmarks/gpu/README.md): DPO+rc on a tiny Llama built here under
# DeepSpeed ZeRO-3 and FSDP2 (the shipped configs, 2 processes, or 1 where only one GPU exists), then
#   (a) the saved model.safetensors holds full-size tensors that reload and give the trainer's final logits,
#   (b) the LoRA merged save under ZeRO-3 equals the adapted model,
#   (c) `rdo score` under torchrun equals one process,
#   (d) the sharded reference pass (DDP, ZeRO-3, FSDP2) equals one process.
# Verdict: $OUT/verdict.json (every check's numbers), log: $OUT/check.log.
#   device run, carry [".whl"]:  bash benchmarks/gpu/check_engines.sh
#   here, CPU processes (no ZeRO-3 / FSDP: accelerate turns FSDP into DDP on CPU; ZeRO-3 needs deepspeed
#   importable, DS_ACCELERATOR=cpu):  CPU=1 PY=/work/main/.venv/bin/python OUT=/tmp/ce bash benchmarks/gpu/check_engines.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
START=$SECONDS
PY="${PY:-python3}"
WHEELS="${WHEELS:-.whl}"
SITE="${SITE:-/tmp/site}"
OUT="${OUT:-$PWD/bench-results/engines}"
WORK="${WORK:-/tmp/rdo-engines}"
STEP_TIMEOUT="${STEP_TIMEOUT:-240}"
mkdir -p "$OUT"
rm -rf "$WORK"
LOG="$OUT/check.log"
log() { echo "[check_engines +$((SECONDS - START))s] $*" | tee -a "$LOG"; }
run() { log "$*"; timeout "$STEP_TIMEOUT" "$@" >>"$LOG" 2>&1; local rc=$?; [ $rc = 0 ] || log "exit $rc"; return 0; }

if ls "$WHEELS"/*.whl >/dev/null 2>&1; then  # the image lacks trl/datasets/deepspeed (fetch_wheels.sh)
  log "installing $(ls "$WHEELS"/*.whl | wc -l) wheels into $SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$WHEELS"/*.whl >>"$LOG" 2>&1 || log "pip install failed"
fi
export PYTHONPATH="$SITE:$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
CHECK=(benchmarks/gpu/check_engines.py)

if [ -n "${CPU:-}" ]; then
  N=2; DEV=(--use_cpu true); export DS_ACCELERATOR=cpu
else
  N=$("$PY" -c "import torch; print(min(2, torch.cuda.device_count()))")
  DEV=()
  [ "$N" -ge 1 ] || { log "torch sees no CUDA device"; exit 4; }
fi
log "$N process(es)$([ "$N" = 1 ] && echo ': only one GPU, so sharding is checked with world size 1 (weak for (c)/(d))')"
"$PY" -c "import deepspeed, torch, transformers, accelerate; print('deepspeed', deepspeed.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)" 2>&1 | tee -a "$LOG"
LAUNCH=("$PY" -m accelerate.commands.launch --num_processes "$N" --mixed_precision no)  # fp32: tight tolerances
TORCHRUN=("$PY" -m torch.distributed.run --nproc_per_node "$N" --master_port 29517)

run "$PY" "${CHECK[@]}" prepare "$WORK"
run "$PY" "${CHECK[@]}" train "$WORK" single "${DEV[@]}"                                    # the 1-process baseline
run "${TORCHRUN[@]}" "${CHECK[@]}" train "$WORK" ddp "${DEV[@]}"
for engine in zero3 fsdp2; do
  cfg=(--config_file "configs/accelerate/$engine.yaml")
  run "${LAUNCH[@]}" "${cfg[@]}" "${CHECK[@]}" train "$WORK" "$engine" "${DEV[@]}"          # DPO+rc: reference pass + save
  run "${LAUNCH[@]}" "${cfg[@]}" "${CHECK[@]}" train "$WORK" "$engine-simpo" "${DEV[@]}" --method simpo  # the save without a reference
done
# LoRA under ZeRO-3, reference = the adapter-disabled base under the engine's forward (no precompute)
run "${LAUNCH[@]}" --config_file configs/accelerate/zero3.yaml "${CHECK[@]}" train "$WORK" zero3-lora "${DEV[@]}" --lora_r 4 --precompute_ref false
for name in single ddp zero3 zero3-simpo fsdp2 fsdp2-simpo zero3-lora; do run "$PY" "${CHECK[@]}" verify "$WORK" "$name"; done
for name in ddp zero3 fsdp2; do run "$PY" "${CHECK[@]}" same-reference "$WORK" single "$name"; done

SCORE=(-m rdo.cli score --scorer "$WORK/rm" --dataset_name "$WORK/held.jsonl" --batch_size 3 --shard_size 4)
run "$PY" "${SCORE[@]}" --output "$WORK/score-one.jsonl" ${CPU:+--device cpu}
run "${TORCHRUN[@]}" "${SCORE[@]}" --output "$WORK/score-torchrun.jsonl" ${CPU:+--device cpu}
run "$PY" "${CHECK[@]}" same-scores "$WORK" "$WORK/score-one.jsonl" "$WORK/score-torchrun.jsonl"

EXPECTED=()
for name in single ddp zero3 zero3-simpo fsdp2 fsdp2-simpo zero3-lora; do EXPECTED+=("train-$name" "save-$name"); done
EXPECTED+=(reference-ddp-vs-single reference-zero3-vs-single reference-fsdp2-vs-single score-score-torchrun-vs-score-one)
"$PY" "${CHECK[@]}" verdict "$WORK" "$OUT/verdict.json" "${EXPECTED[@]}" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
log "done, exit $rc (0: every check passed); $OUT/verdict.json"
exit "$rc"

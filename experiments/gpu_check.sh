#!/usr/bin/env bash
# One short run on a lent GPU: msss-tf bench at batch 256 and 1024: plain (no XLA,
# float32), XLA, and XLA + mixed_bfloat16 (add xla_fp16 to GPU_CHECK_VARIANTS for
# mixed_float16); step (full step vs its floor) and input parts only, EfficientNet-B0.
# Writes one JSON per run and a combined gpu_check.json into OUT_DIR (default
# experiments/results/gpu_check-<card>), in about 5-7 minutes on an H100.
#
#   bash experiments/gpu_check.sh [OUT_DIR]
#
# It needs TensorFlow with GPU support on that machine. Where only JAX is there (the GPU
# machines lent to this project, Nov 2026: TensorFlow and its CUDA 12 wheels are ~2 GB and
# cannot be carried), `python experiments/gpu_floor_keras_jax.py` measures the same step's
# encoder passes and losses with Keras 3 on JAX instead (see WORKSPACE.md, Performance).
#
# Environment overrides (the CPU test uses them): GPU_CHECK_BATCHES="256 1024",
# GPU_CHECK_VARIANTS="plain xla xla_bf16" (also: xla_fp16, bf16, fp16),
# GPU_CHECK_STEPS=5, GPU_CHECK_REPEATS=3, GPU_CHECK_WIDTH=1.0, GPU_CHECK_DEPTH=1.0,
# GPU_CHECK_ALLOW_CPU=1 (run without a GPU: for testing this script only).
set -euo pipefail

BATCHES=${GPU_CHECK_BATCHES:-"256 1024"}
VARIANTS=${GPU_CHECK_VARIANTS:-"plain xla xla_bf16"}
STEPS=${GPU_CHECK_STEPS:-5}
REPEATS=${GPU_CHECK_REPEATS:-3}
WIDTH=${GPU_CHECK_WIDTH:-1.0}
DEPTH=${GPU_CHECK_DEPTH:-1.0}
PYTHON=${PYTHON:-python}

if ! $PYTHON -c "import tensorflow" >/dev/null 2>&1; then
  echo "gpu_check.sh: '$PYTHON -c \"import tensorflow\"' fails here: install the package with" \
       "its GPU build (pip install -e . && pip install 'tensorflow[and-cuda]'), or measure the" \
       "encoder's step with Keras on JAX: python experiments/gpu_floor_keras_jax.py" >&2
  exit 2
fi
CARD=$($PYTHON - <<'PY'
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
if gpus:
    name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "gpu")
    print(name.replace(" ", "_"))
PY
)
if [[ -z "$CARD" ]]; then
  if [[ "${GPU_CHECK_ALLOW_CPU:-0}" != "1" ]]; then
    echo "gpu_check.sh: no GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty); run it on a GPU machine" >&2
    exit 2
  fi
  CARD=cpu
fi
OUT_DIR=${1:-experiments/results/gpu_check-$CARD}
mkdir -p "$OUT_DIR"
echo "gpu_check: card $CARD, batches $BATCHES, variants $VARIANTS, $STEPS steps x $REPEATS rounds, out $OUT_DIR"

started=$(date +%s)
for batch in $BATCHES; do
  for variant in $VARIANTS; do
    case $variant in
      plain)    flags=(--jit_compile=false --mixed_precision=float32) ;;
      xla)      flags=(--jit_compile=true  --mixed_precision=float32) ;;
      xla_bf16) flags=(--jit_compile=true  --mixed_precision=mixed_bfloat16) ;;
      xla_fp16) flags=(--jit_compile=true  --mixed_precision=mixed_float16) ;;
      bf16)     flags=(--jit_compile=false --mixed_precision=mixed_bfloat16) ;;
      fp16)     flags=(--jit_compile=false --mixed_precision=mixed_float16) ;;
      *) echo "gpu_check.sh: unknown variant $variant" >&2; exit 2 ;;
    esac
    echo "--- batch $batch, $variant"
    $PYTHON -m experiments.benchmark --batch_size="$batch" --steps="$STEPS" --repeats="$REPEATS" \
      --width_coefficient="$WIDTH" --depth_coefficient="$DEPTH" --parts=step,input \
      --noablations --nocompare_view_batching \
      "${flags[@]}" --out="$OUT_DIR/bench-$batch-$variant.json"
  done
done

$PYTHON - "$OUT_DIR" "$CARD" <<'PY'
import glob, json, os, sys
out_dir, card = sys.argv[1:]
runs = {}
for path in sorted(glob.glob(os.path.join(out_dir, "bench-*.json"))):
    with open(path) as f:
        runs[os.path.basename(path)[len("bench-"):-len(".json")]] = json.load(f)
summary = {"card": card, "runs": runs,
           "table": {name: {"step_seconds": r["step"]["full_step_seconds"],
                            "floor_seconds": r["step"]["floor_seconds"],
                            "step_overhead": r["step_overhead"],
                            "input_headroom": r["input_headroom"],
                            "clips_per_second": r["step"]["clips_per_second_step"]}
                     for name, r in runs.items()}}
with open(os.path.join(out_dir, "gpu_check.json"), "w") as f:
    json.dump(summary, f, indent=2)
for name, row in summary["table"].items():
    print(f"{name:<16} step {row['step_seconds'] * 1000:8.1f} ms  overhead "
          f"{row['step_overhead']:.2f}  headroom {row['input_headroom']:.1f}  "
          f"{row['clips_per_second']:.0f} clips/s")
PY
echo "gpu_check: done in $(( $(date +%s) - started )) s; $OUT_DIR/gpu_check.json"

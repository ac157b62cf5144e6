#!/usr/bin/env bash
# Prepares a GPU pre-training run of experiments/gpu_pretrain_jax.py on a lent machine that
# has JAX (CUDA) but neither TensorFlow nor keras nor a network, and prints the command.
#
#   bash experiments/gpu_pretrain_prep.sh [CORPUS_DIR]     # default runs/corpus_60min
#
# 1. .gpu/arrays: corpus arrays (int16 audio.npy + offsets.npy + arrays.json) of the first
#    files of CORPUS_DIR (a `msss-tf corpus` folder, read in its manifest's order, whose
#    kinds are interleaved; or any audio folder, sorted) up to MAX_MINUTES of audio, written
#    by msss_tf.data.arrays.write_corpus_arrays from a temporary folder of links to them.
#    16 kHz int16 is 1.92 MB a minute: 20 minutes are 38 MB.
# 2. .whl/: the wheels the GPU host lacks (KINDS.md's package list of the 'cuda' image has
#    absl-py, h5py, ml-dtypes, numpy, packaging, rich, scipy, typing-extensions, jax; not
#    keras, namex, optree): keras, namex, optree for CPython 3.12 manylinux x86_64.
#    soundfile is not carried: the training script puts a placeholder in its place.
# 3. Adds /.gpu/ and /.whl/ to .git/info/exclude (they must not be committed), prints the
#    sizes (the working tree plus carried folders must stay under 64 MiB) and the `run`
#    call: command, carry [".whl", ".gpu"], timeout_s.
#
# Environment: MAX_MINUTES=20, MAX_CLIP_SECONDS=10 (write_corpus_arrays's clip split),
# ARRAYS_DIR=.gpu/arrays, WHEEL_DIR=.whl, PYTHON (default .venv/bin/python, else python3),
# KERAS_VERSION=3.15.1, NAMEX_VERSION=0.1.0, OPTREE_VERSION=0.20.0, SKIP_WHEELS=1 (arrays
# only), SKIP_EXCLUDE=1 (leave .git/info/exclude alone; the test uses both),
# WALL_SECONDS=540 and TIMEOUT_S=600 (the printed command's budget).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CORPUS=${1:-runs/corpus_60min}
MAX_MINUTES=${MAX_MINUTES:-20}
MAX_CLIP_SECONDS=${MAX_CLIP_SECONDS:-10}
ARRAYS_DIR=${ARRAYS_DIR:-.gpu/arrays}
WHEEL_DIR=${WHEEL_DIR:-.whl}
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
KERAS_VERSION=${KERAS_VERSION:-3.15.1}
NAMEX_VERSION=${NAMEX_VERSION:-0.1.0}
OPTREE_VERSION=${OPTREE_VERSION:-0.20.0}
WALL_SECONDS=${WALL_SECONDS:-540}
TIMEOUT_S=${TIMEOUT_S:-600}

if [[ "${SKIP_EXCLUDE:-0}" != "1" ]]; then
  EXCLUDE=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$EXCLUDE")"
  touch "$EXCLUDE"
  for pattern in /.gpu/ /.whl/; do
    grep -qxF "$pattern" "$EXCLUDE" || echo "$pattern" >>"$EXCLUDE"
  done
fi

# ---------------------------------------------------------------- 1. corpus arrays subset
echo "corpus arrays: the first $MAX_MINUTES minutes of $CORPUS -> $ARRAYS_DIR"
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" - "$CORPUS" "$ARRAYS_DIR" \
    "$MAX_MINUTES" "$MAX_CLIP_SECONDS" <<'PY'
import json, os, shutil, sys, tempfile

import soundfile as sf

from msss_tf.data.arrays import write_corpus_arrays
from msss_tf.data.audio import find_audio_files

source, out_dir, max_minutes, max_clip_seconds = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
if not os.path.isdir(source):
    sys.exit(f"gpu_pretrain_prep.sh: corpus folder not found: {source} (make one with "
             "`msss-tf corpus --out_dir=runs/corpus_60min --minutes=60`)")
manifest_path = os.path.join(source, "manifest.json")
manifest = json.load(open(manifest_path)) if os.path.isfile(manifest_path) else {}
if isinstance(manifest.get("files"), list) and isinstance(manifest.get("audio_dir"), str):
    root = os.path.join(source, manifest["audio_dir"])
    files = [os.path.join(root, name) for name in manifest["files"]]
else:
    root, files = source, find_audio_files(source)
chosen, seconds = [], 0.0
for path in files:
    if seconds >= max_minutes * 60:
        break
    try:
        seconds += sf.info(path).duration
    except Exception:
        continue  # write_corpus_arrays would skip it too
    chosen.append(path)
if not chosen:
    sys.exit(f"gpu_pretrain_prep.sh: no readable audio in {source}")
links = tempfile.mkdtemp(prefix="gpu_pretrain_links_")
try:
    for i, path in enumerate(chosen):  # numbered: the folder's sorted order is this order
        name = f"{i:06d}_" + os.path.relpath(path, root).replace(os.sep, "_")
        os.symlink(os.path.abspath(path), os.path.join(links, name))
    info = write_corpus_arrays(links, out_dir, max_clip_seconds=max_clip_seconds)
finally:
    shutil.rmtree(links)
size = sum(os.path.getsize(os.path.join(out_dir, n)) for n in os.listdir(out_dir))
print(f"  {len(chosen)} of {len(files)} files, {info['num_clips']} clips, "
      f"{info['seconds_total'] / 60:.1f} min, {size / 2**20:.1f} MiB; "
      f"{len(info['skipped'])} skipped")
PY

# ---------------------------------------------------------------- 2. wheels
if [[ "${SKIP_WHEELS:-0}" != "1" ]]; then
  mkdir -p "$WHEEL_DIR"
  rm -f "$WHEEL_DIR"/keras-*.whl "$WHEEL_DIR"/namex-*.whl "$WHEEL_DIR"/optree-*.whl
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux1_x86_64 -d "$WHEEL_DIR" "keras==$KERAS_VERSION" \
      "namex==$NAMEX_VERSION" "optree==$OPTREE_VERSION"
  echo "wheels in $WHEEL_DIR:"
  ls -l "$WHEEL_DIR"/*.whl | awk '{printf "  %s (%.1f MiB)\n", $NF, $5 / 1048576}'
  for wheel in "$WHEEL_DIR"/*.whl; do  # their needs, for a look against KINDS.md's list
    needs=$(unzip -p "$wheel" '*.dist-info/METADATA' | grep '^Requires-Dist' | grep -v extra \
            | sed 's/Requires-Dist: //' | tr '\n' ' ' || true)
    echo "  $(basename "$wheel"): needs ${needs:-nothing}"
  done
fi

# ---------------------------------------------------------------- 3. sizes and command
tracked=$(git ls-files -z | xargs -0 cat 2>/dev/null | wc -c)
untracked=$(git ls-files -z --others --exclude-standard | xargs -0 cat 2>/dev/null | wc -c)
carried=$(du -sbc "$ARRAYS_DIR" $([[ -d "$WHEEL_DIR" ]] && echo "$WHEEL_DIR") | tail -1 | cut -f1)
total=$((tracked + untracked + carried))
echo "travels: tracked $((tracked / 1048576)) MiB + untracked $((untracked / 1048576)) MiB + carried $((carried / 1048576)) MiB = $((total / 1048576)) MiB (limit 64 MiB)"
if ((total > 62 * 1048576)); then
  echo "gpu_pretrain_prep.sh: over 62 MiB would travel; lower MAX_MINUTES" >&2
  exit 1
fi

# pip installs into .whl/site (in the device's copy of the tree); $OUT is the device's.
COMMAND="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .whl/site .whl/*.whl && export PYTHONPATH=\$PWD/.whl/site || exit; set -o pipefail; PYTHONUNBUFFERED=1 python3 experiments/gpu_pretrain_jax.py --arrays_dir=$ARRAYS_DIR --out_dir=\$OUT --require_gpu --wall_seconds=$WALL_SECONDS 2>&1 | tee \$OUT/train.log"
echo
echo "device run (the tool 'run'; ${#COMMAND} characters):"
"$PYTHON" -c 'import json, sys; print(json.dumps({"command": sys.argv[1], "carry": [sys.argv[2], sys.argv[3]], "timeout_s": int(sys.argv[4])}, indent=1))' \
    "$COMMAND" "$(dirname "$ARRAYS_DIR")" "$WHEEL_DIR" "$TIMEOUT_S"

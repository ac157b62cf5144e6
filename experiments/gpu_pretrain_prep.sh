#!/usr/bin/env bash
# Prepares a GPU pre-training run of experiments/gpu_pretrain_jax.py on a lent machine that
# has JAX (CUDA) but neither TensorFlow nor keras nor a network, and prints the command.
#
#   bash experiments/gpu_pretrain_prep.sh               # render the corpus on the host
#   bash experiments/gpu_pretrain_prep.sh CORPUS_DIR    # carry arrays of CORPUS_DIR
#
# Render mode (no argument; the default): the device command renders RENDER_MINUTES (960:
# ~8,250 clips of 4-10 s) of the realistic corpus with msss_tf.data.realistic.build_corpus
# on the host's CPUs before training (gpu_pretrain_jax.py --render_minutes), so no audio
# travels, only the renderers' wheels (below). Arrays mode (a corpus folder given):
# 1. .gpu/arrays: corpus arrays (int16 audio.npy + offsets.npy + arrays.json) of the first
#    files of CORPUS_DIR (a `msss-tf corpus` folder, read in its manifest's order, whose
#    kinds are interleaved; or any audio folder, sorted) up to MAX_MINUTES of audio, written
#    by msss_tf.data.arrays.write_corpus_arrays from a temporary folder of links to them.
#    16 kHz int16 is 1.92 MB a minute: 20 minutes are 38 MB.
# 2. .whl/: the wheels the GPU host lacks, for CPython 3.12 manylinux x86_64 (KINDS.md's
#    package list of the 'cuda' image has absl-py, h5py, ml-dtypes, numpy, packaging, rich,
#    scipy, six, typing-extensions, jax; not keras, namex, optree, soundfile, cffi,
#    pycparser, espeakng-loader, tinysoundfont, pretty-midi, mido, importlib_resources).
#    Both modes: keras, namex, optree. Render mode also: soundfile (libsndfile inside) with
#    cffi and pycparser; espeakng-loader (libespeak-ng and its voices); tinysoundfont (its
#    declared pyaudio is for playback only: everything is installed with --no-deps);
#    pretty-midi (only for the SoundFont TimGM6mb.sf2 it ships: the builder finds it
#    without importing pretty_midi, so its own needs importlib_resources, six and mido are
#    not needed; mido, 54 kB, travels anyway so that `import pretty_midi` works there too).
#    In arrays mode soundfile is not carried: the training script puts a placeholder in
#    its place. The other mode's wheels are removed from .whl/ (all of .whl/*.whl is
#    installed on the host and travels).
# 3. Adds /.gpu/ and /.whl/ to .git/info/exclude (they must not be committed), prints the
#    sizes (the working tree plus carried folders must stay under 64 MiB) and the `run`
#    call: command, carry ([".whl"], or [".whl", ".gpu"] with arrays), timeout_s.
#
# Environment: RENDER_MINUTES=960, RENDER_SEED=0 (render mode); MAX_MINUTES=20,
# MAX_CLIP_SECONDS=10 (write_corpus_arrays's clip split), ARRAYS_DIR=.gpu/arrays (arrays
# mode); WHEEL_DIR=.whl, PYTHON (default .venv/bin/python, else python3),
# KERAS_VERSION=3.15.1, NAMEX_VERSION=0.1.0, OPTREE_VERSION=0.20.0, and for render mode
# SOUNDFILE_VERSION=0.14.0, CFFI_VERSION=2.1.1, PYCPARSER_VERSION=3.12,
# ESPEAKNG_LOADER_VERSION=0.2.4, TINYSOUNDFONT_VERSION=0.3.7,
# PRETTY_MIDI_VERSION=0.2.11.post0, MIDO_VERSION=1.3.3; SKIP_WHEELS=1 (no download),
# SKIP_EXCLUDE=1 (leave .git/info/exclude alone; the tests use both), WALL_SECONDS=540 and
# TIMEOUT_S=600 (the printed command's budget), TRAIN_FLAGS (more flags for
# gpu_pretrain_jax.py, e.g. "--losses=clip" or "--set=pitch_ratio_min=0.985
# --set=pitch_ratio_max=1.015"; default none: all three losses, MSSSConfig's defaults).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CORPUS=${1:-}
if [[ -n "$CORPUS" ]]; then MODE=arrays; else MODE=render; fi
RENDER_MINUTES=${RENDER_MINUTES:-960}
RENDER_SEED=${RENDER_SEED:-0}
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
SOUNDFILE_VERSION=${SOUNDFILE_VERSION:-0.14.0}
CFFI_VERSION=${CFFI_VERSION:-2.1.1}
PYCPARSER_VERSION=${PYCPARSER_VERSION:-3.12}
ESPEAKNG_LOADER_VERSION=${ESPEAKNG_LOADER_VERSION:-0.2.4}
TINYSOUNDFONT_VERSION=${TINYSOUNDFONT_VERSION:-0.3.7}
PRETTY_MIDI_VERSION=${PRETTY_MIDI_VERSION:-0.2.11.post0}
MIDO_VERSION=${MIDO_VERSION:-1.3.3}
WALL_SECONDS=${WALL_SECONDS:-540}
TIMEOUT_S=${TIMEOUT_S:-600}
TRAIN_FLAGS=${TRAIN_FLAGS:-}

if [[ "${SKIP_EXCLUDE:-0}" != "1" ]]; then
  EXCLUDE=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$EXCLUDE")"
  touch "$EXCLUDE"
  for pattern in /.gpu/ /.whl/; do
    grep -qxF "$pattern" "$EXCLUDE" || echo "$pattern" >>"$EXCLUDE"
  done
fi

# ---------------------------------------------------------------- 1. corpus arrays subset
if [[ "$MODE" == render ]]; then
  echo "render mode: the device renders $RENDER_MINUTES minutes (seed $RENDER_SEED) before training; no arrays travel"
else
echo "corpus arrays: the first $MAX_MINUTES minutes of $CORPUS -> $ARRAYS_DIR"
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" - "$CORPUS" "$ARRAYS_DIR" \
    "$MAX_MINUTES" "$MAX_CLIP_SECONDS" <<'PY'
import json, os, shutil, sys, tempfile

import soundfile as sf

from msss_tf.data.arrays import write_corpus_arrays
from msss_tf.data.files import find_audio_files

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
fi

# ---------------------------------------------------------------- 2. wheels
WHEELS=("keras==$KERAS_VERSION" "namex==$NAMEX_VERSION" "optree==$OPTREE_VERSION")
if [[ "$MODE" == render ]]; then
  WHEELS+=("soundfile==$SOUNDFILE_VERSION" "cffi==$CFFI_VERSION" "pycparser==$PYCPARSER_VERSION"
           "espeakng-loader==$ESPEAKNG_LOADER_VERSION" "tinysoundfont==$TINYSOUNDFONT_VERSION"
           "pretty-midi==$PRETTY_MIDI_VERSION" "mido==$MIDO_VERSION")
fi
if [[ "${SKIP_WHEELS:-0}" != "1" ]]; then
  mkdir -p "$WHEEL_DIR"
  for name in keras namex optree soundfile cffi pycparser espeakng_loader tinysoundfont \
              pretty_midi mido; do
    rm -f "$WHEEL_DIR/$name"-*.whl
  done
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux1_x86_64 -d "$WHEEL_DIR" "${WHEELS[@]}"
  echo "wheels in $WHEEL_DIR ($(du -cb "$WHEEL_DIR"/*.whl | tail -1 | awk '{printf "%.1f MiB", $1 / 1048576}')):"
  ls -l "$WHEEL_DIR"/*.whl | awk '{printf "  %s (%.1f MiB)\n", $NF, $5 / 1048576}'
  for wheel in "$WHEEL_DIR"/*.whl; do  # their needs, for a look against KINDS.md's list
    needs=$(unzip -p "$wheel" '*.dist-info/METADATA' | grep '^Requires-Dist' | grep -v extra \
            | sed 's/Requires-Dist: //' | tr '\n' ' ' || true)
    echo "  $(basename "$wheel"): needs ${needs:-nothing}"
  done
fi

# ---------------------------------------------------------------- 3. sizes and command
CARRY=()
[[ -d "$WHEEL_DIR" ]] && CARRY+=("$WHEEL_DIR")
[[ "$MODE" == arrays ]] && CARRY+=("$ARRAYS_DIR")
tracked=$(git ls-files -z | xargs -0 cat 2>/dev/null | wc -c)
untracked=$(git ls-files -z --others --exclude-standard | xargs -0 cat 2>/dev/null | wc -c)
carried=0
if ((${#CARRY[@]})); then carried=$(du -sbc "${CARRY[@]}" | tail -1 | cut -f1); fi
total=$((tracked + untracked + carried))
echo "travels: tracked $((tracked / 1048576)) MiB + untracked $((untracked / 1048576)) MiB + carried $((carried / 1048576)) MiB = $((total / 1048576)) MiB (limit 64 MiB)"
if ((total > 62 * 1048576)); then
  echo "gpu_pretrain_prep.sh: over 62 MiB would travel; lower MAX_MINUTES" >&2
  exit 1
fi

# pip installs into .whl/site (in the device's copy of the tree); $OUT is the device's.
if [[ "$MODE" == render ]]; then
  DATA="--render_minutes=$RENDER_MINUTES --render_seed=$RENDER_SEED"
  CARRY_JSON=("$WHEEL_DIR")
else
  DATA="--arrays_dir=$ARRAYS_DIR"
  CARRY_JSON=("$(dirname "$ARRAYS_DIR")" "$WHEEL_DIR")
fi
if [[ "$WHEEL_DIR" == /* ]]; then SITE=$WHEEL_DIR/site; else SITE=\$PWD/$WHEEL_DIR/site; fi
COMMAND="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $WHEEL_DIR/site $WHEEL_DIR/*.whl && export PYTHONPATH=$SITE || exit; set -o pipefail; PYTHONUNBUFFERED=1 python3 experiments/gpu_pretrain_jax.py $DATA --out_dir=\$OUT --require_gpu --wall_seconds=$WALL_SECONDS${TRAIN_FLAGS:+ $TRAIN_FLAGS} 2>&1 | tee \$OUT/train.log"
echo
echo "device run (the tool 'run'; ${#COMMAND} characters):"
"$PYTHON" -c 'import json, sys; print(json.dumps({"command": sys.argv[1], "carry": sys.argv[3:], "timeout_s": int(sys.argv[2])}, indent=1))' \
    "$COMMAND" "$TIMEOUT_S" "${CARRY_JSON[@]}"

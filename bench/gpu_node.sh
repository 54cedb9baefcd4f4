#!/usr/bin/env bash
# The GPU node's figures in one run of under 8 minutes (a lent H200 through the device tool).
#
# Here, once:   bash bench/gpu_node.sh prepare
#   fills .gpu/ (ignored by git, about 57 MB): wheels the GPU image lacks (PyAV, tflite,
#   facenet-pytorch; for its Python 3.12) and, installed without dependencies, what they and the
#   weights need (safetensors, flatbuffers, requests: the image lists them, a dry run lacked them), BlazePose's two .tflite files from the installed
#   mediapipe wheel, and six real clips from ../shared/data/clips (the device gets no ../shared).
# There:        run(command="bash bench/gpu_node.sh", carry=[".gpu"], timeout_s=540)
#   installs the wheels into /tmp/site, checks that everything its Python steps import imports
#   (bench/gpu_imports.py: one line and exit 1 if not), imports the BlazePose networks into a fresh weights
#   cache (sha256 recorded as here), then prints, and writes to $OUT/gpu_node.txt:
#   1. nvidia-smi and torch's view of the device;
#   2. pose frames/s at batch 1, 16, 64 and 256 (bench/bench_pose.py --only batch), float16;
#   3. the node's build throughput: pixel rules and all four modalities of 96 clips, 64 in flight
#      (bench/bench_node.py), BlazePose and ViBe on the GPU.
# Targets (issue: pose that batches): pose at least 3,000 frames/s, the whole build at least 1,800.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIPS=(musepose_dance hybrik_taiji stgcn_ta_chi stgcn_clean_and_jerk tfjs_pose_squats tuneavideo_man-surfing)

if [ "${1:-}" = "prepare" ]; then
  PY=${PY:-.venv/bin/python}
  rm -rf .gpu && mkdir -p .gpu/whl .gpu/models .gpu/clips
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/whl av==18.1.0 tflite==2.18.0 facenet-pytorch==2.6.0 safetensors==0.8.0 flatbuffers==25.12.19 \
    requests==2.34.2
  "$PY" - <<'EOF'
import shutil
from pipeline.weights.registry import get_spec
for name in ("blazepose_detector", "blazepose_landmark_full"):
    shutil.copy(get_spec(name).bundled(), ".gpu/models/")
EOF
  for c in "${CLIPS[@]}"; do cp "../shared/data/clips/$c.mp4" .gpu/clips/; done
  du -sh .gpu
  echo 'now: run(command="bash bench/gpu_node.sh", carry=[".gpu"], timeout_s=540)'
  exit 0
fi

OUT=${OUT:-out/gpu_node}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_node.txt") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" VDV_WEIGHTS_DIR=/tmp/vdv-weights VDV_BENCH_CLIPS="$PWD/.gpu/clips" PYTHONUNBUFFERED=1
python3 bench/gpu_imports.py || exit 1
# every Python step from here runs under torch.cuda.set_sync_debug_mode("warn") and prints its own
# host waits (synchronising CUDA calls) at exit (bench/support/sitecustomize.py)
export PYTHONPATH="$PWD/bench/support:$PYTHONPATH" VDV_BENCH_SYNCS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 - <<'EOF'
import torch
from pipeline.weights.fetch import import_weights
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())
for name, file in (("blazepose_detector", "pose_detection.tflite"), ("blazepose_landmark_full", "pose_landmark_full.tflite")):
    lock = import_weights(name, f".gpu/models/{file}")
    print(name, "sha256", lock["sha256"], "source verified", lock["source_verified"])
EOF
echo "== pose frames/s by batch (float16) =="
timeout 150 python3 bench/bench_pose.py --only batch --device cuda --precision float16 --threads 4 \
  --clip-dir .gpu/clips --backend-clips "${CLIPS[@]}" --batches 1 16 64 256 --steps 40 || echo "pose batch figure: timed out or failed"
echo "== float32, TF32 off, for comparison =="
timeout 60 python3 bench/bench_pose.py --only batch --device cuda --precision float32 --threads 4 \
  --clip-dir .gpu/clips --backend-clips "${CLIPS[@]}" --batches 64 256 --steps 20 || echo "float32 figure: timed out or failed"
echo "== node build throughput: pixel rules and four modalities, 96 clips, 64 in flight =="
timeout 240 python3 bench/bench_node.py --device cuda --clips-in-flight 64 --copies 16 --clips "${CLIPS[@]}" \
  || echo "node figure: timed out or failed"

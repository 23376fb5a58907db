#!/usr/bin/env bash
# The one GPU check of issue 8, for a bare GPU machine; run from the repository root, about 5-8 min on an H100:
#
#     bash bench/gpu_check.sh                 # everything goes to $OUT (default /tmp/vizcore-gpu)
#
# Stages, each under its own time limit inside an overall deadline (DEADLINE, default 450 s after the start):
#   1. machine + environment: a venv that sees the machine's own CUDA torch (--system-site-packages), onnx2torch from
#      .devcarry/onnx2torch, a wheel in .whl/ or the package index, then `pip install -e .` without touching torch
#      (falls back to PYTHONPATH=. if pip cannot install); prints every version.
#   2. the goal: all 1280 channels of MobileNetV2's last conv layer, 256 steps, 224 px, bf16 --amp, under 60 s
#      (bench/gpu_goal.py; then the same with cudnn.benchmark, then float32, while time is left).
#   3. the CUDA tests: tests/test_perf_paths.py (CUDA tests included) and tests/test_engine.py (device auto = cuda).
#   4. the benchmark: bench/render_speed.py --device cuda --amp (Lucent rows only if .devcarry/lucent_pkgs exists).
# Files in $OUT: gpu_check.log (all output), goal.json, goal_grid.png, bench.json, RESULTS-gpu.md, pytest.log.
set -u
OUT=${OUT:-/tmp/vizcore-gpu}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
DEADLINE=${DEADLINE:-450}
DEV=${GPU_CHECK_DEVICE:-cuda}  # GPU_CHECK_DEVICE=cpu: a tiny smoke run of this script itself on a machine without GPU
if [ "$DEV" = cuda ]; then GOAL_ARGS=""; BENCH_ARGS="--amp --units 16 --steps 64 --reps 3"
else GOAL_ARGS="--units 8 --steps 4 --size 64"; BENCH_ARGS="--quick --no-lucent"; fi
T0=$(date +%s)
now() { echo $(( $(date +%s) - T0 )); }
stage() { echo; echo "=== [$(now) s] $*"; }
# seconds left for a stage: min(wanted, deadline - now - 10), at least 5
budget() { local left=$(( DEADLINE - $(now) - 10 )); [ "$left" -lt "$1" ] && echo $(( left > 5 ? left : 5 )) || echo "$1"; }

stage "machine"
echo "repo: $PWD  (git: $(git rev-parse --short HEAD 2>/dev/null || echo '?'))   out: $OUT   deadline: ${DEADLINE} s"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi failed"
nproc; free -g | head -2
python3 - <<'EOF' || echo "python3 has no working torch"
import torch
print("python3 torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF

stage "environment"
PY=python3
# The machine's python3 may itself live in a venv (/opt/torch/.venv): --system-site-packages would then only show
# the base interpreter's packages, so a .pth file adds python3's own site-packages (torch, onnx, ...) to the new venv.
if timeout "$(budget 60)" python3 -m venv --system-site-packages /tmp/vz-venv; then
    VSITE=$(/tmp/vz-venv/bin/python -c 'import site; print(site.getsitepackages()[0])')
    python3 -c 'import site; print("\n".join(site.getsitepackages()))' > "$VSITE/_machine_site.pth"
    if /tmp/vz-venv/bin/python -c "import torch"; then
        PY=/tmp/vz-venv/bin/python
    else
        echo "the new venv cannot import torch: using the machine's python3 directly"
    fi
else
    echo "venv creation failed: using the machine's python3 directly"
fi
echo "python: $PY"
if ! $PY -c "import onnx2torch" 2>/dev/null; then
    if [ -d .devcarry/onnx2torch ]; then
        echo "onnx2torch: from .devcarry/onnx2torch (PYTHONPATH)"
        export PYTHONPATH="$PWD/.devcarry${PYTHONPATH:+:$PYTHONPATH}"
    elif ls .whl/onnx2torch-*.whl >/dev/null 2>&1; then
        echo "onnx2torch: from .whl/"
        timeout "$(budget 60)" $PY -m pip install -q --no-deps --no-index .whl/onnx2torch-*.whl
    else
        echo "onnx2torch: from the package index"
        timeout "$(budget 90)" $PY -m pip install -q --no-deps onnx2torch==1.5.15 || echo "onnx2torch install FAILED"
    fi
fi
# vizcore itself, editable, without letting pip replace the machine's CUDA torch
if timeout "$(budget 90)" $PY -m pip install -q --no-deps --no-build-isolation -e .; then
    echo "vizcore: pip install -e . (no deps) done"
else
    echo "vizcore: pip install -e . failed; using PYTHONPATH=$PWD"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
$PY - <<'EOF'
import importlib
for name in ("torch", "torchvision", "onnx", "onnx2torch", "onnxruntime", "numpy", "pluggy", "rich", "jinja2", "PIL",
             "pytest", "vizcore"):
    try:
        m = importlib.import_module(name)
        print(f"  {name:12s} {getattr(m, '__version__', '?'):12s} {getattr(m, '__file__', '')}")
    except Exception as exc:  # noqa: BLE001
        print(f"  {name:12s} MISSING: {type(exc).__name__}: {exc}")
EOF
if ! $PY -c "import vizcore, torch; assert '$DEV' != 'cuda' or torch.cuda.is_available()"; then
    echo "FATAL: vizcore or CUDA torch not importable; see above"; exit 1
fi

stage "goal: 1280 channels of layer 95, 256 steps, 224 px, bf16, < 60 s"
# variants start only in the first 120 s of the stage; the first one is the goal as a user would run it
timeout "$(budget 200)" $PY bench/gpu_goal.py --device "$DEV" $GOAL_ARGS --variants amp,amp-nobench,fp32,amp+unit1 \
    --deadline 120 --json "$OUT/goal.json" --grid "$OUT/goal_grid.png" \
    || echo "gpu_goal.py exited with $? (124 = stage time limit)"

stage "CUDA tests"
timeout "$(budget 90)" $PY -m pytest -q -p no:cacheprovider tests/test_perf_paths.py tests/test_engine.py -rs \
    2>&1 | tee "$OUT/pytest.log" | tail -25
echo "pytest exit: ${PIPESTATUS[0]}"

stage "benchmark on the GPU"
timeout "$(budget 200)" $PY bench/render_speed.py --device "$DEV" $BENCH_ARGS \
    --only roofline,overhead,truncation,memory,quality,lucent \
    --json "$OUT/bench.json" --record "$OUT/RESULTS-gpu.md" \
    || echo "render_speed.py exited with $? (124 = stage time limit)"

stage "done in $(now) s; files in $OUT:"
ls -la "$OUT"

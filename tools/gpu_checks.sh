#!/usr/bin/env bash
# Every GPU check and benchmark of one lease of a GPU machine, in one command (docs/benchmarks_gpu.md):
# the tests that run only where there is a GPU, then issue 21's fused-sweep benchmark on the GPU.
# From the repository root, with deepsweep's dependencies importable (see README, "On a GPU"):
#   bash tools/gpu_checks.sh OUT_DIR
# MNIST must be in data/mnist/raw already (the machine may have no network): copy it there beforehand.
set -uo pipefail
out=${1:?usage: tools/gpu_checks.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 MLFLOW_TRACKING_URI="sqlite:///$PWD/bench/mlflow_gpu.db"
mkdir -p bench
python3 - <<'PY' | tee "$out/machine.txt"
import torch, lightning, mlflow
print("torch", torch.__version__, "lightning", lightning.__version__, "mlflow", mlflow.__version__)
print(torch.cuda.get_device_name(0), round(torch.cuda.get_device_properties(0).total_memory / 2**30), "GiB")
PY
# The GPU cases of the suite: each skips on a machine without one.
timeout 120 python3 -m pytest -q -p no:cacheprovider -o addopts="" \
    tests/test_fused.py::test_an_array_on_the_gpu_trains_as_on_the_cpu \
    "tests/test_fused.py::test_each_member_trains_as_its_job_alone_with_its_own_dropout_masks[mlp-dropout-gpu]" \
    "tests/test_bench.py" "tests/test_training.py::test_data_moves_to_the_trainers_gpu_once_and_stays_put_on_cpu" 2>&1 \
    | tee "$out/pytest.log" | tail -5
# A fused array's training alone, 32 digits MLPs: what one stacked step costs on the GPU.
timeout 90 python3 tools/fused_step_time.py 32 --profile trainer=gpu > "$out/fused_step.txt" 2>&1
tail -1 "$out/fused_step.txt"
# Issue 21: the fused launcher (one array in one process; 8 arrays in 8 processes) against one process and
# 8 jobs sharing the GPU, on the MNIST MLP with 8 and 32 members (one process: 8 only). On an H200 these
# rows took 7.3 min together in the runs docs/benchmarks_gpu.md records (all but the 8-member 8-process row).
timeout 520 python3 -m deepsweep.bench --only fused trainer=gpu --fused-sizes 8,32 --fused-epochs 3 \
    --fused-sweeps mlp --fused-one-process-up-to 8 --fused-launchers "fused,8 processes,one process,jobs_per_gpu=8" \
    2>&1 | grep -v '^\[' | tee "$out/bench.log" | grep '^{'
cp bench/results_gpu.json docs/benchmarks_gpu.md "$out/" 2>/dev/null
true

#!/usr/bin/env bash
# What to run on a machine with NVIDIA GPUs, in a few minutes, from the repository root:
#   pip install -e ".[cuda,test,bench]"   (JAX's CUDA wheels; torch stays the pinned build)
#   bash benchmarks/gpu_check.sh
# 1. the tests whose code paths depend on the device (engine, gradients over devices, programs,
#    instruments, noise scale), on the GPU; 2. throughput against B on 1 GPU and on all of them;
# 3. the cohort benchmark (16 seeds vmapped against a PyTorch loop). Results: benchmarks/results/.
set -euo pipefail
python -c "import jax; print('JAX', jax.__version__, 'devices:', jax.devices())"
python -c "import jax, sys; sys.exit(0 if jax.default_backend() == 'gpu' else 'no GPU: JAX runs on ' + jax.default_backend())"
python -m pytest -q -x tests/test_engine.py tests/test_gradient_paths.py tests/test_programs.py \
    tests/test_instruments_step.py tests/test_noise_flag.py tests/test_batch_norm.py tests/test_multi_device.py
python benchmarks/bench_devices.py
python benchmarks/bench_train.py --quick

#!/usr/bin/env bash
# One short GPU check for a lent device machine (see the device tool): the spiral
# engine on CUDA, then Myrtle-5 on CIFAR-shaped data, our stepper vs a bare loop.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 -m dlf_tui run spiral-fig4 --runs-dir /tmp/g --device cuda --steps 20000 \
    --set diagnostics.enabled=false 2>&1 | tail -4
timeout 150 python3 bench/gpu_check.py --device cuda --steps 200 --warmup 30 --no-engine \
    --set run.amp=bf16 --set run.channels_last=true 2>&1 | tail -12

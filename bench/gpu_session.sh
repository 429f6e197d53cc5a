#!/usr/bin/env bash
# One GPU session, under 5 minutes in all (each part has its own timeout):
#   1. Myrtle-5 on CIFAR-shaped data: our stepper vs a bare compiled loop, bf16 and
#      channels_last (target >= 0.9; last measured 0.79);
#   2. the stacked spiral sweep, 1,024 members on one GPU, against the CPU thread pool
#      (member-updates/s);
#   3. a --devices sweep over two GPUs against one, if two are visible;
#   4. the TUI attached to a CUDA run, captured from tmux.
# No test depends on it.  Run from the repository root:
#     bash bench/gpu_session.sh [OUT_DIR]          (default $OUT, else /tmp/dlf-gpu)
# Without a GPU every part runs on the CPU at toy sizes (a dry run of the script itself).
# On the lent machine textual, textual-plotext, plotext and platformdirs are not installed:
# part 4 needs them carried as wheels (the device README says how) and tmux; else it says so.
set -u
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${1:-${OUT:-/tmp/dlf-gpu}}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
T0=$SECONDS
section() { echo; echo "== $1  (+$((SECONDS - T0)) s)"; }

section "machine"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
NGPU=$($PY -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'GPUs', torch.cuda.device_count())"
if [ "$NGPU" -gt 0 ]; then DEV=cuda; else DEV=cpu; echo "no GPU: a dry run on the CPU at toy sizes"; fi

section "1. Myrtle-5, CIFAR-shaped: stepper vs bare compiled loop (bf16, channels_last; target >= 0.9)"
if [ "$DEV" = cuda ]; then
    timeout 120 $PY bench/gpu_check.py --device cuda --steps 200 --warmup 30 --no-engine \
        --set run.amp=bf16 --set run.channels_last=true >"$OUT/myrtle.txt" 2>&1
else
    timeout 140 $PY bench/gpu_check.py --device cpu --steps 16 --warmup 2 --n 640 --width 8 --batch 16 \
        --threads 1 --no-engine --no-compile --set run.flush_every=16 >"$OUT/myrtle.txt" 2>&1
fi
tail -8 "$OUT/myrtle.txt"
ratio=$(grep -o 'ratio stepper/bare: [0-9.]*' "$OUT/myrtle.txt" | awk '{print $3}')
awk -v r="$ratio" 'BEGIN { if (r == "") print "myrtle: no ratio (see myrtle.txt)";
    else printf "myrtle stepper/bare %.3f: %s\n", r, (r >= 0.9 ? "ok (>= 0.9)" : "BELOW the 0.9 target") }'

section "2. stacked spiral sweep: 1,024 members on one GPU vs the CPU thread pool"
if [ "$DEV" = cuda ]; then
    timeout 100 $PY bench/sweep_scale.py --members 1024 --steps 2000 --device cuda --mode batched | tee "$OUT/sweeps.txt"
    timeout 45 $PY bench/sweep_scale.py --members 256 --steps 2000 --device cpu --mode threads | tee -a "$OUT/sweeps.txt"
else
    timeout 75 $PY bench/sweep_scale.py --members 8 --steps 200 --device cpu --mode batched | tee "$OUT/sweeps.txt"
    timeout 45 $PY bench/sweep_scale.py --members 8 --steps 200 --device cpu --mode threads | tee -a "$OUT/sweeps.txt"
fi

section "3. --devices: one member per GPU at a time, two GPUs against one"
if [ "$NGPU" -ge 2 ]; then
    timeout 45 $PY bench/sweep_scale.py --members 8 --steps 20000 --devices cuda:0,cuda:1 | tee -a "$OUT/sweeps.txt"
    timeout 45 $PY bench/sweep_scale.py --members 8 --steps 20000 --devices cuda:0 | tee -a "$OUT/sweeps.txt"
elif [ "$DEV" = cpu ]; then
    timeout 45 $PY bench/sweep_scale.py --members 2 --steps 2000 --devices cpu,cpu | tee -a "$OUT/sweeps.txt"
else
    echo "skipped: $NGPU GPU visible (needs 2)"
fi

section "4. the TUI attached to a $DEV run (tmux capture)"
if command -v tmux >/dev/null && $PY -c "import textual, textual_plotext, plotext, platformdirs" 2>/dev/null; then
    RUNS=$(mktemp -d)
    $PY -m dlf_tui run spiral-fig4 --device "$DEV" --steps 5000000 --set diagnostics.enabled=false \
        --runs-dir "$RUNS" >"$OUT/run.txt" 2>&1 &
    RUNPID=$!
    RUN=""
    for _ in $(seq 120); do
        RUN=$(ls -d "$RUNS"/2* 2>/dev/null | head -1)
        [ -n "$RUN" ] && [ -S "$RUN/control.sock" ] && break
        sleep 0.25
    done
    if [ -n "$RUN" ] && [ -S "$RUN/control.sock" ]; then
        tmux new-session -d -s dlfgpu -x 160 -y 50 "$PY -m dlf_tui attach $RUN"
        sleep 12
        tmux capture-pane -p -t dlfgpu >"$OUT/tui.txt"
        tmux kill-session -t dlfgpu
        head -50 "$OUT/tui.txt"
    else
        echo "the run did not start:"; tail -5 "$OUT/run.txt"
    fi
    [ -n "$RUN" ] && timeout 30 $PY -m dlf_tui ctl "$RUN" stop
    wait $RUNPID
    tail -4 "$OUT/run.txt"
else
    echo "skipped: needs tmux and textual, textual-plotext, plotext, platformdirs (carry them as wheels)"
fi

section "done: files in $OUT"

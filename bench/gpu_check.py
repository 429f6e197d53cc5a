"""GPU check: our trainer's update rate against a bare compiled PyTorch loop.

Myrtle-5 on CIFAR-shaped synthetic data (random uint8 images written in CIFAR's
real on-disk format, so nothing is downloaded), a fixed number of updates:

1. **stepper**: ``AutogradStep`` with the preset's settings, driven the way the
   engine drives it (per chunk: Γ table, divergence snapshot, ``step(i)`` with
   its per-step statistics into the device buffer, one ``.cpu()`` of the chunk,
   the parameters' finiteness check); data resident on the device, batches,
   crop + flip and normalisation on the device.
2. **bare**: the same model, batch, optimizer and on-device augmentation as a
   plain loop: a ``torch.compile``d forward + cross-entropy, ``backward()``,
   ``opt.step()``; no statistics, no host sync until the end.
3. **engine** (unless ``--no-engine``): the real engine process on the same
   files (``dlf_tui.engine``, metrics written to disk), its steady updates/s.

Prints updates/s of each and the ratios stepper/bare and engine/bare (target ≥ 0.85).

    python bench/gpu_check.py --device cuda --steps 300                  # GPU, < 3 min
    python bench/gpu_check.py --device cuda --steps 300 --set run.amp=bf16 --set run.channels_last=true
    python bench/gpu_check.py --device cpu --steps 200 --n 640 --width 16 --batch 32 --threads 1 \
        --set run.flush_every=16                                        # CPU smoke (a few minutes)
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET = 0.85


def write_fake_cifar(root: Path, n: int, n_test: int = 100, seed: int = 0) -> None:
    """n random CIFAR-shaped training images (+ a small test batch) in the files
    torchvision's CIFAR10 reads: cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [n // 5 + (i < n % 5) for i in range(5)]

    def dump(name: str, m: int) -> None:
        d = {"batch_label": name, "labels": rng.integers(0, 10, m).tolist(),
             "data": rng.integers(0, 256, (m, 3072), dtype=np.uint8), "filenames": [""] * m}
        with open(folder / name, "wb") as fh:
            pickle.dump(d, fh, protocol=4)

    for i, m in enumerate(sizes, 1):
        dump(f"data_batch_{i}", m)
    dump("test_batch", n_test)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, fh)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_stepper(cfg, ds, device, total: int):
    """(run(n), rows, description): n updates of our stepper, driven per chunk as the engine does."""
    import torch

    from dlf_tui.engine import models
    from dlf_tui.engine.steps import select as steppers
    from dlf_tui.core.schedule import Schedule
    from dlf_tui.engine.steps.select import chunk_rows

    dtype = torch.float32 if cfg.run.dtype == "float32" else torch.float64
    C = ds.classes
    rows = chunk_rows(cfg, ds)  # the engine's chunk rule
    model = models.build(cfg.model, ds.in_features, C, cfg.run.seed, device, dtype)
    st = steppers.make(cfg, model, ds, rows)
    s = cfg.schedule
    sched = Schedule.create(s.kind, s.amplitude, s.period, C, total, s.last_period_static)

    def run(n: int) -> None:
        done = 0
        while done < n:
            k = min(rows, n - done)
            gam, _, _ = sched.table(k)
            st.begin_chunk(torch.as_tensor(gam, dtype=dtype, device=device))
            st.snapshot()  # the engine's divergence guard
            t0 = time.perf_counter()
            i = 0
            while i < k:  # the engine also flushes every flush_seconds, checked every 64
                st.step(i)
                i += 1
                if not i & 63 and time.perf_counter() - t0 > cfg.run.flush_seconds:
                    break
            k = i
            raw = st.buf[:k].cpu()  # the engine's one host sync per chunk
            assert torch.isfinite(raw).all() and st.params_finite()
            sched.advance(k)
            done += k

    return run, rows, (f"{type(st).__name__}, a flush every {rows} updates or "
                       f"{cfg.run.flush_seconds:g} s")


def make_bare(cfg, ds, device, compile_: bool):
    """run(n): n updates of a plain loop, same model, batch, optimizer, augmentation."""
    import torch
    import torch.nn.functional as F

    from dlf_tui.engine import images, models

    dtype = torch.float32 if cfg.run.dtype == "float32" else torch.float64
    model = models.build(cfg.model, ds.in_features, ds.classes, cfg.run.seed, device, dtype)
    cl = cfg.run.channels_last
    if cl:
        model.to(memory_format=torch.channels_last)
    amp = cfg.run.amp == "bf16"
    o = cfg.optim
    opt = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    spec = ds.image
    scale, shift = spec.scale_shift(device, dtype)
    X, Y = ds.train.x, ds.train.y
    B, N = cfg.data.batch_size, ds.train.n
    gen = torch.Generator(device=device).manual_seed(1)

    def loss_fn(idx, r):
        x = images.crop_flip(X[idx], r, spec.pad, spec.crop, spec.flip) if spec.augment else X[idx]
        x = torch.addcmul(shift, x.to(dtype), scale)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        return F.cross_entropy(logits.float(), Y[idx])

    fn = torch.compile(loss_fn) if compile_ else loss_fn
    state = {"perm": torch.randperm(N, generator=gen, device=device), "pos": 0}

    def run(n: int) -> None:
        for _ in range(n):
            if state["pos"] + B > N:
                state["perm"] = torch.randperm(N, generator=gen, device=device)
                state["pos"] = 0
            idx = state["perm"][state["pos"]: state["pos"] + B]
            state["pos"] += B
            r = images.random_ints(B, spec.pad, gen, device)
            loss = fn(idx, r)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return run, f"{'compiled' if compile_ else 'eager'} forward + cross-entropy, no statistics"


def timed(run, n: int, device) -> float:
    sync(device)
    t = time.perf_counter()
    run(n)
    sync(device)
    return time.perf_counter() - t


def bench_engine(cfg, runs_dir: Path, steps: int) -> tuple[float, str]:
    from dlf_tui.core import config
    from dlf_tui.store import launch
    from dlf_tui.store import run as runs

    cfg = config.apply_overrides(cfg, [f"run.steps={steps}", "data.val_split=none",
                                       "run.checkpoint_every=0"], source="bench")
    run = runs.create_run(cfg, runs_dir)
    t = time.perf_counter()
    proc = launch.spawn_run_engine(run)
    code = proc.wait()
    wall = time.perf_counter() - t
    if code:
        return float("nan"), f"engine failed: {launch.engine_failure(run)}"
    st = json.loads((run.path / "state.json").read_text())
    if not st.get("rate"):
        return float("nan"), (f"{st['step']} updates in one flush chunk: no steady rate; more --steps "
                              f"or --set run.flush_every=16")
    return float(st["rate"]), f"{st['step']} updates, steady rate after the first chunk, process {wall:.1f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto")
    ap.add_argument("--preset", default="cifar10-myrtle5")
    ap.add_argument("--steps", type=int, default=300, help="timed updates")
    ap.add_argument("--warmup", type=int, default=40, help="untimed updates first (compilation)")
    ap.add_argument("--n", type=int, default=50000, help="synthetic training images")
    ap.add_argument("--width", type=int, default=None, help="override model.width")
    ap.add_argument("--batch", type=int, default=None, help="override data.batch_size")
    ap.add_argument("--no-compile", action="store_true", help="eager on both sides (run.compile=false)")
    ap.add_argument("--no-engine", action="store_true", help="skip the engine-process measurement")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override")
    args = ap.parse_args()

    import torch

    from dlf_tui.core import config, presets
    from dlf_tui.engine import data as datamod
    from dlf_tui.engine.trainer import resolve_device

    t_all = time.perf_counter()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the engine does (subnormals are ~100x slower on x86 CPUs)
    tmp = Path(tempfile.mkdtemp(prefix="dlf-gpu-check-"))
    write_fake_cifar(tmp / "data", args.n)
    sets = [f"run.device={device}", f"data.root={tmp / 'data'}", "data.verify=false",
            f"run.compile={'false' if args.no_compile else 'true'}", f"run.threads={args.threads}"]
    if args.width:
        sets.append(f"model.width={args.width}")
    if args.batch:
        sets.append(f"data.batch_size={args.batch}")
    cfg = config.apply_overrides(presets.find(args.preset), sets + args.sets)
    dtype = torch.float32 if cfg.run.dtype == "float32" else torch.float64
    ds = datamod.load(cfg.data, device, dtype)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); torch {torch.__version__}", flush=True)
    print(f"model: {cfg.model.kind} width {cfg.model.width}; batch {cfg.data.batch_size}; "
          f"{ds.train.n} resident uint8 images {tuple(ds.in_features)}; {cfg.run.dtype}, "
          f"amp={cfg.run.amp}, channels_last={cfg.run.channels_last}, compile={cfg.run.compile}; "
          f"{cfg.optim.name} lr {cfg.optim.lr} momentum {cfg.optim.momentum}; "
          f"crop={ds.image.crop} flip={ds.image.flip}", flush=True)
    print(f"updates: {args.warmup} warm-up + {args.steps} timed", flush=True)

    total = args.warmup + args.steps
    ours, rows, info_ours = make_stepper(cfg, ds, device, 2 * total)
    bare, info_bare = make_bare(cfg, ds, device, cfg.run.compile)
    w_ours, w_bare = timed(ours, args.warmup, device), timed(bare, args.warmup, device)
    print(f"warm-up (incl. compilation): stepper {w_ours:.1f} s, bare {w_bare:.1f} s", flush=True)
    # interleaved rounds of whole flush chunks, so drifting machine load hits both alike
    step_rows = min(rows, 64)  # the engine checks its flush clock every 64 updates
    per_round = step_rows * max(1, -(-50 // step_rows))
    rounds = max(1, -(-args.steps // per_round))
    t_ours = t_bare = 0.0
    ratios = []
    for _ in range(rounds):
        a, b = timed(ours, per_round, device), timed(bare, per_round, device)
        t_ours, t_bare = t_ours + a, t_bare + b
        ratios.append(b / a)
    n = rounds * per_round
    rates = {"stepper": n / t_ours, "bare": n / t_bare}
    print(f"stepper (ours): {rates['stepper']:10.1f} updates/s  ({info_ours}; {n} updates in "
          f"{rounds} rounds, median round ratio {float(np.median(ratios)):.3f})", flush=True)
    print(f"bare loop:      {rates['bare']:10.1f} updates/s  ({info_bare})", flush=True)
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB", flush=True)
    if not args.no_engine:
        del ds, ours, bare
        rates["engine"], info = bench_engine(cfg, tmp / "runs", total)
        print(f"engine process: {rates['engine']:10.1f} updates/s  ({info})", flush=True)
    ok = True
    for k in ("stepper", "engine"):
        if k in rates and rates[k] == rates[k]:  # not nan
            ratio = rates[k] / rates["bare"]
            ok &= ratio >= TARGET
            print(f"ratio {k}/bare: {ratio:.3f}  (target >= {TARGET}: {'ok' if ratio >= TARGET else 'BELOW'})")
    if args.keep:
        print(f"scratch files kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"total {time.perf_counter() - t_all:.0f} s", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

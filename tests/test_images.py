"""Image data (CIFAR-10/100, MNIST, Fashion-MNIST), conv models and the image
training path, on tiny data sets written in the real on-disk formats and read
through the real torchvision classes (no downloads)."""

from __future__ import annotations

import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dlf_tui.core import config
from dlf_tui.store import launch
from dlf_tui.store import run as runs
from dlf_tui.cli.main import app
from dlf_tui.engine import data as datamod
from dlf_tui.engine import images, models
from dlf_tui.engine.steps import select as steppers
from dlf_tui.engine.steps.autograd import AutogradStep
from dlf_tui.core.errors import SetupError

runner = CliRunner()
CPU = torch.device("cpu")


# ---------------------------------------------------------------------------
# Tiny data sets in the real formats
# ---------------------------------------------------------------------------


def write_cifar(root: Path, hundred: bool = False, per_batch: int = 20, n_test: int = 30,
                seed: int = 0) -> dict:
    """CIFAR's python version: pickled dicts with uint8 rows (N, 3072), channel-major.
    CIFAR-10: data_batch_1..5, test_batch, batches.meta; CIFAR-100: train, test, meta."""
    rng = np.random.RandomState(seed)
    C = 100 if hundred else 10
    folder = Path(root) / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True, exist_ok=True)
    key = "fine_labels" if hundred else "labels"
    out = {"train_x": [], "train_y": []}

    def batch(n: int, name: str, offset: int) -> dict:
        y = [int(v) for v in (np.arange(n) + offset) % C]
        x = rng.randint(0, 256, size=(n, 3072), dtype=np.uint8)
        d = {"batch_label": name, key: y, "data": x, "filenames": [f"{name}_{i}.png" for i in range(n)]}
        if hundred:
            d["coarse_labels"] = [v // 5 for v in y]
        return d

    names = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    n_train = per_batch * (5 if hundred else 1)
    for j, nm in enumerate(names):
        d = batch(n_train, nm, 3 * j)
        out["train_x"].append(d["data"])
        out["train_y"] += d[key]
        with open(folder / nm, "wb") as fh:
            pickle.dump(d, fh)
    d = batch(n_test, "test", 0)
    out["test_x"], out["test_y"] = d["data"], d[key]
    with open(folder / ("test" if hundred else "test_batch"), "wb") as fh:
        pickle.dump(d, fh)
    if hundred:
        meta = {"fine_label_names": [f"f{i}" for i in range(C)], "coarse_label_names": ["c"] * 20}
    else:
        meta = {"label_names": [f"class{i}" for i in range(C)], "num_cases_per_batch": per_batch}
    with open(folder / ("meta" if hundred else "batches.meta"), "wb") as fh:
        pickle.dump(meta, fh)
    out["train_x"] = np.concatenate(out["train_x"]).reshape(-1, 3, 32, 32)
    out["train_y"] = np.array(out["train_y"])
    out["test_x"] = out["test_x"].reshape(-1, 3, 32, 32)
    out["test_y"] = np.array(out["test_y"])
    return out


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 60, n_test: int = 20,
                seed: int = 1) -> dict:
    """The raw idx files torchvision reads from ``<root>/<folder>/raw/``."""
    rng = np.random.RandomState(seed)
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n, part in (("train", n_train, "train"), ("t10k", n_test, "test")):
        x = rng.randint(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + x.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + y.tobytes())
        out[f"{part}_x"], out[f"{part}_y"] = x[:, None], y.astype(np.int64)
    return out


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("data")
    files = {"cifar10": write_cifar(root), "cifar100": write_cifar(root, hundred=True, n_test=100),
             "mnist": write_mnist(root), "fashion-mnist": write_mnist(root, "FashionMNIST", seed=2)}
    return root, files


def data_cfg(root: Path, name: str = "cifar10", *sets: str) -> config.DataConfig:
    cfg = config.apply_overrides(config.Config(), [f"data.name={name}", f"data.root={root}",
                                                   "data.verify=false", *sets])
    return cfg.data


def image_config(root: Path, *sets: str) -> config.Config:
    base = ["data.name=cifar10", f"data.root={root}", "data.verify=false", "data.batch_size=8",
            "model.kind=myrtle5", "model.width=4", "model.init=he", "optim.name=sgd",
            "optim.lr=0.01", "optim.momentum=0.9", "run.dtype=float32", "run.device=cpu",
            "schedule.amplitude=10", "schedule.period=9", "run.flush_seconds=0.05"]
    return config.apply_overrides(config.Config(name="tiny-cifar"), [*base, *sets])


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name,shape,classes", [("cifar10", (3, 32, 32), 10),
                                                ("cifar100", (3, 32, 32), 100),
                                                ("mnist", (1, 28, 28), 10),
                                                ("fashion-mnist", (1, 28, 28), 10)])
def test_load_through_torchvision_resident_uint8(image_root, name, shape, classes):
    root, files = image_root
    ds = datamod.load(data_cfg(root, name), CPU, torch.float32)
    ref = files[name]
    assert ds.classes == classes and ds.in_features == shape
    for split, part in ((ds.train, "train"), (ds.val, "test")):
        assert split.x.dtype == torch.uint8 and split.x.device == CPU
        assert tuple(split.x.shape) == (len(ref[f"{part}_y"]), *shape)
        assert np.array_equal(split.x.numpy(), ref[f"{part}_x"])  # pixels, channel-major
        assert np.array_equal(split.y.numpy(), ref[f"{part}_y"])
        assert split.y.dtype == torch.int64
    # normalisation: the exact per-channel mean/std of the training images
    x = ref["train_x"].astype(np.float64) / 255.0
    np.testing.assert_allclose(ds.image.mean, x.mean(axis=(0, 2, 3)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ds.image.std, x.std(axis=(0, 2, 3)), rtol=0, atol=1e-12)
    inp = ds.inputs(ds.val.x, torch.float64).numpy()
    want = (ref["test_x"] / 255.0 - np.array(ds.image.mean)[:, None, None]) / np.array(ds.image.std)[:, None, None]
    np.testing.assert_allclose(inp, want, rtol=0, atol=1e-12)
    # augmentation by default: crop + flip for CIFAR, none for MNIST
    assert (ds.image.crop, ds.image.flip) == ((True, True) if name.startswith("cifar") else (False, False))


def test_subsets_per_class_are_deterministic_by_seed(image_root):
    root, files = image_root
    ref = files["cifar10"]

    def rows(ds):  # each loaded image's index in the training files
        flat = ref["train_x"].reshape(len(ref["train_y"]), -1)
        lookup = {flat[i].tobytes(): i for i in range(len(flat))}
        return [lookup[r.tobytes()] for r in ds.train.x.reshape(ds.train.n, -1).numpy()]

    a = datamod.load(data_cfg(root, "cifar10", "data.subset_per_class=3", "data.val_subset_per_class=2"),
                     CPU, torch.float32)
    b = datamod.load(data_cfg(root, "cifar10", "data.subset_per_class=3", "data.val_subset_per_class=2"),
                     CPU, torch.float32)
    c = datamod.load(data_cfg(root, "cifar10", "data.subset_per_class=3", "data.seed=5"), CPU, torch.float32)
    assert np.bincount(a.train.y.numpy(), minlength=10).tolist() == [3] * 10
    assert np.bincount(a.val.y.numpy(), minlength=10).tolist() == [2] * 10
    assert a.train.n == 30 and c.val.n == 30
    ia, ib, ic = rows(a), rows(b), rows(c)
    assert ia == ib and ia != ic  # same seed, same images; another seed, others
    assert np.array_equal(ref["train_y"][ia], a.train.y.numpy())  # labels stay with their images
    with pytest.raises(SetupError, match="data.subset_per_class = 11: cifar10 training class 0 has only 10"):
        datamod.load(data_cfg(root, "cifar10", "data.subset_per_class=11"), CPU, torch.float32)


def test_holdout_split_is_disjoint_and_sized(image_root):
    root, _ = image_root
    ds = datamod.load(data_cfg(root, "cifar10", "data.val_split=holdout", "data.val_fraction=0.2",
                               "data.subset_per_class=5"), CPU, torch.float32)
    assert np.bincount(ds.val.y.numpy(), minlength=10).tolist() == [2] * 10
    assert np.bincount(ds.train.y.numpy(), minlength=10).tolist() == [5] * 10
    tr = {r.tobytes() for r in ds.train.x.reshape(ds.train.n, -1).numpy()}
    assert not tr & {r.tobytes() for r in ds.val.x.reshape(ds.val.n, -1).numpy()}
    none = datamod.load(data_cfg(root, "mnist", "data.val_split=none"), CPU, torch.float32)
    assert none.val is None and none.train.n == 60


def test_cifar_md5_is_checked_unless_verify_is_off(image_root):
    root, _ = image_root
    with pytest.raises(SetupError) as err:
        datamod.load(data_cfg(root, "cifar10", "data.verify=true"), CPU, torch.float32)
    line = str(err.value)
    assert "\n" not in line and "CIFAR-10: cannot read" in line and "data.verify = false" in line


def test_missing_data_fails_at_start_with_one_line(tmp_path):
    empty = tmp_path / "nothing here"
    r = runner.invoke(app, ["run", "cifar10-myrtle5", "--runs-dir", str(tmp_path / "r"), "--offline",
                            "--set", f"data.root={empty}", "--steps", "2"], catch_exceptions=False)
    assert r.exit_code != 0
    assert r.stderr.splitlines() == [
        f"error: CIFAR-10 not found: expected {empty}/cifar-10-batches-py/data_batch_1 "
        f"(offline: data.download = false); download with: python -m dlf_tui.engine.images download "
        f"cifar10 --root {empty} (or run without --offline)"]
    [run] = runs.list_runs(tmp_path / "r")
    assert run.rows() == 0 and run.state()["state"] == "crashed"


def test_a_first_run_downloads_and_says_in_one_line_when_there_is_no_network(tmp_path, monkeypatch):
    # every HTTP(S) request goes to a proxy that refuses at once: no network, no waiting
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    empty = tmp_path / "nothing here"
    r = runner.invoke(app, ["run", "cifar10-myrtle5", "--runs-dir", str(tmp_path / "r"),
                            "--set", f"data.root={empty}", "--steps", "2"], catch_exceptions=False)
    assert r.exit_code == 2, r.output
    [line] = r.stderr.splitlines()
    assert line.startswith(f"error: CIFAR-10: download into {empty} failed (") and "copy" in line


# ---------------------------------------------------------------------------
# On-device augmentation
# ---------------------------------------------------------------------------


def _recorded_inputs(cfg: config.Config, ds: datamod.Dataset, n: int) -> list[torch.Tensor]:
    model = models.build(cfg.model, ds.in_features, ds.classes, cfg.run.seed, CPU, torch.float32)
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    st = steppers.make(cfg, model, ds, 16)
    assert isinstance(st, AutogradStep)
    st.begin_chunk(torch.ones(16, ds.classes))
    for i in range(n):
        st.step(i)
    return seen


def test_augmentation_is_seeded_batched_and_changes_images(image_root):
    root, _ = image_root
    cfg = image_config(root, "data.batch_size=0")  # full batch: inputs align with train.x
    ds = datamod.load(cfg.data, CPU, torch.float32)
    a = _recorded_inputs(cfg, ds, 3)
    b = _recorded_inputs(cfg, ds, 3)
    for u, v in zip(a, b):
        assert torch.equal(u, v)  # same seed, same crops and flips
    assert not torch.equal(a[0], a[1])  # a new draw every step
    plain = ds.inputs(ds.train.x, torch.float32)
    assert not torch.equal(a[0], plain)
    other = _recorded_inputs(config.apply_overrides(cfg, ["run.seed=7"]), ds, 1)
    assert not torch.equal(other[0], a[0])
    # every augmented image is a shifted (≤ 4 px, zero-padded) and maybe mirrored copy
    # of its own image
    padded = torch.nn.functional.pad(ds.train.x, (4, 4, 4, 4)).float()
    scale, shift = ds.image.scale_shift(CPU, torch.float32)
    pixels = torch.round((a[0] - shift) / scale)
    found = torch.full((ds.train.n,), -1)  # which (dy, dx, flip) reproduces each image
    for dy in range(9):
        for dx in range(9):
            for f in (0, 1):
                cand = padded[:, :, dy:dy + 32, dx:dx + 32]
                cand = cand.flip(3) if f else cand
                hit = (cand == pixels).flatten(1).all(1) & (found < 0)
                found[hit] = (dy * 9 + dx) * 2 + f
    assert (found >= 0).all(), "an augmented image is not a crop/flip of its own image"
    flips, shifts = int((found % 2).sum()), int((found // 2 != 4 * 9 + 4).sum())
    assert 0 < flips < ds.train.n and shifts > ds.train.n // 2
    # augment = none: the inputs are exactly the normalised images
    cfg_none = config.apply_overrides(cfg, ["data.augment=none"])
    none = _recorded_inputs(cfg_none, datamod.load(cfg_none.data, CPU, torch.float32), 2)
    assert torch.equal(none[0], plain) and torch.equal(none[1], plain)


def test_eval_stats_batches_through_the_validation_set(image_root):
    root, _ = image_root
    cfg = image_config(root)
    ds = datamod.load(cfg.data, CPU, torch.float32)
    model = models.build(cfg.model, ds.in_features, ds.classes, 0, CPU, torch.float32)
    whole = steppers.make(cfg, model, ds, 16).eval_stats(ds.val)
    cfg7 = config.apply_overrides(cfg, ["data.eval_batch_size=7"])  # 30 images: 4 full batches + 2
    calls = []
    h = model.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    parts = steppers.make(cfg7, model, ds, 16).eval_stats(ds.val)
    h.remove()
    assert calls == [7, 7, 7, 7, 2]
    assert parts.shape == (3, 10) and parts.dtype == torch.float32
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-5)
    assert parts[2].tolist() == [3.0] * 10  # counts per class


def test_bf16_autocast_and_channels_last_step(image_root):
    root, _ = image_root
    cfg = image_config(root, "run.amp=bf16", "run.channels_last=true")
    ds = datamod.load(cfg.data, CPU, torch.float32)
    model = models.build(cfg.model, ds.in_features, ds.classes, 0, CPU, torch.float32)
    seen = []
    model.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    st = steppers.make(cfg, model, ds, 16)
    assert model.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    st.begin_chunk(torch.ones(16, 10))
    for i in range(3):
        st.step(i)
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
    assert st.buf.dtype == torch.float32 and torch.isfinite(st.buf[:3]).all()
    assert st.buf[:3, 20:30].sum(1).tolist() == [8.0] * 3  # counts: one batch per row
    assert all(p.dtype == torch.float32 for p in model.parameters())


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind,stages", [("myrtle5", [2, 1, 1]), ("myrtle7", [2, 2, 2]),
                                         ("myrtle10", [3, 3, 3])])
def test_myrtle_layers_shapes_and_parameter_counts(kind, stages):
    w = 8
    cfg = config.ModelConfig(kind=kind, width=w, init="he")
    m = models.build(cfg, (3, 32, 32), 10, 0, CPU, torch.float32)
    # conv 3×3 + ReLU layers per stage, each stage closed by a 2×2 average pool
    per_stage, n, pools = [], 0, 0
    for layer in m.features:
        if isinstance(layer, torch.nn.Conv2d):
            assert layer.kernel_size == (3, 3) and layer.padding == (1, 1) and layer.out_channels == w
            n += 1
        elif isinstance(layer, torch.nn.AvgPool2d):
            assert layer.kernel_size == 2
            per_stage.append(n)
            n = 0
    assert per_stage == stages
    convs = sum(stages)
    assert int(kind[6:]) == convs + 1  # Myrtle-D: D - 1 convs and the head
    params = sum(p.numel() for p in m.parameters())
    assert params == (27 * w + w) + (convs - 1) * (9 * w * w + w) + (w * 10 + 10)
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    m1 = models.build(cfg, (1, 28, 28), 10, 0, CPU, torch.float32)
    assert m1(torch.zeros(2, 1, 28, 28)).shape == (2, 10)  # MNIST-shaped: 28→14→7→3→1
    # he init: conv weights N(0, 2/fan_in), zero biases, same draw for the same seed
    again = models.build(cfg, (3, 32, 32), 10, 0, CPU, torch.float32)
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), again.parameters()))
    big = models.build(config.ModelConfig(kind=kind, width=64, init="he"), (3, 32, 32), 10, 0, CPU,
                       torch.float32)
    wconv = big.features[2].weight
    assert abs(wconv.std().item() / math.sqrt(2 / (64 * 9)) - 1) < 0.02
    assert all((c.bias == 0).all() for c in big.features if isinstance(c, torch.nn.Conv2d))


def test_resnet18_adapted_to_32x32():
    import torchvision

    m = models.build(config.ModelConfig(kind="resnet18", init="torch"), (3, 32, 32), 10, 0, CPU,
                     torch.float32)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert isinstance(m.maxpool, torch.nn.Identity)
    stock = torchvision.models.resnet18(num_classes=10)
    n = sum(p.numel() for p in m.parameters())
    assert n == sum(p.numel() for p in stock.parameters()) - 64 * 3 * (49 - 9)
    m.eval()
    with torch.no_grad():
        assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    mnist = models.build(config.ModelConfig(kind="resnet18", init="torch"), (1, 28, 28), 10, 0, CPU,
                         torch.float32)
    assert mnist.conv1.in_channels == 1


def test_mlp_flattens_images_and_conv_needs_images():
    m = models.build(config.ModelConfig(kind="mlp", hidden=(16,), init="he"), (1, 28, 28), 10, 0, CPU,
                     torch.float32)
    assert m.layers[0].in_features == 784
    assert m(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(SetupError, match="needs image data"):
        models.build(config.ModelConfig(kind="myrtle5"), 2, 3, 0, CPU, torch.float32)


# ---------------------------------------------------------------------------
# The engine end to end
# ---------------------------------------------------------------------------


def _finish(run: runs.Run, resume: bool = False) -> None:
    proc = launch.spawn_run_engine(run, resume=resume)
    assert proc.wait(120) == 0, launch.engine_failure(run)


@pytest.fixture(scope="module")
def finished_cifar_run(image_root, tmp_path_factory):
    root, _ = image_root
    cfg = image_config(root, "run.steps=240", "data.eval_every=40", "data.eval_batch_size=7")
    run = runs.create_run(cfg, tmp_path_factory.mktemp("ref"))
    _finish(run)
    return cfg, run


def test_engine_trains_myrtle5_on_cifar_with_per_class_validation(finished_cifar_run):
    cfg, run = finished_cifar_run
    assert run.state()["state"] == "finished" and run.rows() == 240
    m = run.read()
    cols = run.columns()
    assert np.isfinite(m[:, cols.index("loss_dynamical")]).all()
    assert np.isfinite(m[:, cols.index("grad_norm")]).all()
    assert (m[:, cols.index("loss_ce")] > 0).all()
    acc = m[:, [cols.index(f"accuracy_class_{i}") for i in range(10)]]
    assert np.nanmin(acc) >= 0 and np.nanmax(acc) <= 1
    ev = run.read("eval")
    ecols = run.columns("eval")
    assert ev[:, 0].tolist() == [1, 40, 80, 120, 160, 200, 240]
    per = ev[:, [ecols.index(f"val_accuracy_class_{i}") for i in range(10)]]
    assert per.shape == (7, 10) and np.isfinite(per).all()  # 3 test images of each class
    assert np.isfinite(ev[:, ecols.index("val_loss_ce")]).all()
    # 3 test images per class: the overall accuracy is the mean of the per-class ones
    np.testing.assert_allclose(ev[:, ecols.index("val_accuracy")], per.mean(1), atol=1e-12)
    # the Γ columns follow the schedule: one class emphasised at a time
    gam = m[:, [cols.index(f"gamma_{i}") for i in range(10)]]
    np.testing.assert_allclose(gam.sum(1), 10.0, atol=1e-9)
    # (a period is 10 updates; Γ is flat at its first and last update)
    assert gam[1:9].argmax(1).tolist() == [0] * 8 and gam[11:19].argmax(1).tolist() == [1] * 8


def test_stop_and_resume_of_an_image_run_gives_the_same_metrics(finished_cifar_run, start_run):
    cfg, ref = finished_cifar_run
    live = start_run(cfg)
    live.wait_rows(60)
    r = runner.invoke(app, ["ctl", str(live.path), "stop"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert live.wait_exit() == 0
    stopped = live.run.rows()
    assert 60 <= stopped < 240 and live.run.state()["state"] == "stopped"
    _finish(live.run, resume=True)
    assert live.run.state()["state"] == "finished"
    assert np.array_equal(live.run.read(), ref.read(), equal_nan=True)
    assert np.array_equal(live.run.read("eval"), ref.read("eval"), equal_nan=True)


# ---------------------------------------------------------------------------
# Presets and stepper choice
# ---------------------------------------------------------------------------


def test_image_presets_validate_and_the_static_twin_differs_only_in_amplitude():
    from dlf_tui.core import presets

    dyn = presets.find("cifar10-myrtle5")
    static = presets.find("cifar10-myrtle5-static")
    assert (dyn.data.name, dyn.model.kind, dyn.optim.name, dyn.optim.momentum) == ("cifar10", "myrtle5", "sgd", 0.9)
    assert 128 <= dyn.data.batch_size <= 512 and 10 <= dyn.schedule.amplitude <= 70
    assert 100 <= dyn.schedule.period < 1000 and dyn.run.dtype == "float32"
    assert static.schedule.amplitude == 1.0
    strip = lambda c: config.replace(c, name="", description="",  # noqa: E731
                                     schedule=config.replace(c.schedule, amplitude=1.0))
    assert strip(dyn) == strip(static)
    for name, data in (("mnist-mlp", "mnist"), ("fashion-mnist-mlp", "fashion-mnist")):
        cfg = presets.find(name)
        assert cfg.data.name == data and cfg.model.kind == "mlp" and cfg.description
    for cfg in (dyn, static):
        assert cfg.description and cfg.data.download  # the first run downloads


def test_full_batch_gd_on_images_uses_the_autograd_stepper(image_root):
    root, _ = image_root
    cfg = config.apply_overrides(config.Config(), [
        "data.name=mnist", f"data.root={root}", "model.hidden=[8]", "optim.lr=0.01",
        "run.dtype=float64"])
    ds = datamod.load(cfg.data, CPU, torch.float64)
    model = models.build(cfg.model, ds.in_features, ds.classes, 0, CPU, torch.float64)
    st = steppers.make(cfg, model, ds, 16)
    assert isinstance(st, AutogradStep)
    st.begin_chunk(torch.ones(16, 10, dtype=torch.float64))
    st.step(0)
    assert st.buf.dtype == torch.float64 and st.buf[0, 20:30].sum().item() == 60  # the whole set
    assert torch.isfinite(st.buf[0]).all()

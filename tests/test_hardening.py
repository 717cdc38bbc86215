"""Hostile input to the attacks and the ``gleak`` command: nothing lost, nothing misread, no traceback.

One test (or parametrised case) per finding of the hardening review: output paths
checked before any work, Ctrl-C keeps the best estimate, sizes bounded before
anything is allocated, the user's model never changed, a raising callback keeps
the best estimate, and the smaller points (flags the text attack ignored,
gradient dtypes, step sizes, fractional shapes, seeds).
"""

from __future__ import annotations

from gleak_edu.attacks import AttackOptions

import json
import math
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from gleak_edu import attacks, cli, data, fl, models, text
from gleak_edu.attacks._common import MAX_RESTARTS, Recorder
from gleak_edu.defenses import add_precode

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SENTENCE = "beautiful is better than ugly"


@pytest.fixture(scope="module")
def lenet_case():
    """LeNet-Zhu (sigmoid, 100 classes, seed 1) and the gradient of photo 0."""
    model = models.build_model("lenet-zhu", (3, 32, 32), 100, "sigmoid", seed=1)
    x, y = data.photos().batch(0)
    return model, x, y, fl.client_gradient(model, x, y)


def _run(argv, capsys):
    """cli.main in-process: (status, stdout, stderr)."""
    status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _one_clean_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def no_work(monkeypatch):
    """Make every expensive entry point fail loudly: a test using this proves the CLI refused first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the bad input was refused")

    from gleak_edu import arena, defenses, sweeps

    monkeypatch.setattr(defenses, "train_dp", forbidden)
    monkeypatch.setattr(sweeps, "ppp_sweep", forbidden)
    monkeypatch.setattr(arena, "arena", forbidden)
    for name in ("dlg", "idlg", "grnn", "inverting_gradients", "precode_bypass", "text_recovery"):
        monkeypatch.setattr(attacks, name, forbidden)
    monkeypatch.setattr(data, "parse_sample", forbidden)
    monkeypatch.setattr(data, "mnist_subset", forbidden)


# ---------------------------------------------------------------- output paths, checked first


def _bad_paths(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "a_folder"
    folder.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return {"directory": folder, "under_a_file": a_file / "out.json", "deep_under_a_file": a_file / "x" / "y.json"}


@pytest.mark.parametrize("case", ["directory", "under_a_file", "deep_under_a_file"])
@pytest.mark.parametrize(
    "command",
    [
        ["train", "--dp", "fixed"],
        ["sweep", "ppp"],
        ["arena"],
        ["attack", "dlg", "--sample", "photos:0"],
        ["attack", "text", "--sentence", SENTENCE],
    ],
)
def test_a_bad_json_path_exits_2_before_any_computation(command, case, tmp_path, capsys, no_work):
    bad = _bad_paths(tmp_path)[case]
    start = time.perf_counter()
    status, _, err = _run([*command, "--json", bad], capsys)
    elapsed = time.perf_counter() - start
    assert status == 2
    line = _one_clean_line(err)
    assert "--json" in line
    assert elapsed < 5.0  # generous: the refusal comes before any import of torch-heavy work
    assert not (tmp_path / "a_folder" / "out.json").exists()


def test_an_empty_output_path_is_refused(capsys, no_work):
    for flag in ("--json", "--png"):
        status, _, err = _run(["attack", "dlg", "--sample", "photos:0", flag, ""], capsys)
        assert status == 2 and "empty" in _one_clean_line(err)


def test_png_path_is_a_directory_or_not_png(tmp_path, capsys, no_work):
    status, _, err = _run(["attack", "dlg", "--sample", "photos:0", "--png", tmp_path], capsys)
    assert status == 2 and "directory" in _one_clean_line(err)
    assert not (tmp_path.parent / f"{tmp_path.name}.png").exists()  # no DIR.png beside it
    status, _, err = _run(["attack", "dlg", "--sample", "photos:0", "--png", tmp_path / "x.jpg"], capsys)
    assert status == 2 and ".png" in _one_clean_line(err)


def test_json_and_png_may_not_be_the_same_file(tmp_path, capsys, no_work):
    same = tmp_path / "out.png"
    status, _, err = _run(["attack", "dlg", "--sample", "photos:0", "--json", same, "--png", same], capsys)
    assert status == 2 and "same file" in _one_clean_line(err)


@pytest.mark.slow
def test_png_means_exactly_the_path_given(tmp_path, capsys):
    target = tmp_path / "figure_without_suffix"
    status, _, err = _run(
        ["attack", "analytic", "--sample", "photos:0", "--classes", "13", "--png", target], capsys
    )
    assert status == 0, err
    assert target.read_bytes()[:8] == PNG_MAGIC
    assert not (tmp_path / "figure_without_suffix.png").exists()


def test_a_failed_check_leaves_no_file_behind(tmp_path, capsys, no_work):
    out = tmp_path / "new" / "out.json"
    status, _, _ = _run(["attack", "dlg", "--sample", "photos:0", "--json", out, "--restarts", "0"], capsys)
    assert status == 2
    assert not out.exists()


# ---------------------------------------------------------------- Ctrl-C


def _interrupt_at(monkeypatch, iteration: int) -> None:
    """Simulate Ctrl-C arriving inside the attack loop at ``iteration``."""
    original = Recorder.record

    def record(self, it, *args, **kwargs):
        if it == iteration:
            raise KeyboardInterrupt
        return original(self, it, *args, **kwargs)

    monkeypatch.setattr(Recorder, "record", record)


@pytest.mark.parametrize("attack", ["dlg", "ig", "grnn"])
def test_ctrl_c_writes_the_best_estimate_and_exits_130(attack, tmp_path, capsys, monkeypatch):
    _interrupt_at(monkeypatch, 6)
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    status, stdout, err = _run(
        ["attack", attack, "--sample", "photos:0", "--iterations", "50", "--json", out_json, "--png", out_png], capsys
    )
    assert status == 130
    assert "interrupted" in _one_clean_line(err)
    res = json.loads(out_json.read_text())
    assert res["interrupted"] is True
    assert 1 <= res["iterations"] <= 6 and "interrupted" in res["message"]
    assert math.isfinite(res["psnr"]) and len(res["history"]) >= 5  # what it had is kept
    assert out_png.read_bytes()[:8] == PNG_MAGIC


def test_ctrl_c_in_training_exits_130_with_one_line(tmp_path, capsys, monkeypatch):
    from gleak_edu import defenses

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(defenses, "train_dp", interrupted)
    status, _, err = _run(["train", "--dp", "fixed", "--json", tmp_path / "t.json"], capsys)
    assert status == 130 and "interrupted" in _one_clean_line(err)


def test_ctrl_c_in_the_api_raises_attack_interrupted_with_the_result(lenet_case):
    model, x, y, shared = lenet_case

    def press_ctrl_c(state):
        if state.iteration >= 4:
            raise KeyboardInterrupt

    with pytest.raises(attacks.AttackInterrupted) as info:
        attacks.dlg(model, shared, input_shape=tuple(x.shape), num_classes=100, iterations=50, truth=x,
                    callback=press_ctrl_c, options=AttackOptions(callback_every=1))
    result = info.value.result
    assert isinstance(info.value, KeyboardInterrupt)  # code that knows nothing of it still stops
    assert result.interrupted and result.iterations == 4
    assert torch.isfinite(result.reconstruction).all() and result.metrics["psnr_mean"] > 0


# ---------------------------------------------------------------- sizes, bounded before allocation


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["attack", "dlg", "--sample", "photos:0", "--restarts", "1000000000"], "--restarts"),
        (["attack", "dlg", "--sample", "photos:0", "--classes", "1000000000000"], "--classes"),
        (["attack", "ig", "--sample", "photos:0", "--precode", "--bottleneck", "1000000000000"], "--bottleneck"),
        (["attack", "dlg", "--image", "x.png", "--size", "100000"], "--size"),
        (["attack", "dlg", "--sample", "photos:0", "--iterations", "1000000000"], "--iterations"),
        (["attack", "dlg", "--sample", "photos:0", "--batch", "100000"], "--batch"),
        (["attack", "dlg", "--sample", "photos:0", "--retries", "1000000000"], "--retries"),
        (["train", "--dp", "fixed", "--epochs", "1000000000", "--json", "t.json"], "--epochs"),
        (["train", "--dp", "fixed", "--images", "1000000", "--json", "t.json"], "--images"),
        (["arena", "--workers", "100000", "--json", "a.json"], "--workers"),
        (["arena", "--seeds", ",".join(str(i) for i in range(1000)), "--json", "a.json"], "--seeds"),
    ],
)
def test_sizes_are_bounded_before_anything_is_allocated(argv, flag, capsys, no_work, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    status, _, err = _run(argv, capsys)
    assert status == 2 and flag in _one_clean_line(err)
    assert time.perf_counter() - start < 5.0


def test_size_1_is_refused_not_a_division_by_zero(capsys, tmp_path):
    from PIL import Image

    path = tmp_path / "red.png"
    Image.new("RGB", (40, 40), (255, 0, 0)).save(path)
    status, _, err = _run(["attack", "analytic", "--image", path, "--size", "1"], capsys)
    assert status == 2
    assert "ZeroDivision" not in _one_clean_line(err)


def test_the_api_bounds_sizes_too(lenet_case):
    model, x, _, shared = lenet_case
    with pytest.raises(ValueError, match="restarts"):
        attacks.dlg(model, shared, input_shape=tuple(x.shape), num_classes=100, options=AttackOptions(restarts=MAX_RESTARTS + 1))
    with pytest.raises(ValueError, match="num_classes"):
        models.build_model("mlp", (3, 32, 32), 10**12)
    with pytest.raises(ValueError, match="bottleneck"):
        add_precode(models.build_model("mlp", (3, 32, 32), 10), 10**12)
    with pytest.raises(ValueError, match="iterations"):
        attacks.inverting_gradients(model, shared, input_shape=tuple(x.shape), num_classes=100, iterations=10**12)


# ---------------------------------------------------------------- the user's model is never changed


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Sigmoid(), nn.Flatten(), nn.Linear(4 * 32 * 32, 10)
    )
    return model.train()


def _snapshot(model: nn.Module):
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
    )


def _same(a, b) -> bool:
    state_a, modes_a, flags_a, grads_a = a
    state_b, modes_b, flags_b, grads_b = b
    return (
        state_a.keys() == state_b.keys()
        and all(torch.equal(state_a[k], state_b[k]) for k in state_a)
        and modes_a == modes_b and flags_a == flags_b
        and all((g is None and h is None) or (g is not None and h is not None and torch.equal(g, h)) for g, h in zip(grads_a, grads_b))
    )


@pytest.mark.parametrize("attack", ["dlg", "idlg", "ig", "grnn"])
def test_a_batchnorm_model_in_train_mode_comes_back_unchanged(attack):
    model = _bn_model()
    x, _ = data.photos().batch([0, 1])
    batch = 1 if attack == "idlg" else 2
    x, y = x[:batch], torch.tensor([1, 2])[:batch]
    shared = fl.client_gradient(model, x, y)
    before = _snapshot(model)
    assert int(model[1].num_batches_tracked) == 1
    common = dict(input_shape=tuple(x.shape), num_classes=10, iterations=6)
    fn = {"dlg": attacks.dlg, "idlg": attacks.idlg, "ig": attacks.inverting_gradients, "grnn": attacks.grnn}[attack]
    if attack == "ig":
        common["labels"] = y
    fn(model, shared, **common)
    assert _same(before, _snapshot(model))  # running statistics, num_batches_tracked, mode, grads
    if attack != "grnn":
        with pytest.raises(ValueError, match="BatchNorm"):
            fn(model, shared, options=AttackOptions(restarts=2), **common)
        assert _same(before, _snapshot(model))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_the_bypass_and_ig_keep_a_precode_models_mode_and_state(mode):
    model = models.build_model("mlp", (3, 32, 32), 10, "sigmoid", seed=0, init="pytorch")
    add_precode(model, 32, seed=0)
    model.train(mode == "train")
    x, _ = data.photos().batch(1)
    shared = fl.client_gradient(model, x, torch.tensor([3]))
    before = _snapshot(model)
    attacks.precode_bypass(model, shared, input_shape=tuple(x.shape), num_classes=10, iterations=5)
    attacks.inverting_gradients(model, shared, input_shape=tuple(x.shape), num_classes=10, iterations=5)
    assert _same(before, _snapshot(model))


def test_text_recovery_leaves_the_models_gradients_alone():
    vocab = text.zen_vocabulary()
    torch.manual_seed(0)
    model = models.TinyTransformer(len(vocab), 19)
    tokens = vocab.encode(SENTENCE)
    shared = fl.client_text_gradient(model, tokens, torch.tensor([0]))
    before = _snapshot(model)
    attacks.text_recovery(model, shared, vocab, iterations=5)
    assert _same(before, _snapshot(model))


def test_an_exception_inside_the_attack_still_restores_the_model(monkeypatch):
    model = _bn_model()
    x, _ = data.photos().batch(1)
    shared = fl.client_gradient(model, x, torch.tensor([1]))
    before = _snapshot(model)

    def crash(state):
        raise KeyboardInterrupt

    with pytest.raises(attacks.AttackInterrupted):
        attacks.dlg(model, shared, input_shape=tuple(x.shape), num_classes=10, iterations=20, callback=crash, options=AttackOptions(callback_every=2))
    assert _same(before, _snapshot(model))


# ---------------------------------------------------------------- callbacks


def _raising_at(iteration: int | None):
    """A callback that raises at ``iteration`` (None: on the final, done=True call)."""

    def callback(state):
        step = getattr(state, "iteration", None)
        if (iteration is None and state.done) or (iteration is not None and step >= iteration):
            raise ZeroDivisionError("a bug in the live view")

    return callback


@pytest.mark.parametrize("when", [4, None])
@pytest.mark.parametrize("attack", ["dlg", "ig", "grnn"])
def test_a_raising_callback_leaves_the_best_estimate_reachable(attack, when, lenet_case):
    model, x, y, shared = lenet_case
    fn = {"dlg": attacks.dlg, "ig": attacks.inverting_gradients, "grnn": attacks.grnn}[attack]
    kwargs = dict(input_shape=tuple(x.shape), num_classes=100, iterations=12, truth=(x, y),
                  callback=_raising_at(when), options=AttackOptions(callback_every=2))
    with pytest.raises(attacks.CallbackError, match="a bug in the live view") as info:
        fn(model, shared, **kwargs)
    result = info.value.result
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert result.error.startswith("ZeroDivisionError")
    assert result.reconstruction.shape == x.shape and torch.isfinite(result.reconstruction).all()
    assert math.isfinite(result.loss) and result.history
    assert result.iterations == (4 if when == 4 else 12)
    assert "psnr_mean" in result.metrics


def test_a_raising_callback_in_text_recovery_keeps_the_sentence():
    vocab = text.zen_vocabulary()
    torch.manual_seed(0)
    model = models.TinyTransformer(len(vocab), 19)
    tokens = vocab.encode(SENTENCE)
    shared = fl.client_text_gradient(model, tokens, torch.tensor([0]))

    def callback(state):
        raise RuntimeError("view broke")

    with pytest.raises(attacks.CallbackError, match="view broke") as info:
        attacks.text_recovery(model, shared, vocab, iterations=40, truth=tokens, callback=callback, options=AttackOptions(callback_every=10))
    result = info.value.result
    assert result.iterations == 10 and len(result.words) == len(tokens) and result.error.startswith("RuntimeError")


# ---------------------------------------------------------------- the smaller points


@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--png", "x.png"], "--png"), (["--precode"], "--precode"),
        (["--defense", "ppp"], "--defense"), (["--batch", "2"], "--batch"), (["--sample", "photos:0"], "--sample"),
        (["--model", "mlp"], "--model"), (["--prune", "0.5"], "--prune"),
    ],
)
def test_the_text_attack_refuses_flags_it_would_ignore(extra, flag, capsys, no_work, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, err = _run(["attack", "text", "--sentence", SENTENCE, *extra], capsys)
    assert status == 2 and flag in _one_clean_line(err)


def test_the_text_attack_refuses_one_class(capsys, no_work):
    status, _, err = _run(["attack", "text", "--sentence", SENTENCE, "--classes", "1"], capsys)
    assert status == 2 and "--classes" in _one_clean_line(err)


def test_a_huge_seed_is_blamed_on_the_seed(capsys, no_work):
    status, _, err = _run(["attack", "dlg", "--sample", "photos:0", "--seed", str(2**64)], capsys)
    line = _one_clean_line(err)
    assert status == 2 and "--seed" in line and "--model" not in line


def test_an_image_path_that_is_a_directory_says_so(tmp_path, capsys):
    status, _, err = _run(["attack", "dlg", "--image", tmp_path], capsys)
    line = _one_clean_line(err)
    assert status == 2 and "directory" in line and "not found" not in line


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.float16, torch.complex64])
def test_gradients_of_the_wrong_dtype_are_refused(dtype, lenet_case):
    model, x, _, shared = lenet_case
    bad = {k: (v * 100).to(dtype) if dtype != torch.bool else v > 0 for k, v in shared.items()}
    with pytest.raises(fl.SharedGradientError, match="dtype"):
        attacks.dlg(model, bad, input_shape=tuple(x.shape), num_classes=100, iterations=2)


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), -0.1, 0.0])
@pytest.mark.parametrize("attack", ["dlg", "ig", "grnn"])
def test_bad_step_sizes_are_refused(attack, lr, lenet_case):
    model, x, _, shared = lenet_case
    fn = {"dlg": attacks.dlg, "ig": attacks.inverting_gradients, "grnn": attacks.grnn}[attack]
    with pytest.raises(ValueError, match="lr"):
        fn(model, shared, input_shape=tuple(x.shape), num_classes=100, iterations=2, lr=lr)


@pytest.mark.parametrize("shape", [(1, 3, 32.5, 32), (1.5, 3, 32, 32), (1, 3, 32), (True, 3, 32, 32), "1,3,32,32"])
def test_malformed_input_shapes_are_refused(shape, lenet_case):
    model, _, _, shared = lenet_case
    with pytest.raises(ValueError, match="input_shape"):
        attacks.dlg(model, shared, input_shape=shape, num_classes=100, iterations=2)


# ---------------------------------------------------------------- gleak cache


def test_gleak_cache_info_and_clear(tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "arena-0123456789abcdef01234567.json").write_text("{}")
    (cache / "ppp-0123456789abcdef01234567.json").write_text("{}")
    (cache / "notes.txt").write_text("not ours")
    status, out, _ = _run(["cache", "info", "--cache", cache, "--json", tmp_path / "info.json"], capsys)
    assert status == 0 and "2 cells" in out
    assert json.loads((tmp_path / "info.json").read_text())["files"] == 2
    status, out, _ = _run(["cache", "clear", "--cache", cache, "--experiment", "ppp"], capsys)
    assert status == 0 and "removed 1 files" in out
    assert (cache / "arena-0123456789abcdef01234567.json").exists() and not (cache / "ppp-0123456789abcdef01234567.json").exists()
    status, out, _ = _run(["cache", "clear", "--cache", cache], capsys)
    assert status == 0 and not (cache / "arena-0123456789abcdef01234567.json").exists()
    assert (cache / "notes.txt").exists()  # only the cache's own files are touched


def test_gleak_cache_refuses_a_file_and_misplaced_flags(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    status, _, err = _run(["cache", "clear", "--cache", a_file], capsys)
    assert status == 2 and "not a folder" in _one_clean_line(err)
    status, _, err = _run(["cache", "info", "--experiment", "ppp"], capsys)
    assert status == 2 and "--experiment" in _one_clean_line(err)
    status, _, err = _run(["sweep", "ppp", "--cache", "", "--json", tmp_path / "s.json"], capsys)
    assert status == 2 and "empty" in _one_clean_line(err)


def test_a_device_or_pipe_as_output_is_refused(tmp_path, capsys, no_work):
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    status, _, err = _run(["attack", "dlg", "--sample", "photos:0", "--json", fifo], capsys)
    assert status == 2 and "regular file" in _one_clean_line(err)
    assert fifo.is_fifo()  # not replaced by a regular file


def test_the_stop_exceptions_pickle_with_their_result(lenet_case):
    import pickle

    model, x, y, shared = lenet_case

    def crash(state):
        raise ValueError("boom")

    with pytest.raises(attacks.CallbackError) as info:
        attacks.dlg(model, shared, input_shape=tuple(x.shape), num_classes=100, iterations=4, callback=crash, options=AttackOptions(callback_every=1))
    for exc in (info.value, attacks.AttackInterrupted("stopped", info.value.result)):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
        assert torch.equal(back.result.reconstruction, exc.result.reconstruction)


def test_a_nan_truth_is_refused(lenet_case):
    model, x, _, shared = lenet_case
    with pytest.raises(ValueError, match="truth"):
        attacks.dlg(model, shared, input_shape=tuple(x.shape), num_classes=100, iterations=2, truth=torch.full_like(x, math.nan))


def test_a_history_written_step_by_step_costs_one_segment():
    from gleak_edu.defenses import epsilon

    start = time.perf_counter()
    step_by_step = epsilon([(1.0, 0.01, 1)] * 5000, 1e-5)
    assert time.perf_counter() - start < 10.0  # one accountant call, not 5,000 (about 20 ms each)
    assert step_by_step == pytest.approx(epsilon([(1.0, 0.01, 5000)], 1e-5), rel=1e-12)

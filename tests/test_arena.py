"""The defense arena: tidy rows, impossible cells, the cache, the science on a tiny grid, the CLI and the panel."""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest

from gleak_edu import arena, viz
from gleak_edu.arena import grid
from gleak_edu.attacks import ATTACKS as REGISTRY
from gleak_edu.attacks import IMAGE_ATTACKS

# Small enough for a unit test: 300 training images, one epoch, a 784-32-32-10 MLP, one attacked digit,
# few attack steps (Inverting Gradients needs about 60 to recover a digit from this untrained-ish model).
TINY = dict(noise_levels=(0.01, 3.0), seeds=(0,), images=1, epochs=1, train_images=300, hidden=(32, 32), bottleneck=16,
            dlg_iterations=2, ig_iterations=60, grnn_iterations=5)
N_CELLS = 3 + 4 * 2  # none, pruning, PRECODE once; noise, PPP, DP fixed, DP dynamic at each level


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("arena-cache")
    return root, arena.arena(cache_dir=root, **TINY)


def _numbers(rows):
    """The rows without their timings (the only fields that vary between identical runs)."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _copy(root, tmp_path):
    local = tmp_path / "cache"
    shutil.copytree(root, local)
    return local


def test_rows_are_tidy_and_complete(tiny):
    _, result = tiny
    assert result.computed == N_CELLS and result.cached == 0
    groups = {(d, lv) for d, lv, _ in arena.cells_of(result.settings)}
    assert {(r["defense"], r["level"], r["attack"]) for r in result.rows} == {(d, lv, a) for d, lv in groups for a in arena.ATTACKS}
    assert len(result.rows) == N_CELLS * len(arena.ATTACKS)
    for r in result.rows:
        assert 0 <= r["accuracy"] <= 1
        if r["impossible"] is None:
            assert 0 <= r["success_rate"] <= 1 and -1 <= r["ssim"] <= 1 and 0 < r["psnr"] <= 100
            assert (r["label_accuracy"] is None) == (r["attack"] == "analytic")
        # epsilon exactly for the DP defenses
        assert (r["epsilon"] is not None) == (r["defense"] in ("dp_fixed", "dp_dynamic"))
    for r in result.rows:
        if r["defense"] == "none":
            assert r["accuracy_cost"] == 0
    # dynamic DP is attacked at its last, least noisy step; its noise std depends on each example's bound
    dyn = result.row("dp_dynamic", "ig", 3.0)
    assert dyn["attacked_noise_multiplier"] == pytest.approx(3.0 * result.settings.dynamic_end)
    assert dyn["attacked_noise_std"] is None and dyn["knob"] == "noise_multiplier"
    fixed = result.row("dp_fixed", "ig", 3.0)
    assert fixed["attacked_noise_multiplier"] == 3.0 and fixed["attacked_noise_std"] == 3.0  # σ·C with C = 1
    noise = result.row("noise", "ig", 3.0)  # an absolute std: no noise multiplier at all
    assert noise["attacked_noise_multiplier"] is None and noise["attacked_noise_std"] == 3.0 and noise["knob"] == "noise_std"
    assert result.row("pruning", "ig")["knob"] == "prune_fraction" and result.row("none", "ig")["knob"] is None
    assert result.row("none", "ig")["attacked_noise_std"] == 0.0
    assert result.test_images.shape == (1, 1, 28, 28) and result.test_labels.shape == (1,)
    assert result.reconstructions("ppp", "bypass", 3.0).shape == (1, 1, 28, 28)
    values, reasons = result.matrix(0.01)
    assert values.shape == (len(arena.ATTACKS), len(arena.DEFENSES))
    text = result.table()
    assert "n/a" in text and "noise level 3" in text and "accuracy cost" in text
    assert "std 3" in text and "σ 3" in text and "noise std (absolute)" in text  # each column's unit
    out = result.to_json()
    json.dumps(out, allow_nan=False)  # JSON-ready
    assert out["cells_computed"] == N_CELLS and len(out["impossible"]) == 5
    assert out["defense_levels"]["noise"] == "noise_std" and out["defense_levels"]["dp_fixed"] == "noise_multiplier"
    assert "max_grad_norm" in out["settings"] and "clip" not in out["settings"]
    assert all("attacked_sigma" not in r and "sigma" not in r for r in out["rows"])


def test_the_attacks_are_the_registrys_image_attacks():
    assert arena.ATTACKS == IMAGE_ATTACKS
    assert arena.ATTACK_NAMES == {a: REGISTRY[a].name for a in IMAGE_ATTACKS}
    for a in arena.ATTACKS:  # what an attack needs decides where it is impossible
        for d in arena.DEFENSES:
            needs = REGISTRY[a].needs_bottleneck and not arena.DEFENSE_SPECS[d].bottleneck
            assert (arena.impossible(a, d) is not None) == needs
    settings = arena.ArenaSettings()
    # the arena's own budgets where it departs from the registry's defaults; analytic has none
    assert settings.iterations("dlg") == settings.dlg_iterations < REGISTRY["dlg"].default_iterations
    assert settings.iterations("bypass") == settings.ig_iterations < REGISTRY["bypass"].default_iterations
    assert settings.iterations("analytic") is None and REGISTRY["analytic"].default_iterations is None
    assert settings.restarts("dlg") == settings.dlg_restarts and settings.restarts("ig") == 1


def test_analytic_reads_no_label(tiny):
    _, result = tiny
    assert not REGISTRY["analytic"].recovers_labels
    for (defense, level, seed), cell in result.cells.items():
        assert cell["attacks"]["analytic"]["label_correct"] is None, defense
        assert all(isinstance(v, bool) for v in cell["attacks"]["dlg"]["label_correct"])
    assert all(r["label_accuracy"] is None for r in result.rows if r["attack"] == "analytic")


def test_each_defense_declares_the_unit_of_its_level():
    assert arena.DEFENSE_LEVEL == {
        "none": None, "noise": "noise_std", "pruning": "prune_fraction", "precode": None,
        "ppp": "noise_multiplier", "dp_fixed": "noise_multiplier", "dp_dynamic": "noise_multiplier"}
    assert set(arena.NOISY) == {"noise", "ppp", "dp_fixed", "dp_dynamic"}
    assert arena.defense_label("noise", 0.1) == "noise std=0.1"
    assert arena.defense_label("dp_fixed", 0.1) == "DP fixed σ=0.1 (×C)"
    assert arena.defense_label("ppp", 0.1) == "PPP σ=0.1 (×C)"
    assert arena.defense_label("dp_dynamic", 1.0).startswith("DP dynamic σ 1→0.32")
    assert arena.defense_label("pruning", 0.9) == "pruning 90%" and arena.defense_label("precode", 0.0) == "PRECODE"
    s2 = arena.ArenaSettings(max_grad_norm=2.0)
    assert arena.attacked_noise_std(s2, "noise", 0.5) == 0.5  # absolute
    assert arena.attacked_noise_std(s2, "dp_fixed", 0.5) == 1.0  # σ·C
    assert arena.attacked_noise_std(s2, "dp_dynamic", 0.5) is None and arena.attacked_noise_std(s2, "none", 0.0) == 0.0


def test_impossible_cells_have_a_reason_and_no_numbers(tiny):
    _, result = tiny
    for a in arena.ATTACKS:
        for d in arena.DEFENSES:
            reason = arena.impossible(a, d)
            assert (reason is not None) == (a == "bypass" and d not in ("precode", "ppp")), (a, d)
    values, reasons = result.matrix(3.0)
    for i, a in enumerate(arena.ATTACKS):
        for j, d in enumerate(arena.DEFENSES):
            row = result.row(d, a, 3.0)
            if reasons[i][j] is not None:
                assert "Inverting Gradients" in reasons[i][j] and math.isnan(values[i, j])
                assert all(row[k] is None for k in ("success_rate", "ssim", "psnr", "label_accuracy"))
                assert a not in result.cells[(d, result.knob(d, 3.0), 0)]["attacks"]  # never run
            else:
                assert not math.isnan(values[i, j])
    with pytest.raises(ValueError, match="bypass would match all layers"):
        result.reconstructions("none", "bypass")
    with pytest.raises(ValueError, match="attack must be one of"):
        arena.impossible("fgsm", "none")
    with pytest.raises(ValueError, match="defense must be one of"):
        arena.impossible("dlg", "dropout")


def test_science_on_a_tiny_grid(tiny):
    _, result = tiny
    analytic = result.row("none", "analytic")
    assert analytic["success_rate"] == 1.0 and analytic["psnr"] > 70  # exact up to rounding
    assert result.row("precode", "analytic")["success_rate"] == 1.0  # the first layer sits before the bottleneck
    assert result.row("none", "ig")["success_rate"] == 1.0
    assert result.row("precode", "bypass")["success_rate"] == 1.0
    for d in ("noise", "ppp", "dp_fixed", "dp_dynamic"):
        for a in ("ig", "analytic") + (("bypass",) if d == "ppp" else ()):
            assert result.row(d, a, 3.0)["success_rate"] == 0.0, (d, a)
    eps = result.row("dp_fixed", "ig", 3.0)["epsilon"]
    assert 0 < eps < result.row("dp_fixed", "ig", 0.01)["epsilon"]  # more noise, smaller epsilon


def test_no_evidence_marks_the_zeros_of_attacks_that_fail_without_a_defense(tiny):
    """An attack that rebuilds nothing without a defense (DLG with 2 iterations here) proves no defense: its 0s
    say "no evidence", in the rows, the table and the heatmap; an attack that works without a defense keeps its 0s."""
    import matplotlib.pyplot as plt

    _, result = tiny
    base = {r["attack"]: r["successes"] for r in result.rows if r["defense"] == "none"}
    assert base["dlg"] == 0 and base["ig"] == 1  # the tiny budgets: DLG fails everywhere, IG works without a defense
    for r in result.rows:
        assert r["no_evidence"] == (r["impossible"] is None and r["successes"] == 0 and base[r["attack"]] == 0), r
    assert all(r["no_evidence"] for r in result.rows if r["attack"] == "dlg")
    assert not any(r["no_evidence"] for r in result.rows if r["attack"] == "ig")
    assert result.row("dp_fixed", "ig", 3.0)["successes"] == 0  # a real zero: IG worked without a defense
    text = result.table(3.0)
    dlg_line = next(line for line in text.splitlines() if line.startswith("DLG"))
    assert dlg_line.count("no evidence 0/1") == len(arena.DEFENSES)
    ig_line = next(line for line in text.splitlines() if line.startswith("Inverting Gradients"))
    assert "no evidence" not in ig_line
    fig = viz.arena_heatmap(result, 3.0)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]
    assert sum(t == "no evidence" for t in texts) == sum(
        r["no_evidence"] for r in result.rows if r["level"] in (3.0, 0.0) or r["defense"] == "pruning")
    assert any("no evidence: the attack rebuilt no image" in t for t in texts)  # the footnote
    plt.close(fig)
    # the rule reads the cells: once DLG succeeds without a defense, its zeros elsewhere are evidence again
    cells = {k: json.loads(json.dumps(c)) for k, c in result.cells.items()}
    cells[("none", 0.0, 0)]["attacks"]["dlg"]["ssim"] = [0.9]
    rows = arena.results.rows_of(result.settings, cells)
    assert not any(r["no_evidence"] for r in rows if r["attack"] == "dlg")


def test_every_cell_measures_its_signal_to_noise_ratio(tiny):
    import statistics

    _, result = tiny
    s = result.settings
    for (defense, level, seed), cell in result.cells.items():
        assert len(cell["snr"]) == s.images
        for r in cell["snr"]:
            assert r["gradient_norm"] > 0 and -1 <= r["cosine"] <= 1
            if defense in arena.NOISY:
                assert r["noise_norm"] > 0 and r["snr"] == pytest.approx(r["signal_norm"] / r["noise_norm"])
            else:
                assert r["noise_norm"] == 0 and r["snr"] is None
            if defense in ("none", "precode"):
                assert r["cosine"] == pytest.approx(1.0) and r["signal_norm"] == pytest.approx(r["gradient_norm"])
            if defense == "pruning":
                assert r["signal_norm"] < r["gradient_norm"] and r["cosine"] > 0.5  # the largest 10 % keep the direction
            if defense == "noise":  # an absolute std on every entry: norm ~ std * sqrt(entries)
                assert r["noise_norm"] == pytest.approx(level * math.sqrt(r["entries"]), rel=0.05)
            if defense in ("ppp", "dp_fixed"):  # clipped to C = 1, then noise of std σ·C on the entries it perturbs
                assert r["signal_norm"] <= s.max_grad_norm * (1 + 1e-6)
                assert r["noise_norm"] == pytest.approx(level * s.max_grad_norm * math.sqrt(r["entries"]), rel=0.05)
    ppp = result.cells[("ppp", 3.0, 0)]["snr"][0]["entries"]
    assert ppp < result.cells[("precode", 0.0, 0)]["snr"][0]["entries"]  # PPP noises only the deterministic layers
    for r in result.rows:
        values = [c["snr"] for key, cell in result.cells.items() if key[:2] == (r["defense"], r["level"])
                  for c in cell["snr"] if c["snr"] is not None]
        assert r["snr"] == (statistics.median(values) if values else None)
    assert "signal/noise (median)" in result.table()


def test_gradient_snr_leaves_the_callers_random_stream_alone():
    import torch

    from gleak_edu import sweeps

    settings = arena.ArenaSettings(**TINY)
    model = sweeps.victim(settings, "ppp", seed=0).train()
    x, y = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.tensor([3])
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    own = arena.gradient_snr(settings, "ppp", 0.5, model, x, y, seed=9)
    assert torch.equal(torch.rand(3), before)
    with torch.random.fork_rng():
        torch.manual_seed(9)
        shared = arena.shared_gradient(settings, "ppp", 0.5, model, x, y, seed=9)
    given = arena.gradient_snr(settings, "ppp", 0.5, model, x, y, shared, seed=9)
    assert given == pytest.approx(own)  # the same sample and noise as the cell's own gradient
    with pytest.raises(ValueError, match="defense must be one of"):
        arena.gradient_snr(settings, "blur", 0.5, model, x, y, seed=0)


def test_each_defense_reaches_the_shared_gradient():
    import torch

    from gleak_edu import fl, sweeps
    from gleak_edu.defenses import deterministic_parameters

    settings = arena.ArenaSettings(**TINY)
    torch.manual_seed(0)
    x, y = torch.rand(1, 1, 28, 28), torch.tensor([3])

    def shared(defense, level, settings=settings):
        model = sweeps.victim(settings, defense, seed=0).train()
        with torch.random.fork_rng():
            torch.manual_seed(7)
            clean = fl.client_gradient(model, x, y)
        with torch.random.fork_rng():
            torch.manual_seed(7)
            out = arena.shared_gradient(settings, defense, level, model, x, y, noise_multiplier=level, seed=7)
        return clean, out, model

    clean, out, _ = shared("none", 0.0)
    assert all(torch.equal(clean[n], out[n]) for n in clean)
    clean, out, _ = shared("pruning", 0.9)
    assert all(int((out[n] == 0).sum()) >= int(0.9 * out[n].numel()) for n in out)
    clean, out, _ = shared("noise", 0.5)
    diff = torch.cat([(out[n] - clean[n]).reshape(-1) for n in out])
    assert float(diff.std()) == pytest.approx(0.5, rel=0.05)  # an absolute noise std, no clipping
    clean, out, model = shared("ppp", 0.5)
    scope = set(deterministic_parameters(model))
    assert all(torch.equal(clean[n], out[n]) for n in out if n not in scope)  # PPP leaves the rest alone
    assert all(not torch.equal(clean[n], out[n]) for n in scope)
    clean, out, _ = shared("dp_fixed", 0.5)
    norm = float(torch.sqrt(sum(g.pow(2).sum() for g in clean.values())))
    factor = min(1.0, 1.0 / norm)  # clipped to C = 1, then noise of std σ·C
    diff = torch.cat([(out[n] - factor * clean[n]).reshape(-1) for n in out])
    assert float(diff.std()) == pytest.approx(0.5, rel=0.05)
    # the same slider value is a different noise std once C is not 1: σ·C for DP, the value itself for noise
    wide = arena.ArenaSettings(**{**TINY, "max_grad_norm": 4.0})
    clean, out, _ = shared("dp_fixed", 0.5, wide)
    factor = min(1.0, 4.0 / norm)
    diff = torch.cat([(out[n] - factor * clean[n]).reshape(-1) for n in out])
    assert float(diff.std()) == pytest.approx(2.0, rel=0.05)
    clean, out, _ = shared("noise", 0.5, wide)
    diff = torch.cat([(out[n] - clean[n]).reshape(-1) for n in out])
    assert float(diff.std()) == pytest.approx(0.5, rel=0.05)
    with pytest.raises(ValueError, match="dp_dynamic"):
        arena.shared_gradient(settings, "dp_dynamic", 0.5, sweeps.victim(settings, "dp_dynamic"), x, y, seed=0)


def test_cache_is_reused_then_invalidated_cell_by_cell(tiny, tmp_path):
    root, first = tiny
    local = _copy(root, tmp_path)
    again = arena.arena(cache_dir=local, **TINY)
    assert again.cached == N_CELLS and again.computed == 0
    assert again.rows == first.rows  # read back: identical, timings too
    # a pruning fraction concerns the pruning cell only, the dynamic schedule's end only dp_dynamic
    bars = []

    class Bar:  # what the progress bar is told: one step per computed cell, cached cells counted at the start
        def __init__(self, total, initial, **kwargs):
            self.total, self.n, self.postfix = total, initial, ""
            bars.append(self)

        def update(self, k=1):
            self.n += k

        def set_postfix_str(self, text, refresh=True):
            self.postfix = text

        def close(self):
            pass

    import tqdm.auto
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    try:
        changed = arena.arena(cache_dir=local, progress=True, **{**TINY, "prune_fractions": (0.5,), "dynamic_end": 0.5})
    finally:
        monkeypatch.undo()
    assert changed.computed == 1 + 2 and changed.cached == N_CELLS - 3
    assert len(bars) == 1 and bars[0].n == bars[0].total == N_CELLS  # each computed cell counted once
    # load-only: what the notebook does to read the command's full grid
    assert arena.arena(cache_dir=local, compute=False, **TINY).cached == N_CELLS
    with pytest.raises(LookupError, match="gleak arena"):
        arena.arena(cache_dir=tmp_path / "empty", compute=False, **TINY)


def test_a_new_version_invalidates_the_cache(monkeypatch):
    import gleak_edu
    from gleak_edu._cache import cell_key

    settings = arena.ArenaSettings(**TINY)
    old = cell_key(grid.cell_spec(settings, "none", 0.0, 0))
    monkeypatch.setattr(gleak_edu, "__version__", gleak_edu.__version__ + ".dev1")
    assert cell_key(grid.cell_spec(settings, "none", 0.0, 0)) != old


def test_the_cell_format_is_in_the_key(monkeypatch):
    from gleak_edu._cache import cell_key

    settings = arena.ArenaSettings(**TINY)
    spec = grid.cell_spec(settings, "dp_fixed", 0.01, 0)
    assert spec["format"] == grid.CELL_FORMAT >= 2 and spec["max_grad_norm"] == 1.0 and "clip" not in spec
    assert "max_grad_norm" not in grid.cell_spec(settings, "noise", 0.01, 0)  # noise does not clip
    monkeypatch.setattr(grid, "CELL_FORMAT", grid.CELL_FORMAT + 1)
    assert cell_key(grid.cell_spec(settings, "dp_fixed", 0.01, 0)) != cell_key(spec)


@pytest.mark.parametrize("damage", ["garbage", "wrong key", "missing attack"])
def test_a_corrupt_cache_file_warns_and_is_recomputed(tiny, tmp_path, damage):
    from gleak_edu._cache import cell_key

    root, first = tiny
    local = _copy(root, tmp_path)
    key = cell_key(grid.cell_spec(arena.ArenaSettings(**TINY), "none", 0.0, 0))
    path = local / f"arena-{key[:24]}.json"
    content = json.loads(path.read_text())
    if damage == "garbage":
        path.write_bytes(b"\x00\xffnot json")
    elif damage == "wrong key":
        content["key"] = "0" * 64
        content["result"]["accuracy"] = 1.0  # a forged result must not be used
        path.write_text(json.dumps(content))
    else:
        del content["result"]["attacks"]["ig"]
        path.write_text(json.dumps(content))
    with pytest.warns(UserWarning, match="recomputing"):
        result = arena.arena(cache_dir=local, **TINY)
    assert result.computed == 1 and result.cached == N_CELLS - 1
    assert _numbers(result.rows) == _numbers(first.rows)  # recomputed, deterministic
    assert json.loads(path.read_text())["key"] == key  # repaired on disk


def test_workers_give_the_same_numbers(tiny, tmp_path):
    from gleak_edu._cache import cell_key

    root, first = tiny
    local = _copy(root, tmp_path)
    settings = arena.ArenaSettings(**TINY)
    for cell in (("pruning", 0.9, 0), ("noise", 0.01, 0)):  # cheap cells: no Opacus in the workers
        (local / f"arena-{cell_key(grid.cell_spec(settings, *cell))[:24]}.json").unlink()
    result = arena.arena(cache_dir=local, workers=2, **TINY)
    assert result.computed == 2 and _numbers(result.rows) == _numbers(first.rows)


def test_a_ray_cluster_computes_the_missing_cells(tiny, tmp_path):
    """``address=``: a Ray cluster started as a lab would (``ray start --head``) computes the cells; this
    process's cache keeps them, and the numbers are those computed in-process."""
    import socket
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from gleak_edu._cache import cell_key

    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip("ray is not installed (the scale extra)")
    root, first = tiny
    local = _copy(root, tmp_path / "cache")
    settings = arena.ArenaSettings(**TINY)
    for cell in (("pruning", 0.9, 0), ("noise", 3.0, 0)):
        (local / f"arena-{cell_key(grid.cell_spec(settings, *cell))[:24]}.json").unlink()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = [str(ray_cli), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
             "--include-dashboard=false", "--object-store-memory=200000000", f"--temp-dir={temp}", "--disable-usage-stats"]
    subprocess.run(start, check=True, env=env, capture_output=True, timeout=180)
    try:
        result = arena.arena(cache_dir=local, address=f"127.0.0.1:{port}", **TINY)
    finally:
        subprocess.run([str(ray_cli), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
    assert result.computed == 2 and result.cached == N_CELLS - 2
    assert _numbers(result.rows) == _numbers(first.rows)
    assert arena.arena(cache_dir=local, compute=False, **TINY).cached == N_CELLS  # the cache kept the cluster's cells


def test_settings_are_checked():
    for bad, match in [
        (dict(noise_levels=()), "noise_levels"), (dict(noise_levels=(0.0,)), "noise_levels"),
        (dict(noise_levels=(1.0, 1.0)), "repeat"), (dict(prune_fractions=(1.0,)), "prune_fractions"),
        (dict(seeds=()), "seeds"), (dict(images=0), "images"), (dict(dynamic_end=0.0), "dynamic_end"),
        (dict(dynamic_schedule="fixed"), "dynamic_schedule"), (dict(success_ssim=1.5), "success_ssim"),
        (dict(train_images=0), "train_images"), (dict(max_grad_norm=-1.0), "max_grad_norm"),
        (dict(max_grad_norm=float("inf")), "max_grad_norm"),
    ]:
        with pytest.raises(ValueError, match=match):
            arena.ArenaSettings(**bad)
    with pytest.raises(ValueError, match="unknown arena settings"):
        arena.arena(noise_level=(1.0,))
    with pytest.raises(ValueError, match="unknown arena settings"):
        arena.arena(clip=1.0)  # the old name of max_grad_norm
    with pytest.raises(ValueError, match="defense must be one of"):
        arena.arena_cell(arena.ArenaSettings(), "dropout", 0.0, 0)
    with pytest.raises(ValueError, match="workers"):
        arena.arena(workers=0)


def test_heatmap_and_panel_render_from_the_result(tiny):
    import matplotlib.pyplot as plt

    from gleak_edu import widgets

    _, result = tiny
    fig = viz.arena_heatmap(result, 3.0)
    texts = [t.get_text().replace("\n", " ") for ax in fig.axes for t in ax.texts]
    texts += [t.get_text().replace("\n", " ") for t in fig.texts]
    assert sum(t == "n/a" for t in texts) == 5
    assert any("no PRECODE bottleneck" in t for t in texts) and any("ε = " in t for t in texts)
    plt.close(fig)
    with pytest.raises(ValueError, match="not in this arena's grid"):
        viz.arena_heatmap(result, 0.5)
    panel = widgets.ArenaPanel(result)
    assert panel.renders == 1 and panel.last_level == 0.01  # the handler ran once with the first level
    first_png = panel.image.value
    assert first_png[:8] == b"\x89PNG\r\n\x1a\n" and "bypass" in panel.caption.value.lower()
    row = result.row("ppp", "bypass", 0.01)
    assert f"{row['successes']}/{row['n']} = " in panel.caption.value and "95 % CI" in panel.caption.value
    panel.noise.value = 3.0  # moving the slider re-renders from the stored cells
    assert panel.renders == 2 and panel.last_level == 3.0 and panel.image.value != first_png
    panel.defense.value = "none"  # an impossible pair shows its reason, no images
    assert "n/a" in panel.caption.value and panel.strip.value == b""


def test_arena_command_writes_json_and_png_from_the_cache(tiny, tmp_path, capsys, monkeypatch):
    import functools

    from gleak_edu import cli

    root, first = tiny
    # the command's victim is the default MLP; run it on the tiny recipe (same cells as the fixture)
    monkeypatch.setattr(arena, "arena", functools.partial(arena.arena, **TINY))
    out, png = tmp_path / "a.json", tmp_path / "a.png"
    args = ["arena", "--noise-levels", "0.01,3", "--images", "1", "--seeds", "0", "--workers", "1",
            "--cache", str(root), "--json", str(out), "--png", str(png)]
    assert cli.main(args) == 0
    res = json.loads(out.read_text())
    assert res["cells_cached"] == N_CELLS and res["cells_computed"] == 0
    assert res["settings"]["noise_levels"] == [0.01, 3.0] and len(res["rows"]) == len(first.rows)
    assert {(i["attack"], i["defense"]) for i in res["impossible"]} == {
        ("bypass", d) for d in ("none", "noise", "pruning", "dp_fixed", "dp_dynamic")}
    assert png.stat().st_size > 20_000
    printed = capsys.readouterr().out
    assert "n/a" in printed and f"0 cells computed, {N_CELLS} from the cache" in printed


@pytest.mark.parametrize("extra,message", [
    (["--noise-levels", "0,1"], "--noise-levels must be > 0"),
    (["--noise-levels", "1,-2"], "--noise-levels must be a finite number >= 0"),
    (["--prune-fractions", "1"], "--prune-fractions must lie in [0, 1)"),
    (["--seeds", "a"], "--seeds must be whole numbers"),
    (["--images", "0"], "--images must be at least 1"),
    (["--workers", "0"], "--workers must be at least 1"),
])
def test_arena_command_bad_input(extra, message, tmp_path, capsys):
    from gleak_edu import cli

    assert cli.main(["arena", *extra, "--json", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "x.json").exists()


def test_arena_command_needs_json(capsys):
    from gleak_edu import cli

    assert cli.main(["arena"]) == 2
    assert "--json" in capsys.readouterr().err

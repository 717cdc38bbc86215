"""The PPP trade-off sweep: cells, tidy rows, the claim check, and the disk cache's safety."""

from __future__ import annotations

import json
import math

import pytest

from gleak_edu import sweeps, viz
from gleak_edu.defenses import epsilon_for_steps

# A sweep small enough for a unit test: 300 training images, one noise level, one image, 20 attack steps.
TINY = dict(noise_levels=(0.5,), seeds=(0,), images=1, iterations=20, epochs=1, train_images=300, hidden=(32, 32), bottleneck=16)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    result = sweeps.ppp_sweep(cache_dir=root, **TINY)
    return root, result


def test_sweep_rows_are_tidy_and_complete(tiny_cache):
    _, result = tiny_cache
    assert result.computed == 4 and result.cached == 0
    keys = {(r["defense"], r["noise_multiplier"], r["attack"]) for r in result.rows}
    assert keys == {(d, s, a) for d, s in [("none", 0.0), ("precode", 0.0), ("full", 0.5), ("ppp", 0.5)] for a in ("bypass", "ig")}
    for r in result.rows:
        assert 0 <= r["accuracy"] <= 1 and -1 <= r["ssim"] <= 1 and 0 <= r["success_rate"] <= 1
    none = result.select("none")[0]
    assert none["accuracy_loss"] == 0 and math.isnan(none["epsilon"])
    ppp = result.select("ppp")[0]
    # one epoch of 300 images in batches of 64: 5 steps at q = 64/300
    assert ppp["epsilon"] == pytest.approx(epsilon_for_steps(0.5, 64 / 300, 5, 1e-5), rel=1e-9)
    # without a bottleneck the bypass is Inverting Gradients on all layers: the same numbers
    assert result.select("full", "bypass")[0]["ssim"] == result.select("full", "ig")[0]["ssim"]
    assert result.reconstructions("ppp", 0.5).shape == (1, 1, 28, 28)
    assert result.test_images.shape == (1, 1, 28, 28)
    text = result.table()
    assert "ppp" in text and "precode" in text
    out = result.to_json()
    json.dumps(out)  # JSON-ready: no inf/nan floats
    assert out["settings"]["max_grad_norm"] == 1.0 and "clip" not in out["settings"]
    assert all("sigma" not in r and "noise_multiplier" in r for r in out["rows"])
    assert "σ (×C)" in text
    fig = viz.tradeoff_figure(result)
    assert len(fig.axes[0].lines) >= 4


def test_cache_is_reused_then_invalidated(tiny_cache):
    root, first = tiny_cache
    again = sweeps.ppp_sweep(cache_dir=root, **TINY)
    assert again.cached == 4 and again.computed == 0
    assert again.rows == first.rows
    # another setting: other keys, everything recomputed (and the old files left alone)
    changed = sweeps.ppp_sweep(cache_dir=root, **{**TINY, "max_grad_norm": 0.5, "noise_levels": (0.5,)})
    assert changed.computed == 4 and changed.cached == 0


def test_a_new_version_invalidates_the_cache(monkeypatch):
    import gleak_edu

    monkeypatch.setattr(gleak_edu, "__version__", gleak_edu.__version__ + ".dev1")
    key_new, _ = sweeps._cell_key(sweeps.PPPSweepSettings(**TINY), "none", 0.0, 0)
    monkeypatch.undo()
    key_old, _ = sweeps._cell_key(sweeps.PPPSweepSettings(**TINY), "none", 0.0, 0)
    assert key_new != key_old


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong key", "missing field"])
def test_a_corrupt_cache_file_is_recomputed_not_trusted(tiny_cache, tmp_path, damage):
    root, first = tiny_cache
    local = tmp_path / "cache"
    local.mkdir()
    for f in root.glob("ppp-*.json"):
        (local / f.name).write_text(f.read_text())
    key, _ = sweeps._cell_key(sweeps.PPPSweepSettings(**TINY), "ppp", 0.5, 0)
    path = local / f"ppp-{key[:24]}.json"
    text = path.read_text()
    content = json.loads(text)
    if damage == "garbage":
        path.write_bytes(b"\x00\xffnot json")
    elif damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "wrong key":
        content["key"] = "0" * 64
        content["result"]["accuracy"] = 1.0  # a forged result must not be used
        path.write_text(json.dumps(content))
    else:
        del content["result"]["attacks"]
        path.write_text(json.dumps(content))
    with pytest.warns(UserWarning, match="recomputing"):
        result = sweeps.ppp_sweep(cache_dir=local, **TINY)
    assert result.computed == 1 and result.cached == 3
    assert result.rows == first.rows  # recomputed, deterministic
    assert json.loads(path.read_text())["key"] == key  # repaired on disk


def test_claim_check_logic():
    settings = sweeps.PPPSweepSettings(noise_levels=(1.0, 2.0), seeds=(0,))

    def row(defense, noise_multiplier, attack, loss, ssim):
        return {"defense": defense, "noise_multiplier": noise_multiplier, "attack": attack, "accuracy": 0.9 - loss, "accuracy_loss": loss, "ssim": ssim}

    result = sweeps.SweepResult(settings, rows=[
        row("ppp", 1.0, "bypass", 0.02, 0.1), row("full", 1.0, "ig", 0.05, 0.05),  # ratio 2.5, SSIM ok -> holds
        row("ppp", 2.0, "bypass", 0.04, 0.1), row("full", 2.0, "ig", 0.06, 0.05),  # ratio 1.5 -> fails
    ])
    checks = sweeps.claim_check(result)
    assert [c["holds"] for c in checks] == [True, False]
    assert checks[0]["loss_ratio"] == pytest.approx(2.5) and checks[0]["noise_multiplier"] == 1.0
    leaky = sweeps.SweepResult(settings, rows=[row("ppp", 1.0, "bypass", 0.01, 0.5), row("full", 1.0, "ig", 0.05, 0.05)])
    assert not sweeps.claim_check(leaky)[0]["holds"]  # SSIM 0.5 > 0.3: PPP does not protect there


def test_settings_are_checked():
    with pytest.raises(ValueError, match="noise_levels"):
        sweeps.PPPSweepSettings(noise_levels=(-1.0,))
    with pytest.raises(ValueError, match="seeds"):
        sweeps.PPPSweepSettings(seeds=())
    with pytest.raises(ValueError, match="train_images"):
        sweeps.PPPSweepSettings(train_images=0)
    with pytest.raises(ValueError, match="max_grad_norm"):
        sweeps.PPPSweepSettings(max_grad_norm=0.0)
    with pytest.raises(TypeError):
        sweeps.PPPSweepSettings(clip=1.0)  # the old name
    with pytest.raises(ValueError, match="defense"):
        sweeps.sweep_cell(sweeps.PPPSweepSettings(), "dp", 1.0, 0)


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GLEAK_CACHE", str(tmp_path))
    assert sweeps.default_cache_dir() == tmp_path
    monkeypatch.delenv("GLEAK_CACHE")
    assert sweeps.default_cache_dir().name == "gleak_edu"


def test_sweep_command_writes_the_table_and_reuses_the_cache(tiny_cache, tmp_path, capsys):
    from gleak_edu import cli

    root, _ = tiny_cache
    out, png = tmp_path / "t.json", tmp_path / "t.png"
    args = ["sweep", "ppp", "--noise-levels", "0.5", "--seeds", "0", "--images", "1", "--iterations", "20",
            "--epochs", "1", "--train-images", "300", "--cache", str(root), "--json", str(out), "--png", str(png)]
    # the CLI's victim is the default MLP; the tiny fixture used a smaller one, so these cells are new
    assert cli.main(args) == 0
    res = json.loads(out.read_text())
    assert res["cells_computed"] == 4 and res["settings"]["noise_levels"] == [0.5]
    assert {r["defense"] for r in res["rows"]} == {"none", "full", "precode", "ppp"}
    assert len(res["claim"]) == 1 and isinstance(res["claim"][0]["holds"], bool)
    assert png.stat().st_size > 10_000
    assert "claim" in capsys.readouterr().out
    assert cli.main(args) == 0  # second run: all from the cache
    assert json.loads(out.read_text())["cells_cached"] == 4


@pytest.mark.parametrize("extra,message", [
    (["--noise-levels", "1,-2"], "--noise-levels must be a finite number >= 0"),
    (["--seeds", "a"], "--seeds must be whole numbers"),
    (["--max-grad-norm", "0"], "--max-grad-norm"),
    (["--clip", "1"], "--max-grad-norm"),  # the old flag, refused naming the new one
    (["--images", "0"], "--images must be at least 1"),
])
def test_sweep_command_bad_input(extra, message, tmp_path, capsys):
    from gleak_edu import cli

    assert cli.main(["sweep", "ppp", *extra, "--json", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]

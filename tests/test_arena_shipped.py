"""The full arena grid shipped with the course (notebooks/results/arena_full.json), which notebook 07 reads.

It is made by one command (``gleak_edu.exercises.nb07.FULL_GRID_COMMAND``)::

    python -m gleak_edu.exercises.nb07 notebooks/results/arena_full.json

which runs ``gleak arena`` at its defaults (reading the cells from the cache
when the command ran before) and adds each digit's SSIM and reconstruction,
the signal-to-noise measurements and the label-rule counts. These tests check
that the file was made with the documented settings and that the numbers the
notebook and the README quote from it are the file's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nbformat
import pytest

from gleak_edu import arena
from gleak_edu.exercises import nb07 as ex

ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / ex.FULL_GRID_FILE
NOTEBOOK = ROOT / "notebooks" / "07_defense_arena.ipynb"


@pytest.fixture(scope="module")
def full():
    return ex.load_full_grid(FILE)


def rate(full, defense, attack, level=None):
    return full.result.row(defense, attack, level)["success_rate"]


def test_made_by_the_documented_command_at_the_default_settings(full):
    record = json.loads(FILE.read_text())
    assert record["format"] == ex.FORMAT and record["command"] == ex.FULL_GRID_COMMAND
    assert record["arena"]["settings"] == json.loads(json.dumps(dataclasses.asdict(arena.ArenaSettings())))
    assert full.result.settings == arena.ArenaSettings()
    assert full.n == 3 and full.result.levels == (0.01, 0.1, 1.0)
    # what `gleak arena --json` writes, unchanged
    assert set(record["arena"]) >= {"settings", "versions", "attacks", "defenses", "defense_levels", "impossible", "rows"}
    assert len(record["arena"]["rows"]) == len(arena.cells_of(full.result.settings)) * len(arena.ATTACKS)
    assert FILE.stat().st_size < 400 * 1024
    # the command is documented where a reader looks for it
    assert ex.FULL_GRID_COMMAND in ex.__doc__
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert any(ex.FULL_GRID_COMMAND in c.source for c in nb.cells if c.cell_type == "markdown")


def test_every_cell_has_its_digits(full):
    res = full.result
    assert res.test_images.shape == (3, 1, 28, 28) and len(res.test_labels) == 3
    for (defense, level, seed), cell in res.cells.items():
        assert set(cell["attacks"]) == set(arena.possible_attacks(defense))
        ssims = full.per_image[(defense, level, seed)]["ssim"]
        for attack in arena.possible_attacks(defense):
            assert res.reconstructions(defense, attack, level if defense in arena.NOISY else None).shape == (3, 1, 28, 28)
            row = res.row(defense, attack, level if defense in arena.NOISY else None)
            assert row["success_rate"] == pytest.approx(sum(v >= 0.6 for v in ssims[attack]) / 3)


def test_the_snr_models_are_the_grids_models(full):
    """The signal-to-noise measurements retrain every defense's model: same accuracy as the grid's cell."""
    assert len(full.snr) == len(arena.cells_of(full.result.settings)) * 3
    for r in full.snr:
        level = r["level"] if r["defense"] in arena.NOISY else None
        assert r["accuracy"] == pytest.approx(full.result.row(r["defense"], "ig", level)["accuracy"], abs=1e-12)


def test_the_numbers_notebook_07_quotes(full):
    res = full.result
    # section 4, column by column
    assert rate(full, "none", "ig") == rate(full, "none", "analytic") == 1
    assert res.row("none", "analytic")["psnr"] > 60
    assert rate(full, "none", "idlg") == pytest.approx(1 / 3) and rate(full, "none", "dlg") == 0
    for d in arena.NOISY:
        for lv in (0.1, 1.0):
            assert all(rate(full, d, a, lv) == 0 for a in arena.possible_attacks(d))
    assert res.row("dp_dynamic", "ig", 0.1)["ssim"] == pytest.approx(0.49, abs=0.005)
    assert rate(full, "noise", "ig", 0.01) == pytest.approx(2 / 3)
    assert rate(full, "dp_fixed", "ig", 0.01) == rate(full, "dp_dynamic", "ig", 0.01) == 1
    assert rate(full, "ppp", "ig", 0.01) == 0 and rate(full, "ppp", "bypass", 0.01) == 1
    assert rate(full, "dp_dynamic", "analytic", 0.01) == 1 and rate(full, "noise", "analytic", 0.01) == pytest.approx(1 / 3)
    assert all(rate(full, "pruning", a) == 1 for a in ("ig", "analytic", "dlg"))
    assert rate(full, "precode", "bypass") == rate(full, "precode", "analytic") == 1
    assert rate(full, "precode", "ig") == pytest.approx(2 / 3)
    assert all(rate(full, d, a) == 0 for d in ("none", "precode") for a in ("dlg", "grnn"))
    assert ex.folded_attacks(res) == ["grnn"]
    costs = {s["defense"]: round(100 * s["accuracy_cost"], 1) for s in res.defense_summary(1.0)}
    assert costs == {"none": 0.0, "noise": -0.1, "pruning": 2.7, "precode": 6.4, "ppp": 12.9, "dp_fixed": 18.8,
                     "dp_dynamic": -0.6}
    # section 5: the signal-to-noise ratio
    rows = {(r["defense"], r["image"]): r for r in ex.snr_rows(full, 0.01)}
    assert rows[("noise", 0)]["noise_norm"] == pytest.approx(3.4, abs=0.05)
    assert rows[("noise", 0)]["gradient_norm"] == pytest.approx(0.16, abs=0.005)
    assert rows[("noise", 0)]["snr"] == pytest.approx(0.05, abs=0.005)
    assert rows[("dp_fixed", 0)]["gradient_norm"] == pytest.approx(4.7, abs=0.05)
    assert rows[("dp_fixed", 0)]["snr"] == pytest.approx(0.29, abs=0.005)
    assert [round(rows[("noise", i)]["gradient_norm"], 1) for i in (1, 2)] == [3.5, 1.4]
    assert [round(rows[("noise", i)]["snr"], 1) for i in (1, 2)] == [1.0, 0.4]
    accuracy = {s["defense"]: round(100 * s["accuracy"], 1) for s in res.defense_summary(0.01)}
    assert accuracy["noise"] == 88.2 and accuracy["dp_fixed"] == 70.3
    noisy = [r for lv in res.levels for r in ex.snr_rows(full, lv) if r["snr"] is not None]
    assert round(min(r["snr"] for r in noisy if r["ssim"] >= 0.6), 2) == 0.29
    assert round(max(r["snr"] for r in noisy if r["ssim"] < 0.3), 2) == 0.23
    cosines = [r["cosine"] for r in full.snr if r["defense"] == "pruning"]
    assert (round(min(cosines), 2), round(max(cosines), 2)) == (0.94, 0.98)
    # section 7: DLG, the label rule, epsilon
    assert rate(full, "dp_fixed", "dlg", 0.01) == rate(full, "dp_dynamic", "dlg", 0.01) == pytest.approx(2 / 3)
    assert rate(full, "noise", "dlg", 0.01) == pytest.approx(1 / 3)
    assert full.label_rules == {"digits": 200, "weight_row_rule": 114, "bias_rule": 200}  # 57 % and 100 %
    eps = {lv: {s["defense"]: s["epsilon"] for s in res.defense_summary(lv) if s["epsilon"] is not None}
           for lv in res.levels}
    assert f"{eps[1.0]['dp_fixed']:.3g}" == "1.66" and f"{eps[1.0]['dp_dynamic']:.3g}" == "21.1"
    assert all(e > 1e3 for lv in (0.01, 0.1) for e in eps[lv].values())
    assert f"{eps[0.01]['dp_fixed']:.3g}" == "6.87e+05" and f"{eps[0.01]['dp_dynamic']:.3g}" == "2.76e+06"


def test_the_numbers_the_readme_quotes(full):
    """README.md, "The defense arena: measured": its level-1 table and the sentences under it."""
    table = {  # attack -> success rate per defense, in arena.DEFENSES order, at noise level 1
        "dlg": [0, 0, 1, 0, 0, 0, 0],
        "idlg": [1 / 3, 0, 0, 0, 0, 0, 0],
        "ig": [1, 0, 1, 2 / 3, 0, 0, 0],
        "grnn": [0, 0, 0, 0, 0, 0, 0],
        "analytic": [1, 0, 1, 1, 0, 0, 0],
    }
    for attack, rates in table.items():
        assert [rate(full, d, attack, 1.0) for d in arena.DEFENSES] == pytest.approx(rates), attack
    assert rate(full, "precode", "bypass") == 1 and rate(full, "ppp", "bypass", 1.0) == 0
    # "At level 0.01 ... Inverting Gradients succeeds on 2 of 3 digits against noise, 3 of 3 against DP fixed and
    # dynamic; the bypass on 3 of 3 against PPP"
    assert rate(full, "noise", "ig", 0.01) == pytest.approx(2 / 3)
    assert rate(full, "dp_fixed", "ig", 0.01) == rate(full, "dp_dynamic", "ig", 0.01) == rate(full, "ppp", "bypass", 0.01) == 1

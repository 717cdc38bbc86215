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
    assert full.n == 30 and full.result.levels == (0.01, 0.1, 1.0) and full.result.settings.seeds == (0, 1, 2)
    # what `gleak arena --json` writes, unchanged
    assert set(record["arena"]) >= {"settings", "versions", "attacks", "defenses", "defense_levels", "impossible", "rows"}
    groups = {(d, lv) for d, lv, _ in arena.cells_of(full.result.settings)}  # a row pools a group's seeds
    assert len(record["arena"]["rows"]) == len(groups) * len(arena.ATTACKS) == 90
    assert record["made"]["cells_computed"] + record["made"]["cells_cached"] == 45
    assert FILE.stat().st_size < 1024 * 1024  # compact: the first seed's reconstructions only
    # the command is documented where a reader looks for it
    assert ex.FULL_GRID_COMMAND in ex.__doc__
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert any(ex.FULL_GRID_COMMAND in c.source for c in nb.cells if c.cell_type == "markdown")


def test_every_cell_has_its_digits(full):
    res = full.result
    s = res.settings
    assert res.test_images.shape == (10, 1, 28, 28) and len(res.test_labels) == 10
    assert {key[2] for key in res.cells} == {s.seeds[0]}  # reconstructions: the first seed's cells
    assert set(full.per_image) == set(arena.cells_of(s))  # SSIM, PSNR, labels: every cell
    for (defense, level, seed), per in full.per_image.items():
        assert set(per["ssim"]) == set(arena.possible_attacks(defense))
        lv = level if defense in arena.NOISY else None
        for attack in arena.possible_attacks(defense):
            assert len(per["ssim"][attack]) == 10
            if seed == s.seeds[0]:
                assert res.reconstructions(defense, attack, lv).shape == (10, 1, 28, 28)
    for r in res.rows:  # every row's count is the per-digit SSIMs' over the three seeds
        if r["impossible"]:
            continue
        ssims = [v for seed in s.seeds for v in full.per_image[(r["defense"], r["level"], seed)]["ssim"][r["attack"]]]
        assert r["n"] == 30 and r["successes"] == sum(v is not None and v >= 0.6 for v in ssims)
        assert r["success_low"] <= r["success_rate"] <= r["success_high"]


def test_the_signal_to_noise_records_are_the_cells(full):
    """Every digit of every cell has its signal-to-noise record, measured in the cell; the rows' median is theirs."""
    import statistics

    assert len(full.snr) == len(arena.cells_of(full.result.settings)) * 10
    for r in full.snr:
        assert (r["snr"] is None) == (r["defense"] not in arena.NOISY)
    for row in full.result.rows:
        values = [r["snr"] for r in full.snr if (r["defense"], r["level"]) == (row["defense"], row["level"])
                  and r["snr"] is not None]
        assert row["snr"] == (pytest.approx(statistics.median(values)) if values else None)
    first_none = next(r["accuracy"] for r in full.snr if r["defense"] == "none" and r["seed"] == 0)
    assert full.label_rules["accuracy"] == pytest.approx(first_none, abs=1e-12)  # the label rules' model is the grid's


def counts(full, defense, attack, level=None):
    r = full.result.row(defense, attack, level)
    return r["successes"]


def test_the_numbers_notebook_07_quotes(full):
    res = full.result
    # section 4, column by column
    assert [counts(full, "none", a) for a in ("ig", "analytic", "idlg", "dlg", "grnn")] == [30, 30, 14, 10, 2]
    assert res.row("none", "analytic")["psnr"] > 60
    assert [counts(full, d, "ig", 0.01) for d in ("noise", "dp_fixed", "dp_dynamic", "ppp")] == [22, 27, 30, 3]
    assert counts(full, "ppp", "bypass", 0.01) == 23
    assert counts(full, "noise", "ig", 0.1) == 6 and counts(full, "dp_dynamic", "ig", 0.1) == 2
    assert counts(full, "noise", "dlg", 0.1) == 5
    assert all(counts(full, d, a, 1.0) == 0 for d in ("ppp", "dp_fixed", "dp_dynamic") for a in arena.possible_attacks(d))
    assert [counts(full, "noise", a, 1.0) for a in arena.possible_attacks("noise")] == [0, 0, 0, 1, 0]  # GRNN's one 3
    assert [counts(full, "pruning", a) for a in ("ig", "analytic", "dlg")] == [30, 30, 19]
    assert [counts(full, "precode", a) for a in ("bypass", "analytic", "ig", "dlg", "idlg")] == [30, 30, 19, 0, 1]
    assert not any(r["no_evidence"] for r in res.rows)
    costs = {s["defense"]: round(100 * s["accuracy_cost"], 1) for s in res.defense_summary(1.0)}
    assert costs == {"none": 0.0, "noise": -0.1, "pruning": 1.4, "precode": 13.6, "ppp": 11.4, "dp_fixed": 16.6,
                     "dp_dynamic": -1.8}
    # section 5: the signal-to-noise ratio
    rows = {d: [r for r in ex.snr_rows(full, 0.01, all_seeds=True) if r["defense"] == d] for d in ("noise", "dp_fixed")}
    assert all(r["noise_norm"] == pytest.approx(3.44, abs=0.02) for d in rows for r in rows[d])  # std 0.01 x sqrt(118,282)
    clipped = [r for r in rows["dp_fixed"] if r["gradient_norm"] > 1]
    assert len(clipped) == 26 and all(round(r["snr"], 2) == 0.29 and r["ssim"] >= 0.6 for r in clipped)
    assert sum(r["ssim"] >= 0.6 for r in rows["dp_fixed"] if r["gradient_norm"] <= 1) == 1
    buried = [r for r in rows["noise"] if r["snr"] < 0.05]
    assert len(buried) == 5 and all(r["ssim"] < 0.6 for r in buried)
    accuracy = {s["defense"]: round(100 * s["accuracy"], 1) for s in res.defense_summary(0.01)}
    assert accuracy["noise"] == 86.5 and accuracy["dp_fixed"] == 69.5
    noisy = [r for lv in res.levels for r in ex.snr_rows(full, lv, all_seeds=True) if r["snr"] is not None]

    def tally(lo, hi):
        b = [r for r in noisy if lo <= r["snr"] < hi]
        return sum(r["ssim"] >= 0.6 for r in b), len(b)

    assert [tally(0, 0.05), tally(0.05, 0.1), tally(0.1, 0.3), tally(0.3, 1e9)] == [(0, 206), (2, 34), (39, 69), (49, 51)]
    cosines = [r["cosine"] for r in full.snr if r["defense"] == "pruning"]
    assert (round(min(cosines), 2), round(max(cosines), 2)) == (0.91, 0.98)
    # section 7: DLG, GRNN, the label rule, epsilon
    assert counts(full, "dp_fixed", "dlg", 0.01) == 24
    grnn = {key: [i for i, v in enumerate(per["ssim"]["grnn"]) if v >= 0.6] for key, per in full.per_image.items()}
    assert {i for hits in grnn.values() for i in hits} <= {2, 4, 5, 7, 8}
    assert sum(4 in hits for hits in grnn.values()) > sum(len(hits) for hits in grnn.values()) / 2  # mostly digit 4
    assert full.per_image[("noise", 1.0, 2)]["ssim"]["grnn"][4] >= 0.6
    assert {k: v for k, v in full.label_rules.items() if k != "accuracy"} == {"digits": 200, "weight_row_rule": 114,
                                                                               "bias_rule": 200}  # 57 % and 100 %
    eps = {lv: {s["defense"]: s["epsilon"] for s in res.defense_summary(lv) if s["epsilon"] is not None}
           for lv in res.levels}
    assert f"{eps[1.0]['dp_fixed']:.3g}" == "1.66" and f"{eps[1.0]['dp_dynamic']:.3g}" == "21.1"
    assert all(e > 1e3 for lv in (0.01, 0.1) for e in eps[lv].values())
    assert f"{eps[0.01]['dp_fixed']:.3g}" == "6.87e+05" and f"{eps[0.01]['dp_dynamic']:.3g}" == "2.76e+06"


def test_the_readme_quotes_the_table_the_file_gives(full):
    """README.md, "The defense arena: measured": its level-1 table is the file's, cell for cell."""
    readme = (ROOT / "README.md").read_text()
    assert ex.markdown_table(full.result, 1.0) in readme

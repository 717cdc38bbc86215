"""Notebook 08's exercise, questions, shipped results and figures (fast: no federation, no attack)."""

from __future__ import annotations

import json

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

from gleak_edu import flower, metrics, viz  # noqa: E402
from gleak_edu.exercises import QUESTIONS  # noqa: E402
from gleak_edu.exercises import nb08 as ex  # noqa: E402


@pytest.fixture(scope="module")
def shipped():
    return ex.load_results(ex._REPO / ex.RESULTS_FILE)


def test_questions_are_registered():
    for key in ("08.dp", "08.server", "08.unroll"):
        assert key in QUESTIONS
    assert QUESTIONS["08.server"].answer == "a" and QUESTIONS["08.unroll"].answer == "a"


def test_check_as_gradient_accepts_the_reading_and_refuses_others(capsys):
    assert ex.check_as_gradient(lambda u, lr, k: {n: t / (-lr * k) for n, t in u.items()}).correct is True
    assert ex.check_as_gradient(lambda u, lr, k: {n: t / (lr * k) for n, t in u.items()}).correct is False  # sign
    assert ex.check_as_gradient(lambda u, lr, k: {n: t / -lr for n, t in u.items()}).correct is False  # K forgotten
    assert ex.check_as_gradient(lambda u, lr, k: ...).correct is None
    out = capsys.readouterr().out
    assert "Correct" in out and "Not quite" in out and "expected" not in out


def test_shipped_results_match_the_code_settings(shipped):
    rec = shipped.record
    assert rec["format"] == ex.FORMAT and rec["command"] == ex.RESULTS_COMMAND
    assert rec["fedavg"]["settings"] == ex.fedavg_settings(1, 1).as_run_config()
    assert rec["dp"]["settings"] == ex.dp_settings().as_run_config()
    assert rec["secagg"]["settings"] == ex.secagg_settings().as_run_config()
    assert rec["iterations"] == ex.ITERATIONS and rec["success_ssim"] == metrics.SUCCESS_SSIM
    cells = {(c["local_steps"], c["local_batch"]) for c in rec["fedavg"]["cells"]}
    assert cells == {(k, b) for k in ex.KB_STEPS for b in ex.KB_BATCHES}
    for c in rec["fedavg"]["cells"]:
        s = ex.fedavg_settings(c["local_steps"], c["local_batch"])
        assert c["updates"] == s.clients and len(c["simple"]) == len(c["unrolled"]) == s.clients
        assert all(len(a["ssim"]) == s.local_steps * s.local_batch for a in c["unrolled"])
    names = [r["name"] for r in rec["dp"]["runs"]]
    assert names == [n for n, _ in ex.DP_RUNS]
    for run, (_, fields) in zip(rec["dp"]["runs"], ex.DP_RUNS):
        s = ex.dp_settings(**fields)
        assert run["settings"] == s.as_run_config()
        assert len(run["accuracy"]) == s.rounds + 1 and len(run["attacks"]) == 2 * s.clients
        eps, _ = flower.federation_epsilon(s)
        assert (run["epsilon"] is None) == (eps is None)
        if eps is not None:
            assert run["epsilon"] == pytest.approx(eps, rel=1e-6)  # the accountant's number, not a copy
    assert [r["clients"] for r in rec["secagg"]["rows"]] == list(ex.SECAGG_CLIENTS)


def test_tables_and_rates(shipped):
    rows = shipped.fedavg_rows()
    assert len(rows) == len(ex.KB_STEPS) * len(ex.KB_BATCHES)
    for r in rows:
        for attack in ("simple", "unrolled"):
            assert isinstance(r[attack], metrics.Rate) and r[attack].n == r["local_steps"] * r["local_batch"] * 10
            assert r[attack].low <= r[attack].rate <= r[attack].high
    text = shipped.fedavg_table()
    assert "95 % CI" in text and text.count("\n") == len(rows)
    dp = shipped.dp_rows()
    assert [r["dp"] for r in dp] == ["none", "server", "local", "dpsgd"]
    assert "epsilon" in shipped.dp_table()
    assert ex.observed_dp(shipped) in "abcd"


def test_observed_dp_follows_the_measurements(shipped, tmp_path):
    record = json.loads(json.dumps(shipped.record))
    for run in record["dp"]["runs"]:  # make every DP mode stop the attack
        if run["settings"]["dp"] != "none":
            for a in run["attacks"]:
                a["ssim"] = [0.0 for _ in a["ssim"]]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(record))
    assert ex.observed_dp(ex.load_results(path)) == "a"


def test_load_refuses_another_format_and_says_how_to_remake(shipped, tmp_path):
    record = dict(shipped.record, format=0)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="python -m gleak_edu.exercises.nb08"):
        ex.load_results(path)
    with pytest.raises(FileNotFoundError, match="python -m gleak_edu.exercises.nb08"):
        ex.load_results(tmp_path / "missing.json")


def test_figures(shipped):
    assert isinstance(viz.federation_figure(), Figure)
    assert isinstance(viz.fedavg_figure(shipped.fedavg_rows()), Figure)
    assert isinstance(viz.dp_federation_figure(shipped.dp_rows()), Figure)
    assert isinstance(viz.secagg_figure(shipped.secagg_rows()), Figure)
    x = torch.rand(2, 1, 28, 28)
    fig = viz.federation_grid([x, x[:1]], [x, None], ["a", "b"], columns=2, ssims=[0.9, None])
    assert isinstance(fig, Figure)
    with pytest.raises(ValueError, match="one title per update"):
        viz.federation_grid([x], [x, x], ["a"], columns=1)

"""Batched restarts: one vectorised evaluation for R restarts, per-restart L-BFGS, successive halving."""

from __future__ import annotations

from gleak_edu.attacks import AttackOptions

import json
import math

import pytest
import torch

from gleak_edu import attacks, cli, data, fl, models
from gleak_edu.attacks._chain import batched_gradient_fn, chain_gradient_fn, gradient_fn, matching_fn, vmap_gradient_fn
from gleak_edu.attacks._common import halving_points
from gleak_edu.attacks._lbfgs import LBFGS, BatchedLBFGS
from gleak_edu.defenses import add_precode, deterministic_parameters

# ------------------------------------------------------------------ batched L-BFGS

N = 30
_A = torch.randn(N, N, generator=torch.Generator().manual_seed(0))
_A = _A @ _A.t() / N + 0.1 * torch.eye(N)


def _f_single(x):
    x = x.detach().requires_grad_(True)
    loss = 0.5 * x @ _A @ x + 0.01 * (x**4).sum() + torch.sin(x).sum()
    (g,) = torch.autograd.grad(loss, x)
    return loss.detach(), g


def _f_batched(x):
    x = x.detach().requires_grad_(True)
    loss = 0.5 * ((x @ _A) * x).sum(1) + 0.01 * (x**4).sum(1) + torch.sin(x).sum(1)
    (g,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), g


@pytest.mark.parametrize("history", [3, 100])
def test_batched_lbfgs_rows_follow_their_own_single_runs(history):
    starts = torch.randn(3, N, generator=torch.Generator().manual_seed(1)) * 2
    x = starts.clone()
    opt = BatchedLBFGS(x, lr=0.5, max_iter=7, history_size=history)
    for _ in range(3):
        opt.step(_f_batched)
    for r in range(3):
        xs = starts[r].clone()
        single = LBFGS(xs, lr=0.5, max_iter=7, history_size=history)
        for _ in range(3):
            single.step(_f_single)
        assert float((x[r] - xs).abs().max()) < 2e-3 * float(xs.abs().max())  # float32 losses, 21 iterations
        assert float((x[r] - starts[r]).abs().max()) > 0.1  # it moved


def test_batched_lbfgs_frozen_rows_stay_put_and_reset_forgets():
    x = torch.randn(3, N, generator=torch.Generator().manual_seed(2))
    before = x.clone()
    opt = BatchedLBFGS(x, max_iter=5)
    info = opt.step(_f_batched, rows=torch.tensor([True, False, True]))
    assert torch.equal(x[1], before[1]) and not torch.equal(x[0], before[0])
    assert info.evaluations.tolist()[1] == 0
    opt.reset(torch.tensor([True, False, False]))
    assert float(opt.W[0].abs().sum()) == 0 and float(opt.W[2].abs().sum()) > 0
    opt.keep(torch.tensor([2, 0]))
    assert opt.x.shape == (2, N) and opt.W.shape[0] == 2


def test_halving_points():
    assert halving_points(1, 100) == []
    assert halving_points(2, 100) == [25]
    assert halving_points(8, 100) == [7, 13, 25]
    assert halving_points(8, 4) == [1]


# ------------------------------------------------------------------ vectorised gradients


@pytest.mark.parametrize("name,shape,per", [("lenet-zhu", (3, 32, 32), 1), ("lenet-zhu", (3, 32, 32), 2), ("mlp", (1, 8, 8), 2)])
def test_batched_gradients_equal_one_restart_at_a_time(name, shape, per):
    model = models.build_model(name, shape, 10, "sigmoid", seed=0)
    gen = torch.Generator().manual_seed(3)
    x = torch.rand((4, per, *shape), generator=gen)
    soft = torch.softmax(torch.randn(4, per, 10, generator=gen), -1)
    single = gradient_fn(model)
    for fn in (batched_gradient_fn(model), vmap_gradient_fn(model)):
        out = fn(x, soft)
        for r in range(4):
            for a, b in zip(out, single(x[r], soft[r])):
                assert float((a[r] - b).abs().max()) <= 1e-5 * float(b.abs().max()) + 1e-9


@pytest.mark.parametrize("per", [1, 3])
def test_matching_terms_equal_the_explicit_distance_and_its_gradient(per):
    model = models.build_model("lenet-zhu", (3, 32, 32), 100, "sigmoid", seed=0)
    x0, y0 = data.photos().batch(0)
    shared = fl.client_gradient(model, x0, y0)
    names = [n for n, _ in model.named_parameters()]
    target = [shared[n] for n in names]
    terms = matching_fn(model, target)
    gen = torch.Generator().manual_seed(4)
    x = torch.rand((3, per, 3, 32, 32), generator=gen).requires_grad_(True)
    soft = torch.softmax(torch.randn(3, per, 100, generator=gen), -1)
    sq, gg, gt = terms(x, soft)
    t = torch.cat([g.reshape(-1) for g in target]).double()
    fast = chain_gradient_fn(model)
    ref = [torch.cat([g.reshape(-1) for g in fast(x[r], soft[r])]).double() for r in range(3)]
    for r in range(3):
        ref_r = ref[r].detach()
        assert math.isclose(float(sq[r].detach()), float((ref_r - t).pow(2).sum()), rel_tol=1e-5)
        assert math.isclose(float(gg[r].detach()), float(ref_r.pow(2).sum()), rel_tol=1e-5)
        assert math.isclose(float(gt[r].detach()), float(ref_r @ t), rel_tol=1e-5)
    (g_new,) = torch.autograd.grad(sq.sum(), x)
    (g_ref,) = torch.autograd.grad(sum((a - t).pow(2).sum() for a in ref), x)
    assert float((g_new - g_ref).abs().max()) <= 1e-4 * float(g_ref.abs().max())


def test_matching_leaves_out_unselected_layers_and_vmap_keeps_precode_state_plain():
    model = models.build_model("mlp", (1, 8, 8), 10, "sigmoid", seed=0)
    add_precode(model, 16, seed=0)
    model.eval()
    x0 = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    shared = fl.client_gradient(model, x0, torch.tensor([3]))
    names = [n for n, _ in model.named_parameters()]
    keep = set(deterministic_parameters(model))
    terms = matching_fn(model, [shared[n] if n in keep else None for n in names])
    x = torch.rand((2, 1, 1, 8, 8), generator=torch.Generator().manual_seed(6))
    soft = torch.nn.functional.one_hot(torch.tensor([3]), 10).float().expand(2, 1, 10)
    sq = terms(x, soft)[0]
    single = gradient_fn(model)
    for r in range(2):
        g = dict(zip(names, single(x[r], soft[r])))
        expected = sum(float((g[n].detach() - shared[n]).pow(2).sum()) for n in keep)
        assert math.isclose(float(sq[r].detach()), expected, rel_tol=1e-4)
    for m in model.modules():  # no torch.func-wrapped tensor left on a module
        for v in vars(m).values():
            if isinstance(v, torch.Tensor):
                v + 1


# ------------------------------------------------------------------ attacks


@pytest.fixture(scope="module")
def lenet_case():
    model = models.build_model("lenet-zhu", (3, 32, 32), 100, "sigmoid", seed=1)
    x, y = data.photos().batch(0)
    return model, x, y, fl.client_gradient(model, x, y)


@pytest.mark.parametrize("attack", ["dlg", "idlg"])
def test_dlg_restarts_report_every_restart_and_return_the_best(attack, lenet_case):
    model, x, y, shared = lenet_case
    result = getattr(attacks, attack)(
        model, shared, input_shape=tuple(x.shape), num_classes=100, iterations=12, truth=(x, y),
        options=AttackOptions(restarts=4, successive_halving=False),
    )
    assert result.restarts == 4 and len(result.per_restart) == 4
    losses = [r["loss"] for r in result.per_restart]
    best = min(range(4), key=lambda r: losses[r])
    assert result.loss == pytest.approx(losses[best])
    assert result.metrics["psnr_mean"] == pytest.approx(result.per_restart[best]["psnr"], abs=1e-4)
    assert len({round(v, 6) for v in losses}) == 4  # different starts, different runs
    assert all("psnr" in r and "ssim" in r and "ended" in r for r in result.per_restart)


def test_successive_halving_keeps_the_lowest_loss_and_cuts_on_schedule(lenet_case):
    """What successive halving promises, whatever path each restart takes on this CPU.

    At every cut the kept half has a lowest-so-far loss no higher than any dropped
    restart's, and a kept restart's lowest loss only falls afterwards: so the
    restart that survives every cut ends at or below every dropped one, and the
    result is the lowest over all restarts. (Comparing with restart 0 run alone
    would ride on chaotic L-BFGS paths, which change with the CPU's vector
    instructions, and halving may drop the restart that would have won.)
    """
    model, x, y, shared = lenet_case
    eight = attacks.dlg(
        model, shared, input_shape=tuple(x.shape), num_classes=100, iterations=40, truth=x, options=AttackOptions(retries=0, restarts=8),
    )
    losses = [r["loss"] for r in eight.per_restart]
    assert eight.loss == min(losses)
    dropped = [r for r in eight.per_restart if "successive halving" in r["ended"]]
    survivors = [r for r in eight.per_restart if "successive halving" not in r["ended"]]
    points = halving_points(8, 40)
    assert points == [3, 5, 10]
    cut_at = [int(r["ended"].split()[3]) for r in dropped]
    assert set(cut_at) <= set(points)
    # at most half of those still running leave at each cut: 4, then 2, then 1
    assert all(cut_at.count(p) <= n for p, n in zip(points, (4, 2, 1)))
    # a restart kept at every cut ends at or below every restart dropped on the way
    assert survivors
    for r in survivors:
        assert all(r["loss"] <= d["loss"] for d in dropped), (r, dropped)
    # with no failure or early convergence, the cuts are exactly 8 -> 4 -> 2 -> 1
    if len(survivors) == 1:
        assert sorted(cut_at) == [3, 3, 3, 3, 5, 5, 10]


def test_ig_restart_zero_is_the_single_run(lenet_case):
    """Adam is elementwise and each restart's gradient is its own: restart 0 of a batch is the single run."""
    model, x, y, shared = lenet_case
    common = dict(input_shape=tuple(x.shape), num_classes=100, iterations=30, truth=x, seed=3)
    single = attacks.inverting_gradients(model, shared, **common)
    batch = attacks.inverting_gradients(model, shared, options=AttackOptions(restarts=3, successive_halving=False), **common)
    assert batch.per_restart[0]["psnr"] == pytest.approx(single.metrics["psnr_mean"], abs=0.05)
    assert batch.per_restart[0]["loss"] == pytest.approx(single.loss, rel=1e-3)
    assert batch.loss == min(r["loss"] for r in batch.per_restart)


def test_bypass_runs_batched_restarts_through_vmap():
    model = models.build_model("mlp", (3, 32, 32), 10, "sigmoid", seed=0, init="pytorch")
    add_precode(model, 64, seed=0)
    model.train()
    x, _ = data.photos().batch(1)
    torch.manual_seed(0)
    shared = fl.client_gradient(model, x, torch.tensor([3]))
    result = attacks.precode_bypass(model, shared, input_shape=tuple(x.shape), num_classes=10, iterations=300, truth=x, options=AttackOptions(restarts=4))
    assert result.attack == "bypass" and result.restarts == 4 and len(result.per_restart) == 4
    assert result.metrics["ssim_mean"] > 0.6  # the bypass still works with batched restarts
    assert model.training  # the mode is restored


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_restarts_are_value_errors(bad, lenet_case):
    model, x, _, shared = lenet_case
    for attack in (attacks.dlg, attacks.inverting_gradients):
        with pytest.raises(ValueError, match="restarts"):
            attack(model, shared, input_shape=tuple(x.shape), num_classes=100, iterations=1, options=AttackOptions(restarts=bad))


def test_cli_restarts_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = cli.main(["attack", "dlg", "--sample", "photos:0", "--iterations", "8", "--restarts", "3", "--json", str(out)])
    assert code == 0
    d = json.loads(out.read_text())
    assert d["restarts"] == 3 and d["successive_halving"] is True and len(d["per_restart"]) == 3
    assert all({"loss", "psnr", "ssim", "ended"} <= set(r) for r in d["per_restart"])
    assert cli.main(["attack", "dlg", "--sample", "photos:0", "--restarts", "0"]) == 2
    assert "--restarts must be at least 1" in capsys.readouterr().err
    assert cli.main(["attack", "grnn", "--sample", "photos:0", "--restarts", "2"]) == 2
    assert "--restarts is for" in capsys.readouterr().err

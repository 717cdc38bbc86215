"""The compact-form L-BFGS (gleak_edu.attacks._lbfgs) against torch.optim.LBFGS.

DLG's recipe is torch's L-BFGS with lr 1, no line search, max_iter 20 and a
history of 100; the package's own implementation must take the same steps.
"""

from __future__ import annotations

import pytest
import torch

from gleak_edu.attacks._lbfgs import LBFGS

N = 50


def _smooth_nonquadratic(seed: int, dtype=torch.float32):
    """f(x) = sum log cosh(Ax - b) + 0.1 sum (Ax - b)^4 with A = I + 0.3 G / sqrt(n).

    Smooth, strictly convex, clearly non-quadratic (the residuals start at ~2),
    minimum f = 0 at A x = b; well conditioned, so float32 round-off does not
    dominate the comparison.
    """
    gen = torch.Generator().manual_seed(seed)
    a = (torch.eye(N) + 0.3 * torch.randn(N, N, generator=gen) / N**0.5).to(dtype)
    b = (2.0 * torch.randn(N, generator=gen)).to(dtype)

    def f(x):
        r = a @ x - b
        return torch.log(torch.cosh(r)).sum() + 0.1 * (r**4).sum()

    return f, a, b


def _ill_conditioned(seed: int = 0, dtype=torch.float64):
    """A flatter, ill-conditioned logcosh regression that needs more than 60 iterations."""
    gen = torch.Generator().manual_seed(seed)
    a = (torch.randn(100, N, generator=gen) / N**0.5 * torch.logspace(0, 1, N)).to(dtype)
    b = torch.randn(100, generator=gen).to(dtype)
    x0 = (0.1 * torch.randn(N, generator=gen)).to(dtype)

    def f(x):
        return 0.05 * torch.log(torch.cosh(a @ x - b)).sum() + 0.001 * (x**4).sum()

    return f, x0


def _pair(f, x0, history_size=100):
    """(ours, fn) and (torch's, closure, param) started at the same point."""

    def fn(x):
        x = x.detach().requires_grad_(True)
        loss = f(x)
        (g,) = torch.autograd.grad(loss, x)
        return loss.detach(), g

    ours_x = x0.clone()
    ours = LBFGS(ours_x, lr=1, max_iter=20, history_size=history_size)
    theirs_x = x0.clone().requires_grad_(True)
    theirs = torch.optim.LBFGS([theirs_x], lr=1, max_iter=20, history_size=history_size, line_search_fn=None)

    def closure():
        theirs.zero_grad()
        loss = f(theirs_x)
        loss.backward()
        return loss

    return (ours, ours_x, fn), (theirs, theirs_x, closure)


def _grad_max(f, x):
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x), x)
    return float(g.abs().max())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_torch_lbfgs_float32(seed):
    f, _, _ = _smooth_nonquadratic(seed)
    x0 = torch.zeros(N)
    (ours, ox, fn), (theirs, tx, closure) = _pair(f, x0)
    f0 = float(f(x0))
    tol = {1: 1e-5, 3: 1e-3}
    for step in (1, 2, 3):
        info = ours.step(fn)
        torch_loss = float(theirs.step(closure).detach())
        assert info.loss == pytest.approx(torch_loss, rel=1e-5, abs=1e-6)
        if step == 1:
            # The first step did real work (many iterations, a big decrease) ...
            assert info.evaluations >= 10
            assert float(f(ox)) < 0.01 * f0
            assert float((ox - x0).abs().max()) > 0.5
        if step in tol:
            diff = float((ox - tx.detach()).abs().max())
            assert diff <= tol[step], f"step {step}: max |x_ours - x_torch| = {diff:.3g}"
    # ... and both end at the minimum A x = b.
    assert _grad_max(f, ox) < 1e-3


def test_matches_torch_lbfgs_float64_iterate_by_iterate():
    """In float64 the two are the same algorithm to round-off, over 3 full steps of 20."""
    f, x0 = _ill_conditioned()
    (ours, ox, fn), (theirs, tx, closure) = _pair(f, x0)
    for step in range(3):
        info = ours.step(fn)
        theirs.step(closure)
        assert info.evaluations == 20 and not info.converged  # still far from the minimum
        assert float((ox - tx.detach()).abs().max()) < 1e-9, f"step {step + 1}"
    assert theirs.state[theirs._params[0]]["func_evals"] == 60


def test_history_ring_buffer_matches_torch_when_full():
    """history_size 5 < iterations: the oldest pairs are dropped exactly as torch drops them."""
    f, x0 = _ill_conditioned(seed=1)
    (ours, ox, fn), (theirs, tx, closure) = _pair(f, x0, history_size=5)
    for step in range(4):
        ours.step(fn)
        theirs.step(closure)
        assert len(ours.slots) == 5
        assert float((ox - tx.detach()).abs().max()) < 1e-8, f"step {step + 1}"


def test_convex_quadratic_both_reach_the_minimum():
    gen = torch.Generator().manual_seed(4)
    m = torch.randn(N, N, generator=gen) / N**0.5
    q = m @ m.T + torch.eye(N)  # SPD, eigenvalues in [1, ~5]
    b = torch.randn(N, generator=gen)
    x_star = torch.linalg.solve(q, b)

    def f(x):
        return 0.5 * x @ q @ x - b @ x

    (ours, ox, fn), (theirs, tx, closure) = _pair(f, torch.zeros(N))
    for _ in range(5):
        ours.step(fn)
        theirs.step(closure)
    assert float((ox - x_star).abs().max()) < 1e-4
    assert float((tx.detach() - x_star).abs().max()) < 1e-4
    # At the minimum a further step reports convergence and does not move.
    before = ox.clone()
    info = ours.step(fn)
    assert info.converged and info.evaluations <= 2
    assert float((ox - before).abs().max()) < 1e-5


def test_step_reports_loss_at_start_and_counts_evaluations():
    f, _, _ = _smooth_nonquadratic(0)
    x0 = torch.zeros(N)
    calls = []

    def fn(x):
        calls.append(1)
        x = x.detach().requires_grad_(True)
        loss = f(x)
        (g,) = torch.autograd.grad(loss, x)
        return loss.detach(), g

    opt = LBFGS(x0, max_iter=7)
    info = opt.step(fn)
    assert info.loss == pytest.approx(float(f(torch.zeros(N))))
    assert info.evaluations == len(calls) == 7


def test_non_finite_evaluation_stops_the_step():
    x = torch.ones(3)

    def fn(z):
        return torch.tensor(float("inf")), torch.full_like(z, float("nan"))

    info = LBFGS(x).step(fn)
    assert info.evaluations == 1 and not info.converged
    assert torch.equal(x, torch.ones(3))  # did not move


def test_rejects_non_flat_parameters():
    with pytest.raises(ValueError):
        LBFGS(torch.zeros(2, 3))

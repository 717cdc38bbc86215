"""L-BFGS with the compact (matrix) form of the inverse-Hessian product.

Same algorithm and stopping rules as ``torch.optim.LBFGS`` without line search
(lr, max_iter, max_eval, tolerance_grad, tolerance_change, history_size, the
same first step ``min(1, 1/|g|_1) * lr``, the same curvature test
``y.s > 1e-10``), so one :meth:`LBFGS.step` is one DLG "iteration" of up to
``max_iter`` evaluations. The difference is speed: torch's two-loop recursion
runs about 4 x history_size tiny tensor operations from Python on every
evaluation (about 2 ms per evaluation with a history of 100), which on a small
model costs as much as the evaluation itself. Here the product ``H g`` uses the
compact representation of Byrd, Nocedal and Schnabel (1994):

    H = gamma I + [S  gamma Y] M [S  gamma Y]^T,
    M = [[R^-T (D + gamma Y^T Y) R^-1, -R^-T], [-R^-1, 0]]

with S, Y the stored steps and gradient changes, R the upper triangle of S^T Y
and D its diagonal. The Gram matrices are updated incrementally (in float64:
the compact form cancels large terms), so an evaluation costs two
matrix-vector products with the history and two small triangular solves.
The history vectors themselves may be kept in float32 (``history_dtype``, as
torch keeps them), halving the memory those two products read.

:class:`BatchedLBFGS` runs R independent problems together (batched
restarts), one history per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["LBFGS", "StepInfo", "BatchedLBFGS", "BatchedStepInfo"]


@dataclass
class StepInfo:
    """What one :meth:`LBFGS.step` did."""

    loss: float  # loss at the start of the step (as torch's step() returns)
    evaluations: int
    converged: bool  # a tolerance was met: further steps would not move


class LBFGS:
    """Minimise ``fn(x) -> (loss, grad)`` over a flat float32 vector ``x`` (updated in place).

    Args:
        x: 1-D float tensor, the starting point; it is updated in place.
        lr: step length (1 in DLG).
        max_iter: iterations per :meth:`step` (20 in DLG).
        max_eval: evaluations per step (default ``max_iter * 5 // 4``, as torch).
        tolerance_grad: stop when ``max |grad| <= tolerance_grad``.
        tolerance_change: stop when the loss or step changes less than this.
        history_size: number of stored (s, y) pairs (100, as torch).
        history_dtype: dtype of the stored vectors (float64 or float32); the
            Gram matrices and the direction are float64 either way.
    """

    def __init__(
        self,
        x: torch.Tensor,
        lr: float = 1.0,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        history_dtype: torch.dtype = torch.float64,
    ) -> None:
        if x.ndim != 1:
            raise ValueError("LBFGS works on a flat 1-D parameter vector")
        self.x = x
        self.lr = float(lr)
        self.max_iter = int(max_iter)
        self.max_eval = int(max_eval) if max_eval is not None else self.max_iter * 5 // 4
        self.tolerance_grad = tolerance_grad
        self.tolerance_change = tolerance_change
        m, n = int(history_size), x.numel()
        self.m = m
        # Ring buffer W (history_dtype): rows 0..m-1 hold the steps s, rows m..2m-1 the
        # gradient changes y; G = W W^T is kept up to date in the same ring
        # order. Unused rows are zero. Each iteration reads W only twice:
        # W g_new (from which W y = W g_new - W g_old) and W^T coef (the step);
        # W s follows from G, because s = t d and d = -(gamma g + W^T coef).
        self.W = torch.zeros(2 * m, n, dtype=history_dtype)  # float32 halves the traffic of its two products
        self.G = torch.zeros(2 * m, 2 * m, dtype=torch.float64)
        self.SY = torch.zeros(m, m, dtype=torch.float64)  # s_i . y_j, oldest first (no gathers from G)
        self.YY = torch.zeros(m, m, dtype=torch.float64)  # y_i . y_j, oldest first
        self.slots: list[int] = []  # ring slots, oldest first
        self._idx = torch.zeros(0, dtype=torch.long)
        self.gamma = 1.0
        self.n_iter = 0
        self.d: torch.Tensor | None = None  # float64
        self.t = 0.0
        self.prev_grad: torch.Tensor | None = None  # float64
        self._wg = torch.zeros(2 * m, dtype=torch.float64)  # W g for the previous gradient
        self._wd = torch.zeros(2 * m, dtype=torch.float64)  # W d for the previous direction

    # -- history and direction (float64: the Gram form cancels large terms) --
    def _update_and_direction(self, g64: torch.Tensor) -> torch.Tensor:
        """Add the pair (s, y) of the last step if it passes the curvature test; return d = -H g."""
        m, W = self.m, self.W
        wg = (W @ g64.to(W.dtype)).double()  # with the W that produced the last direction
        s = self.d * self.t
        y = g64 - self.prev_grad
        ys = float(y.dot(s))
        if ys > 1e-10:
            ws = self._wd * self.t  # W s
            wy = wg - self._wg  # W y
            k = len(self.slots)
            if k == m:
                slot = self.slots.pop(0)
                self.SY[:-1, :-1] = self.SY[1:, 1:].clone()
                self.YY[:-1, :-1] = self.YY[1:, 1:].clone()
                k -= 1
            else:
                slot = k
            ss, yy = float(s.dot(s)), float(y.dot(y))
            if k:  # products of the new pair with the kept ones, oldest first
                old = self._idx[-k:] if len(self._idx) > k else self._idx
                self.SY[:k, k] = wy[old]
                self.SY[k, :k] = ws[m + old]
                self.YY[:k, k] = self.YY[k, :k] = wy[m + old]
            self.SY[k, k] = ys
            self.YY[k, k] = yy
            W[slot] = s.to(W.dtype)
            W[m + slot] = y.to(W.dtype)
            for row, vec in ((slot, ws), (m + slot, wy)):  # products with the old rows ...
                self.G[row] = vec
                self.G[:, row] = vec
            self.G[slot, slot] = ss  # ... then the new rows with each other
            self.G[m + slot, m + slot] = yy
            self.G[slot, m + slot] = self.G[m + slot, slot] = ys
            wg[slot] = float(s.dot(g64))
            wg[m + slot] = float(y.dot(g64))
            self.slots.append(slot)
            self._idx = torch.tensor(self.slots, dtype=torch.long)
            self.gamma = ys / yy
        idx, gamma = self._idx, self.gamma
        coef = torch.zeros(2 * m, dtype=torch.float64)
        if len(self.slots):
            a, b = wg[idx], wg[m + idx]
            k = len(self.slots)
            sy = self.SY[:k, :k]
            R = torch.triu(sy)
            p = torch.linalg.solve_triangular(R, a[:, None], upper=True)[:, 0]
            rhs = torch.diagonal(sy) * p + gamma * (self.YY[:k, :k] @ p) - gamma * b
            top = torch.linalg.solve_triangular(R.T, rhs[:, None], upper=False)[:, 0]
            coef[idx] = top
            coef[m + idx] = -gamma * p
        d = -(g64 * gamma + (W.T @ coef.to(W.dtype)).double())
        self._wd = -(wg * gamma + self.G @ coef)
        self._wg = wg
        return d

    # -- one step ----------------------------------------------------------
    def step(self, fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> StepInfo:
        """Run up to ``max_iter`` iterations; ``fn(x)`` returns (loss tensor, flat grad)."""
        loss_t, g = fn(self.x)
        orig_loss = float(loss_t)
        loss = orig_loss
        evals = 1
        if not torch.isfinite(g).all() or not torch.isfinite(loss_t):
            return StepInfo(orig_loss, evals, False)
        if float(g.abs().max()) <= self.tolerance_grad:
            return StepInfo(orig_loss, evals, True)
        converged = False
        n_iter = 0
        while n_iter < self.max_iter:
            n_iter += 1
            self.n_iter += 1
            g64 = g.double()
            if self.n_iter == 1:
                d = -g64
                self.gamma = 1.0
                self._wg = torch.zeros(2 * self.m, dtype=torch.float64)  # W is still empty
                self._wd = torch.zeros(2 * self.m, dtype=torch.float64)
            else:
                d = self._update_and_direction(g64)
            self.prev_grad = g64
            prev_loss = loss
            if self.n_iter == 1:
                t = min(1.0, 1.0 / float(g.abs().sum())) * self.lr
            else:
                t = self.lr
            gtd = float(g64.dot(d))
            self.d, self.t = d, t
            if gtd > -self.tolerance_change:
                converged = True
                break
            self.x.add_((d * t).to(self.x.dtype))
            ls_evals = 0
            if n_iter != self.max_iter:
                loss_t, g = fn(self.x)
                loss = float(loss_t)
                ls_evals = 1
                if not (torch.isfinite(loss_t) and torch.isfinite(g).all()):
                    evals += ls_evals
                    break
            evals += ls_evals
            if n_iter == self.max_iter:
                break
            if evals >= self.max_eval:
                break
            if float(g.abs().max()) <= self.tolerance_grad:
                converged = True
                break
            if float(d.abs().max()) * t <= self.tolerance_change:
                converged = True
                break
            if abs(loss - prev_loss) < self.tolerance_change:
                converged = True
                break
        return StepInfo(orig_loss, evals, converged)


def _bmv(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``a [R, m, n] @ v [R, n] -> [R, m]`` as one matrix-vector product per row (bmm with one column is several times slower)."""
    return torch.stack([torch.mv(a[r], v[r]) for r in range(a.shape[0])])


class BatchedLBFGS:
    """R independent L-BFGS runs advanced together: :class:`LBFGS`'s algorithm on every row of ``x [R, n]``.

    ``fn(x) -> (loss [R], grad [R, n])`` evaluates all rows at once (one
    vectorised evaluation for R restarts). Each row keeps its own history,
    step length, counters and stopping rules; a row that has stopped within a
    :meth:`step` (converged, or a non-finite value) is frozen until the next
    step while the others go on. The rows share one ring of history slots:
    when a row's pair fails the curvature test (``y.s <= 1e-10``), its entry in
    that slot is zero and masked out of the compact product, so it adds
    nothing; the only difference to R separate :class:`LBFGS` runs is that such
    a skipped pair still ages out the row's oldest pair. With R = 1 the
    iterates equal :class:`LBFGS`'s to float rounding (tested).

    Args:
        x: float32 ``[R, n]``, the starting points; updated in place.
        lr, max_iter, max_eval, tolerance_grad, tolerance_change, history_size,
        history_dtype: as for :class:`LBFGS`, per row.
    """

    def __init__(
        self,
        x: torch.Tensor,
        lr: float = 1.0,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        history_dtype: torch.dtype = torch.float64,
    ) -> None:
        if x.ndim != 2:
            raise ValueError("BatchedLBFGS works on a [restarts, n] matrix")
        self.x = x
        self.lr = float(lr)
        self.max_iter = int(max_iter)
        self.max_eval = int(max_eval) if max_eval is not None else self.max_iter * 5 // 4
        self.tolerance_grad = tolerance_grad
        self.tolerance_change = tolerance_change
        r, n = x.shape
        m = int(history_size)
        self.m = m
        f64 = dict(dtype=torch.float64)
        # rows 0..m-1: steps s, m..2m-1: gradient changes y. Its two products per
        # evaluation read all of it: in float32 that is half the memory traffic
        # (the small Gram matrices stay float64).
        self.W = torch.zeros(r, 2 * m, n, dtype=history_dtype)
        self.G = torch.zeros(r, 2 * m, 2 * m, **f64)  # W W^T per row
        self.SY = torch.zeros(r, m, m, **f64)  # chronological (oldest first)
        self.YY = torch.zeros(r, m, m, **f64)
        self.valid = torch.zeros(r, m, dtype=torch.bool)  # chronological
        self.slots: list[int] = []
        self._idx = torch.zeros(0, dtype=torch.long)
        self.gamma = torch.ones(r, **f64)
        self.n_iter = torch.zeros(r, dtype=torch.long)
        self.d = torch.zeros(r, n, **f64)
        self.t = torch.zeros(r, **f64)
        self.prev_grad = torch.zeros(r, n, **f64)
        self._wg = torch.zeros(r, 2 * m, **f64)
        self._wd = torch.zeros(r, 2 * m, **f64)

    def reset(self, rows: torch.Tensor) -> None:
        """Forget the history of the rows in the bool mask ``rows`` (a restart from a new point)."""
        idx = torch.nonzero(rows).flatten()  # only these rows are written (a retry resets one row of many)
        if not len(idx):
            return
        for name in ("W", "G", "SY", "YY", "_wg", "_wd"):
            getattr(self, name)[idx] = 0
        self.valid[idx] = False
        self.gamma[idx] = 1.0
        self.n_iter[idx] = 0

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the rows with these indices (int64 ``[R']``); ``x`` becomes ``x[rows]`` (a new tensor)."""
        for name in ("x", "W", "G", "SY", "YY", "valid", "gamma", "n_iter", "d", "t", "prev_grad", "_wg", "_wd"):
            setattr(self, name, getattr(self, name)[rows].clone())

    def _direction(self, g64: torch.Tensor, upd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Add each updating row's pair (if it passes the curvature test); return d = -H g, W g, W d for every row."""
        m, W = self.m, self.W
        wg = _bmv(W, g64.to(W.dtype)).double()
        s = self.d * self.t[:, None]
        y = g64 - self.prev_grad
        ys = (y * s).sum(1)
        accept = upd & (ys > 1e-10)
        if bool(accept.any()):
            a = accept.to(torch.float64)
            ws = self._wd * self.t[:, None]  # W s
            wy = wg - self._wg  # W y
            k = len(self.slots)
            if k == m:
                slot = self.slots.pop(0)
                self.SY[:, :-1, :-1] = self.SY[:, 1:, 1:].clone()
                self.YY[:, :-1, :-1] = self.YY[:, 1:, 1:].clone()
                self.valid[:, :-1] = self.valid[:, 1:].clone()
                k -= 1
            else:
                slot = k
            ss, yy = (s * s).sum(1), (y * y).sum(1)
            ysa, yya = ys * a, yy * a
            if k:
                old = self._idx[-k:] if len(self._idx) > k else self._idx
                self.SY[:, :k, k] = wy[:, old] * a[:, None]
                self.SY[:, k, :k] = ws[:, m + old] * a[:, None]
                self.YY[:, :k, k] = self.YY[:, k, :k] = wy[:, m + old] * a[:, None]
            self.SY[:, k, k] = ysa
            self.YY[:, k, k] = yya
            self.valid[:, k] = accept
            W[:, slot] = (s * a[:, None]).to(W.dtype)
            W[:, m + slot] = (y * a[:, None]).to(W.dtype)
            for row, vec in ((slot, ws), (m + slot, wy)):
                v = vec * a[:, None]
                self.G[:, row] = v
                self.G[:, :, row] = v
            self.G[:, slot, slot] = ss * a
            self.G[:, m + slot, m + slot] = yya
            self.G[:, slot, m + slot] = ysa
            self.G[:, m + slot, slot] = ysa
            wg[:, slot] = (s * g64).sum(1) * a
            wg[:, m + slot] = (y * g64).sum(1) * a
            self.slots.append(slot)
            self._idx = torch.tensor(self.slots, dtype=torch.long)
            self.gamma = torch.where(accept, ys / torch.where(accept, yy, torch.ones_like(yy)), self.gamma)
        r = g64.shape[0]
        coef = torch.zeros(r, 2 * m, dtype=torch.float64)
        k = len(self.slots)
        gamma = self.gamma
        if k:
            idx = self._idx
            a_, b_ = wg[:, idx], wg[:, m + idx]
            sy = self.SY[:, :k, :k]
            invalid = (~self.valid[:, :k]).to(torch.float64)
            R = torch.triu(sy) + torch.diag_embed(invalid)  # a masked pair: 1 on the diagonal, zeros elsewhere
            p = torch.linalg.solve_triangular(R, a_[:, :, None], upper=True)[:, :, 0]
            rhs = torch.diagonal(sy, dim1=1, dim2=2) * p + gamma[:, None] * _bmv(self.YY[:, :k, :k], p) - gamma[:, None] * b_
            top = torch.linalg.solve_triangular(R.transpose(1, 2), rhs[:, :, None], upper=False)[:, :, 0]
            coef[:, idx] = top
            coef[:, m + idx] = -gamma[:, None] * p
        d = -(g64 * gamma[:, None] + torch.bmm(coef.to(W.dtype)[:, None, :], W)[:, 0].double())
        wd = -(wg * gamma[:, None] + _bmv(self.G, coef))
        return d, wg, wd

    def step(
        self, fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], rows: torch.Tensor | None = None
    ) -> "BatchedStepInfo":
        """Up to ``max_iter`` iterations of every row (of the bool mask ``rows``; the others stay put).

        ``fn(x)`` returns (loss ``[R]``, grad ``[R, n]``); it is always called on
        all rows (one vectorised evaluation), rows outside ``rows`` are ignored.
        """
        loss_t, g = fn(self.x)
        loss = loss_t.detach().double().clone()
        orig_loss = loss.clone()
        r = loss.shape[0]
        rows = torch.ones(r, dtype=torch.bool) if rows is None else rows.clone()
        evals = rows.long()
        finite = torch.isfinite(loss) & torch.isfinite(g).all(1)
        small = g.abs().amax(1) <= self.tolerance_grad
        converged = rows & finite & small
        active = rows & finite & ~small
        n_iter = 0
        while bool(active.any()) and n_iter < self.max_iter:
            n_iter += 1
            g64 = g.double()
            first = active & (self.n_iter == 0)
            upd = active & ~first
            self.n_iter = self.n_iter + active.long()
            d, wg, wd = self._direction(g64, upd)
            self.gamma = torch.where(first, torch.ones_like(self.gamma), self.gamma)
            d = torch.where(first[:, None], -g64, d)
            wg = torch.where(first[:, None], torch.zeros_like(wg), wg)
            wd = torch.where(first[:, None], torch.zeros_like(wd), wd)
            am = active[:, None]
            self._wg = torch.where(am, wg, self._wg)
            self._wd = torch.where(am, wd, self._wd)
            self.prev_grad = torch.where(am, g64, self.prev_grad)
            prev_loss = loss.clone()
            t = torch.where(first, torch.clamp(1.0 / g64.abs().sum(1), max=1.0) * self.lr, torch.full_like(loss, self.lr))
            gtd = (g64 * d).sum(1)
            self.d = torch.where(am, d, self.d)
            self.t = torch.where(active, t, self.t)
            flat = active & (gtd > -self.tolerance_change)
            converged |= flat
            active &= ~flat
            self.x.add_((self.d * self.t[:, None] * active[:, None]).to(self.x.dtype))
            if n_iter != self.max_iter:
                loss_new, g_new = fn(self.x)
                loss_new = loss_new.detach().double()
                am = active[:, None]
                loss = torch.where(active, loss_new, loss)
                g = torch.where(am, g_new, g)
                evals += active.long()
                bad = active & ~(torch.isfinite(loss_new) & torch.isfinite(g_new).all(1))
                active &= ~bad
            if n_iter == self.max_iter:
                break
            active &= evals < self.max_eval
            done = active & (
                (g.abs().amax(1) <= self.tolerance_grad)
                | ((self.d.abs().amax(1) * self.t) <= self.tolerance_change)
                | ((loss - prev_loss).abs() < self.tolerance_change)
            )
            converged |= done
            active &= ~done
        return BatchedStepInfo(orig_loss, evals, converged)


@dataclass
class BatchedStepInfo:
    """What one :meth:`BatchedLBFGS.step` did, per row: loss at the start ``[R]`` (float64), evaluations and converged ``[R]``."""

    loss: torch.Tensor
    evaluations: torch.Tensor
    converged: torch.Tensor


class _OneRow:
    """:class:`BatchedLBFGS`'s interface over the single-run :class:`LBFGS` (its scalar bookkeeping is cheaper for one row)."""

    def __init__(self, x: torch.Tensor, **options) -> None:
        self.x = x
        self._options = options
        self._opt = LBFGS(x.view(-1), **options)

    def step(self, fn: Callable, rows: torch.Tensor | None = None) -> BatchedStepInfo:
        if rows is not None and not bool(rows[0]):
            loss, _ = fn(self.x)
            return BatchedStepInfo(loss.detach().double().reshape(1), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.bool))

        def one(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            loss, g = fn(v.view(1, -1))
            return loss[0], g[0]

        info = self._opt.step(one)
        return BatchedStepInfo(
            torch.tensor([info.loss], dtype=torch.float64), torch.tensor([info.evaluations]), torch.tensor([info.converged])
        )

    def reset(self, rows: torch.Tensor) -> None:
        if bool(rows[0]):
            self._opt = LBFGS(self.x.view(-1), **self._options)

    def keep(self, rows: torch.Tensor) -> None:
        if rows.tolist() != [0]:
            raise ValueError("a single run has only row 0")


def batched_lbfgs(x: torch.Tensor, **options) -> "BatchedLBFGS | _OneRow":
    """:class:`BatchedLBFGS` for ``x [R, n]``; for R = 1 the same interface over :class:`LBFGS` (same iterates, less overhead)."""
    if x.ndim == 2 and x.shape[0] == 1:
        return _OneRow(x, **options)
    return BatchedLBFGS(x, **options)

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["LBFGS", "StepInfo"]


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
        # Ring buffer W (float64): rows 0..m-1 hold the steps s, rows m..2m-1 the
        # gradient changes y; G = W W^T is kept up to date in the same ring
        # order. Unused rows are zero. Each iteration reads W only twice:
        # W g_new (from which W y = W g_new - W g_old) and W^T coef (the step);
        # W s follows from G, because s = t d and d = -(gamma g + W^T coef).
        self.W = torch.zeros(2 * m, n, dtype=torch.float64)
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
        wg = W @ g64  # with the W that produced the last direction
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
            W[slot] = s
            W[m + slot] = y
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
        d = -(g64 * gamma + W.T @ coef)
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

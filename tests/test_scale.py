"""gleak_edu.scale.run_cells: cells in this process, on a local Ray, and what happens when one fails."""

import operator

import pytest

from gleak_edu import scale


def _collect():
    got = {}
    return got, lambda item, result: got.__setitem__(item, result)


class _Bar:
    def __init__(self):
        self.n, self.postfix = 0, ""

    def update(self):
        self.n += 1

    def set_postfix_str(self, text, refresh=True):
        self.postfix = text


def test_in_process_runs_every_cell_in_order_and_needs_no_ray(monkeypatch):
    monkeypatch.setattr(scale, "_import_ray", lambda: pytest.fail("workers=1 must not import Ray"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    got, store = _collect()
    bar = _Bar()
    where = scale.run_cells(operator.truediv, [(6,), (3,)], store, shared=3, progress=bar)
    assert where == "in-process" and got == {(6,): 2.0, (3,): 1.0} and bar.n == 2


def test_no_ray_with_workers_falls_back_with_a_warning(monkeypatch):
    def missing():
        raise ImportError("running cells on Ray needs ray==2.55.1")

    monkeypatch.setattr(scale, "_import_ray", missing)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    got, store = _collect()
    with pytest.warns(UserWarning, match="in this process instead"):
        assert scale.run_cells(operator.truediv, [(6,)], store, workers=2, shared=3) == "in-process"
    assert got == {(6,): 2.0}
    with pytest.raises(ImportError, match="ray=="):  # a cluster was asked for: no silent fallback
        scale.run_cells(operator.truediv, [(6,)], store, address="10.0.0.1:6379", shared=3)


def test_bad_workers_are_named():
    with pytest.raises(ValueError, match="workers"):
        scale.run_cells(operator.truediv, [(1,)], lambda *a: None, workers=0)


def test_ray_address_comes_from_the_argument_or_the_environment(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert scale.ray_address() == "10.0.0.5:6379" and scale.ray_address("h:1") == "h:1"
    monkeypatch.delenv("RAY_ADDRESS")
    assert scale.ray_address() is None


def test_local_ray_stores_every_result_and_reraises_a_cell_error(monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    got, store = _collect()
    bar = _Bar()
    where = scale.run_cells(operator.truediv, [(6,), (3,), (9,)], store, workers=2, shared=3, progress=bar)
    assert where == "local Ray (2 CPUs)" and got == {(6,): 2.0, (3,): 1.0, (9,): 3.0} and bar.n == 3
    assert bar.postfix == "0 running, 0 waiting"  # what is left after the last cell: running and waiting apart
    with pytest.raises(ZeroDivisionError):
        scale.run_cells(operator.truediv, [(6,), (3,)], store, workers=2, shared=0)
    import ray

    assert not ray.is_initialized()  # the Ray this call started is shut down, also after an error


def test_side_by_side_keeps_order_threads_and_errors():
    import threading

    import torch

    before = torch.get_num_threads()
    seen = set()

    def job(k):
        seen.add(threading.get_ident())
        assert torch.get_num_threads() == 1
        return k * k

    assert scale.side_by_side([lambda k=k: job(k) for k in range(6)], workers=2) == [0, 1, 4, 9, 16, 25]
    assert torch.get_num_threads() == before
    assert scale.side_by_side([lambda: 7], workers=1) == [7]
    with pytest.raises(ZeroDivisionError):
        scale.side_by_side([lambda: 1, lambda: 1 / 0], workers=2)
    with pytest.raises(ValueError, match="workers"):
        scale.side_by_side([lambda: 1], workers=0)


def test_two_grnn_runs_side_by_side_give_the_numbers_of_one_after_the_other():
    """GRNN seeds torch's global random state for its generator: side by side, the runs must not mix seeds."""
    import copy

    import torch

    from gleak_edu import fl, models
    from gleak_edu.attacks import grnn

    victim = models.build_model("lenet-zhu", (3, 16, 16), num_classes=10, seed=0)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    shared = fl.client_gradient(victim, x, torch.tensor([3]))

    def run(seed):
        return grnn(copy.deepcopy(victim), shared, input_shape=x.shape, num_classes=10, iterations=5, seed=seed)

    alone = [run(s).reconstruction for s in (1, 2, 3, 4)]
    together = [r.reconstruction for r in scale.side_by_side([lambda s=s: run(s) for s in (1, 2, 3, 4)], workers=2)]
    for a, b in zip(alone, together):
        assert torch.equal(a, b)

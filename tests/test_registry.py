"""One attack interface: the registry drives one test over every attack, and the plain DLG agrees with the fast one."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from gleak_edu import attacks, fl, models, text
from gleak_edu.attacks import ATTACKS, AttackOptions, AttackResult, AttackState, TextAttackResult, TextState
from gleak_edu.precode import add_precode

# Small budgets: this test checks the interface, not the attacks' quality (their own tests do).
BUDGET = {"dlg": 4, "idlg": 4, "ig": 6, "grnn": 6, "bypass": 6, "text": 6}


def _problem(key: str):
    """A model, its shared gradient, the call's keywords and the truth for attack ``key``."""
    torch.manual_seed(0)
    if key == "text":
        vocab = text.zen_vocabulary()
        model = models.TinyTransformer(len(vocab), 19)
        tokens = vocab.encode("beautiful is better than ugly")
        label = torch.tensor([3])
        shared = fl.client_text_gradient(model, tokens, label)
        return model, shared, {"vocab": vocab}, (tokens, label), vocab
    x = torch.rand(1, 1, 12, 12)
    y = torch.tensor([2])
    if key in ("bypass", "analytic"):
        model = models.build_model("mlp", (1, 12, 12), 5, "sigmoid", seed=0)
        if key == "bypass":
            model = add_precode(model, bottleneck=16, seed=0)
    else:
        model = models.build_model("lenet-zhu", (1, 12, 12), 5, "sigmoid", seed=0)
    model.train()
    shared = fl.client_gradient(model, x, y)
    return model, shared, {"input_shape": (1, 1, 12, 12), "num_classes": 5}, (x, y), None


def _call(key, model, shared, kwargs, truth, callback=None):
    spec = ATTACKS[key]
    extra = dict(kwargs)
    if key == "text":
        vocab = extra.pop("vocab")
        return spec.function(model, shared, vocab, iterations=BUDGET[key], truth=truth, callback=callback,
                             options=AttackOptions(callback_every=2))
    if spec.default_iterations is not None:
        extra["iterations"] = BUDGET[key]
    return spec.run(model, shared, truth=truth, callback=callback, options=AttackOptions(callback_every=2), **extra)


def test_the_registry_lists_every_public_attack_once():
    assert list(ATTACKS) == ["dlg", "idlg", "ig", "grnn", "bypass", "analytic", "text"]
    assert attacks.IMAGE_ATTACKS == ("dlg", "idlg", "ig", "grnn", "bypass", "analytic")
    public = {attacks.dlg, attacks.idlg, attacks.inverting_gradients, attacks.grnn, attacks.precode_bypass,
              attacks.analytic_recovery, attacks.text_recovery}
    assert {s.function for s in ATTACKS.values()} == public
    with pytest.raises(ValueError, match="unknown attack 'dgl'.*dlg, idlg"):
        attacks.attack_spec("dgl")


def test_defaults_come_from_the_functions():
    assert ATTACKS["dlg"].default_iterations == inspect.signature(attacks.dlg).parameters["iterations"].default == 300
    assert ATTACKS["grnn"].defaults["lr"] == 1e-4
    assert ATTACKS["analytic"].default_iterations is None


@pytest.mark.parametrize("key", list(ATTACKS))
def test_every_attack_returns_one_result_type_with_history_and_callback(key):
    model, shared, kwargs, truth, _ = _problem(key)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    states: list[AttackState] = []
    result = _call(key, model, shared, kwargs, truth, callback=states.append)
    spec = ATTACKS[key]
    assert isinstance(result, AttackResult)
    assert isinstance(result, TextAttackResult) == (key == "text")
    # fields the attack does not produce are None, never filled from the truth
    if spec.recovers_labels:
        assert result.labels is not None and result.labels.dtype == torch.int64 and result.labels.numel() == 1
        assert result.loss is not None and math.isfinite(result.loss)
    else:
        assert result.labels is None and result.loss is None
        assert result.metrics["label_accuracy"] is None
    if spec.modality == "image":
        assert result.reconstruction.shape == truth[0].shape and result.reconstruction.dtype == torch.float32
        assert 0 <= float(result.reconstruction.min()) and float(result.reconstruction.max()) <= 1
        assert {"psnr_mean", "ssim_mean", "label_accuracy"} <= set(result.metrics)
    else:
        assert result.reconstruction.dtype == torch.int64 and result.reconstruction.shape[0] == 1
        assert {"set_recall", "order_accuracy", "label_accuracy"} <= set(result.metrics)
    # history: one shape for every attack
    assert result.history and result.iterations >= 1 and result.evaluations >= 1
    for entry in result.history:
        assert {"iteration", "evaluations", "seconds", "loss"} <= set(entry)
    assert [e["iteration"] for e in result.history] == sorted(e["iteration"] for e in result.history)
    # callback: AttackState (TextState for text), the last one marked done, none after it
    assert states and all(isinstance(s, AttackState) for s in states)
    assert all(isinstance(s, TextState) for s in states) == (key == "text")
    assert states[-1].done and not any(s.done for s in states[:-1])
    assert (states[-1].labels is None) == (not spec.recovers_labels)
    if spec.default_iterations is not None:
        assert len(states) >= 2  # every options.callback_every = 2 iterations, and at the end
    # a result prints (a notebook cell's last line shows it)
    assert type(result).__name__ in repr(result)
    # the model comes back as it went in
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("key", [k for k, s in ATTACKS.items() if not s.takes_restarts])
def test_attacks_without_restarts_refuse_them(key):
    model, shared, kwargs, truth, _ = _problem(key)
    spec = ATTACKS[key]
    with pytest.raises(ValueError, match="no restarts"):
        spec.run(model, shared, options=AttackOptions(restarts=2), **kwargs)


@pytest.mark.parametrize("key", list(ATTACKS))
def test_a_raising_callback_keeps_the_result_for_every_attack(key):
    model, shared, kwargs, truth, _ = _problem(key)

    def boom(state):
        raise RuntimeError("view broke")

    with pytest.raises(attacks.CallbackError) as info:
        _call(key, model, shared, kwargs, truth, callback=boom)
    assert isinstance(info.value.result, AttackResult)
    assert "RuntimeError: view broke" in info.value.result.error


def test_options_and_truth_are_checked():
    model, shared, kwargs, truth, _ = _problem("dlg")
    with pytest.raises(TypeError, match="AttackOptions"):
        attacks.dlg(model, shared, options={"restarts": 2}, **kwargs)
    with pytest.raises(ValueError, match="callback_every"):
        attacks.dlg(model, shared, iterations=2, options=AttackOptions(callback_every=0), **kwargs)
    with pytest.raises(ValueError, match="truth has 2 labels"):
        attacks.dlg(model, shared, iterations=2, truth=(truth[0], torch.tensor([1, 2])), **kwargs)
    with pytest.raises(ValueError, match="truth must be"):
        attacks.dlg(model, shared, iterations=2, truth="photo.png", **kwargs)


def test_attack_signatures_stay_readable():
    """About ten parameters per public attack; engine settings live in AttackOptions."""
    for spec in ATTACKS.values():
        params = inspect.signature(spec.function).parameters
        assert len(params) <= 12, (spec.key, list(params))
        assert "options" in params and "callback" in params and "truth" in params
        assert not {"restarts", "retries", "progress", "num_threads", "callback_every", "true_labels"} & set(params)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_plain_dlg_and_the_fast_dlg_agree_on_the_first_iterations(seed):
    torch.manual_seed(seed)
    model = models.build_model("lenet-zhu", (1, 12, 12), 5, "sigmoid", seed=seed)
    x, y = torch.rand(1, 1, 12, 12), torch.tensor([seed % 5])
    shared = fl.client_gradient(model, x, y)
    kw = dict(input_shape=(1, 1, 12, 12), num_classes=5, iterations=3, seed=seed)
    images, labels, losses = attacks.reference_dlg(model, shared, **kw)
    fast = attacks.dlg(model, shared, options=AttackOptions(retries=0), **kw)
    fast_losses = [e["loss"] for e in fast.history]
    # the same objective at the same start: equal up to float rounding
    assert losses[0] == pytest.approx(fast_losses[0], rel=1e-4)
    # the same first L-BFGS iteration (up to 20 evaluations): the same loss after it, up to float32
    # rounding amplified by L-BFGS (measured within 0.1 % here; a few per cent on 32x32 photos)
    assert losses[1] == pytest.approx(fast_losses[1], rel=0.02)
    # after that, float32 rounding (the fast engine's fused kernels) makes the paths drift
    # apart slowly: the third loss agrees within a factor of 3, both below the start
    assert len(losses) == len(fast_losses) == 3
    assert abs(math.log10(losses[2] / fast_losses[2])) < 0.5
    assert max(losses[2], fast_losses[2]) < losses[0]
    assert images.shape == x.shape and labels.shape == (1,)
    assert all(p.grad is None for p in model.parameters())

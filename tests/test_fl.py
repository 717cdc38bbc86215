"""What a client shares (gleak_edu.fl) and the refusal of malformed shared gradients."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from gleak_edu import attacks, fl, models
from gleak_edu.fl import SharedGradientError

NUM_CLASSES = 100


# --------------------------------------------------------------------------- client_gradient


@pytest.mark.parametrize("name", ["lenet-zhu", "mlp"])
def test_client_gradient_names_shapes_order_dtype(name, photo_set):
    x, y = photo_set.batch([0, 3])
    model = models.build_model(name, seed=0)
    shared = fl.client_gradient(model, x, y)
    assert isinstance(shared, OrderedDict)
    params = list(model.named_parameters())
    assert list(shared.keys()) == [n for n, _ in params]
    for (n, p), g in zip(params, shared.values()):
        assert tuple(g.shape) == tuple(p.shape), n
        assert g.dtype == torch.float32, n
        assert not g.requires_grad, n
        assert torch.isfinite(g).all(), n
    fl.check_shared(model, shared)  # what the client sends passes the check


def test_client_gradient_is_the_cross_entropy_gradient(model_and_shared):
    model, x, y, shared = model_and_shared
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    for n, p in model.named_parameters():
        assert torch.allclose(shared[n], p.grad, rtol=1e-5, atol=1e-8), n
        assert shared[n].data_ptr() != p.grad.data_ptr()  # a copy, not the live buffer


def test_client_gradient_custom_loss(model_and_shared):
    model, x, y, shared = model_and_shared
    doubled = fl.client_gradient(model, x, y, loss_fn=lambda out, t: 2 * F.cross_entropy(out, t))
    for n in shared:
        assert torch.allclose(doubled[n], 2 * shared[n], rtol=1e-5, atol=1e-8), n


def test_client_gradient_does_not_touch_model_grads(model_and_shared):
    model, x, y, _ = model_and_shared
    fl.client_gradient(model, x, y)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda x, y: (x * 2.0, y), id="pixels-above-1"),
        pytest.param(lambda x, y: (x - 0.5, y), id="pixels-below-0"),
        pytest.param(lambda x, y: (x[0], y), id="three-dims"),
        pytest.param(lambda x, y: (x[None], y), id="five-dims"),
        pytest.param(lambda x, y: (x, torch.tensor([NUM_CLASSES])), id="label-equals-classes"),
        pytest.param(lambda x, y: (x, torch.tensor([NUM_CLASSES + 50])), id="label-above-classes"),
        pytest.param(lambda x, y: (x, torch.tensor([-1])), id="negative-label"),
        pytest.param(lambda x, y: (x, torch.tensor([0, 1])), id="label-batch-mismatch"),
        pytest.param(lambda x, y: (x[:, :1], y), id="wrong-channels"),
        pytest.param(lambda x, y: (x.clone().index_put_((torch.tensor([0]),), torch.tensor(float("nan"))), y), id="nan-pixels"),
    ],
)
def test_client_gradient_bad_batch_is_value_error(transform, model_and_shared):
    model, x, y, _ = model_and_shared
    bx, by = transform(x, y)
    with pytest.raises(ValueError):
        fl.client_gradient(model, bx, by)


def test_client_gradient_label_message_names_the_range(model_and_shared):
    model, x, _, _ = model_and_shared
    with pytest.raises(ValueError, match=f"0..{NUM_CLASSES - 1}"):
        fl.client_gradient(model, x, torch.tensor([NUM_CLASSES]))


def test_client_gradient_wrong_types_are_type_errors(model_and_shared):
    model, x, y, _ = model_and_shared
    with pytest.raises(TypeError):
        fl.client_gradient(model, (x * 255).to(torch.uint8), y)
    with pytest.raises(TypeError):
        fl.client_gradient(model, x, y.float())


# --------------------------------------------------------------------------- check_shared


def test_shared_gradient_error_is_a_value_error():
    assert issubclass(SharedGradientError, ValueError)


def _attack_calls(model, x):
    """Every public entry point that must validate the shared gradient."""
    shape = tuple(x.shape)
    return {
        "check_shared": lambda s: fl.check_shared(model, s),
        "dlg": lambda s: attacks.dlg(model, s, input_shape=shape, num_classes=NUM_CLASSES, iterations=1),
        "idlg": lambda s: attacks.idlg(model, s, input_shape=shape, num_classes=NUM_CLASSES, iterations=1),
        "idlg_label": lambda s: attacks.idlg_label(model, s),
    }


def _missing(shared):
    del shared["features.2.weight"]
    return "features.2.weight"


def _wrong_shape(shared):
    shared["features.4.bias"] = torch.zeros(13)
    return "features.4.bias"


def _transposed(shared):
    shared["classifier.weight"] = shared["classifier.weight"].T.contiguous()
    return "classifier.weight"


def _extra(shared):
    shared["decoder.weight"] = torch.zeros(3)
    return "decoder.weight"


def _nan(shared):
    shared["features.0.bias"] = shared["features.0.bias"].clone()
    shared["features.0.bias"][3] = float("nan")
    return "features.0.bias"


def _inf(shared):
    shared["classifier.weight"] = shared["classifier.weight"].clone()
    shared["classifier.weight"][5, 7] = float("inf")
    return "classifier.weight"


def _neg_inf(shared):
    shared["features.2.bias"] = shared["features.2.bias"].clone()
    shared["features.2.bias"][0] = -float("inf")
    return "features.2.bias"


def _first_of_two(shared):
    # Two problems: the first in parameter order must be the one named.
    shared["features.2.weight"] = torch.zeros(1)
    del shared["classifier.bias"]
    return "features.2.weight"


@pytest.mark.parametrize(
    "corrupt",
    [_missing, _wrong_shape, _transposed, _extra, _nan, _inf, _neg_inf, _first_of_two],
    ids=lambda f: f.__name__.strip("_"),
)
@pytest.mark.parametrize("entry", ["check_shared", "dlg", "idlg", "idlg_label"])
def test_bad_shared_gradient_is_refused_naming_the_parameter(corrupt, entry, model_and_shared):
    model, x, _, shared = model_and_shared
    bad = OrderedDict(shared)
    name = corrupt(bad)
    with pytest.raises(SharedGradientError) as err:
        _attack_calls(model, x)[entry](bad)
    assert name in str(err.value)
    if corrupt in (_nan, _inf, _neg_inf):
        assert "NaN or inf" in str(err.value)


def test_first_mismatch_in_parameter_order_is_named(model_and_shared):
    model, _, _, shared = model_and_shared
    bad = OrderedDict(shared)
    bad["classifier.weight"] = torch.zeros(2, 2)
    bad["features.0.weight"] = torch.zeros(2, 2)
    with pytest.raises(SharedGradientError) as err:
        fl.check_shared(model, bad)
    assert "features.0.weight" in str(err.value) and "classifier.weight" not in str(err.value)


def test_check_shared_other_malformed_inputs(model_and_shared):
    model, _, _, shared = model_and_shared
    with pytest.raises(SharedGradientError):
        fl.check_shared(model, list(shared.values()))
    bad = OrderedDict(shared)
    bad["features.0.bias"] = bad["features.0.bias"].tolist()
    with pytest.raises(SharedGradientError, match="features.0.bias"):
        fl.check_shared(model, bad)
    # A gradient of another model (different input size) is refused.
    other = models.build_model("lenet-zhu", input_shape=(1, 28, 28), seed=1)
    with pytest.raises(SharedGradientError):
        fl.check_shared(other, shared)


def test_check_shared_accepts_a_plain_dict(model_and_shared):
    model, _, _, shared = model_and_shared
    fl.check_shared(model, dict(shared))

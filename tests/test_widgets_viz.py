"""Live views, slider panels and static figures, headless (gleak_edu.widgets, gleak_edu.viz)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure

from gleak_edu import metrics, viz, widgets
from gleak_edu.attacks import AttackOptions, AttackResult, AttackState

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _state(estimate, labels, psnr=None, done=False, iteration=5):
    return AttackState(
        attack="DLG", iteration=iteration, evaluations=4 * iteration, seconds=0.5, loss=1.25,
        estimate=estimate, labels=labels, psnr=psnr, done=done,
    )


# --------------------------------------------------------------------------- LiveView


def test_live_view_updates_and_computes_psnr(photo0):
    x, y = photo0
    view = widgets.LiveView(original=x, title="test <view>")
    assert view.updates == 0 and view.last_psnr is None and view.widget is not None
    estimate = (x + 0.05).clamp(0, 1)
    view(_state(estimate, y))
    assert view.updates == 1
    assert view.last_psnr == pytest.approx(float(metrics.psnr(estimate, x).mean()))
    assert view.last_state.iteration == 5
    assert view.image.value[:8] == PNG_MAGIC  # the reconstruction was drawn
    assert "PSNR" in view.readout.value and "iteration 5" in view.readout.value
    # A PSNR supplied by the attack is shown as is.
    view(_state(torch.full_like(x, 0.5), y, psnr=12.5, done=True, iteration=10))
    assert view.updates == 2 and view.last_psnr == 12.5
    assert "done" in view.readout.value


def test_live_view_without_original(photo0):
    x, y = photo0
    view = widgets.LiveView()
    view(_state(x, y))
    assert view.updates == 1 and view.last_psnr is None
    assert "PSNR" not in view.readout.value


def test_live_view_of_an_attack_without_labels_or_loss(photo0):
    """Analytic recovery's state has no label and no matching loss: the view says so instead of failing."""
    x, _ = photo0
    view = widgets.LiveView(original=x)
    view(AttackState(attack="analytic", iteration=1, evaluations=1, seconds=0.0, loss=None, estimate=x, labels=None,
                     done=True))
    assert view.updates == 1 and "no label recovered" in view.readout.value and "loss" not in view.readout.value


def test_live_view_as_attack_callback(model_and_shared):
    from gleak_edu import attacks

    model, x, y, shared = model_and_shared
    view = widgets.LiveView(original=x)
    result = attacks.idlg(
        model, shared, input_shape=tuple(x.shape), num_classes=100, iterations=4, truth=(x, y), callback=view,
        options=AttackOptions(callback_every=2),
    )
    assert view.updates == 3  # iterations 2 and 4, then the final call
    assert view.last_state.done
    assert view.last_psnr == pytest.approx(result.metrics["psnr_mean"])


# --------------------------------------------------------------------------- DefensePanel


def test_defense_panel_builds_headless_and_reruns(photo0, make_lenet):
    x, y = photo0
    model = make_lenet(seed=1)
    panel = widgets.DefensePanel(model, x, y, iterations=3)
    # interactive_output ran the handler once with the sliders' defaults.
    assert panel.last is not None and isinstance(panel.last, AttackResult)
    assert list(panel.results) == [(0.0, 0.0)]
    assert panel.results[(0.0, 0.0)] is panel.last
    assert panel.last.iterations <= 3
    assert panel.view.updates >= 1
    assert "PSNR" in panel.summary.value
    assert panel.noise.value == widgets.NOISE_LEVELS[0]
    assert panel.widget is not None

    result = panel.run(0.1, 0.0)
    assert isinstance(result, AttackResult)
    assert panel.last is result and panel.results[(0.1, 0.0)] is result
    assert set(panel.results) == {(0.0, 0.0), (0.1, 0.0)}
    assert result.reconstruction.shape == x.shape and result.metrics
    assert "noise std = 0.1 (absolute)" in panel.summary.value


def test_defense_panel_defended_gradient(photo0, make_lenet):
    x, y = photo0
    panel = widgets.DefensePanel(make_lenet(seed=2), x, y, attack="dlg", iterations=1)
    assert panel.defended(0.0, 0.0) is panel.shared
    pruned = panel.defended(0.0, 0.5)
    for n, g in pruned.items():
        assert int((g == 0).sum()) == int(0.5 * g.numel()), n
    noisy = panel.defended(0.01, 0.0)
    assert all(not torch.equal(noisy[n], panel.shared[n]) for n in noisy)


def test_defense_panel_rejects_bad_input(photo0, make_lenet):
    x, y = photo0
    model = make_lenet(seed=1)
    with pytest.raises(ValueError):
        widgets.DefensePanel(model, x, y, attack="grnn")
    with pytest.raises(ValueError):
        widgets.DefensePanel(model, x * 3, y)


# --------------------------------------------------------------------------- viz


def test_compare_figure(photo_set):
    orig = photo_set.images[:1]
    rec = (orig + 0.1).clamp(0, 1)
    fig = viz.compare_figure(orig, rec, title="DLG", caption="photo: NASA")
    assert isinstance(fig, Figure)
    titles = [ax.get_title() for ax in fig.axes]
    assert "original" in titles
    expected = f"{float(metrics.psnr(rec, orig)[0]):.1f} dB"
    assert sum(t.endswith(expected) for t in titles) == 1  # the reconstruction is titled with its PSNR
    plt.close(fig)
    # A batch: two rows, one PSNR title per reconstruction.
    fig = viz.compare_figure(photo_set.images[:3], photo_set.images[:3])
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    assert sum(t.get_title().endswith("dB") for t in fig.axes) == 3
    plt.close(fig)


def test_show_images(photo_set):
    fig = viz.show_images(photo_set.images[:5], titles=photo_set.item_names[:5], ncols=3, suptitle="photos")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 6  # 2 rows x 3 columns
    assert [ax.get_title() for ax in fig.axes[:5]] == photo_set.item_names[:5]
    plt.close(fig)
    fig = viz.show_images(torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(0)))  # one grayscale [C, H, W]
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    plt.close(fig)


def test_history_figure():
    hist = [
        {"iteration": i, "evaluations": 20 * i, "seconds": 0.1 * i, "loss": 10.0 / i, "psnr": 5.0 + 3 * i}
        for i in range(1, 11)
    ]
    result = AttackResult("DLG", torch.zeros(1, 3, 4, 4), torch.zeros(1, dtype=torch.int64), 1.0, 10, 200, 1.0, history=hist)
    for key, x in [("psnr", "seconds"), ("loss", "evaluations"), ("psnr", "iteration")]:
        fig = viz.history_figure({"run A": result, "run B": hist}, key=key, x=x)
        assert isinstance(fig, Figure)
        ax = fig.axes[0]
        assert len(ax.get_lines()) >= 2
        xs, ys = ax.get_lines()[0].get_data()
        assert list(xs) == [h[x] for h in hist] and list(ys) == [h[key] for h in hist]
        if key == "loss":
            assert ax.get_yscale() == "log"
        plt.close(fig)


def test_threat_model_figure():
    fig = viz.threat_model_figure()
    assert isinstance(fig, Figure)
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "server" in texts and "client" in texts
    plt.close(fig)


def test_png_bytes_and_to_numpy_image(photo_set):
    img = photo_set.images[0]
    data = viz.png_bytes(img, scale=3)
    assert data[:8] == PNG_MAGIC
    arr = viz.to_numpy_image(img)
    assert arr.shape == (32, 32, 3) and arr.min() >= 0 and arr.max() <= 1
    assert viz.to_numpy_image(torch.rand(1, 1, 8, 8)).shape == (8, 8)
    with pytest.raises(ValueError):
        viz.to_numpy_image(torch.rand(2, 3, 8, 8))


def test_grnn_panel_runs_headless_and_on_release(photo_set):
    from gleak_edu import models, widgets

    panel = widgets.GRNNPanel(
        lambda: models.build_model("lenet5", (3, 32, 32), 100, seed=0),
        photo_set.images, photo_set.labels, num_classes=100, iterations=5, max_batch=4,
    )
    assert panel.last is not None and (1, 0.0) in panel.results  # the handler ran once with the defaults
    result = panel.run(3, 0.1)
    assert result.reconstruction.shape == (3, 3, 32, 32)
    assert (3, 0.1) in panel.results and "batch 3" in panel.summary.value
    with pytest.raises(ValueError, match="max_batch"):
        widgets.GRNNPanel(lambda: None, photo_set.images, photo_set.labels, num_classes=100, max_batch=99)


def test_layer_panel_and_precode_figures(photo_set):
    from gleak_edu import fl, models
    from gleak_edu.defenses import add_precode, deterministic_parameters, gradient_stochasticity

    x, y = photo_set.batch(0)
    model = add_precode(models.build_model("mlp", (3, 32, 32), 100, seed=0, init="pytorch"))
    torch.manual_seed(0)
    shared = fl.client_gradient(model, x, y)
    keep = deterministic_parameters(model)
    panel = widgets.LayerPanel(model, shared, x, default=keep, iterations=5)
    assert panel.last is not None and tuple(keep) in panel.results  # ran once with the default choice
    assert model.training  # the attack restored the victim's mode
    assert panel.run([]) is None and "at least one" in panel.summary.value
    result = panel.run(["classifier.1.weight"])
    assert result.reconstruction.shape == x.shape and ("classifier.1.weight",) in panel.results
    with pytest.raises(ValueError, match="not parameters"):
        widgets.LayerPanel(model, shared, x, default=["nope"], iterations=1)
    for fig in (viz.precode_figure(), viz.stochasticity_figure(gradient_stochasticity(model, x, y), keep)):
        assert isinstance(fig, Figure)
        plt.close(fig)


# --------------------------------------------------------------------------- issue 15: units in every label


def test_every_noise_slider_says_its_unit(monkeypatch, photo_set, make_lenet):
    """Absolute std where the panel adds noise of a given std; multiplier σ (std = σ·C) where it clips first."""
    from types import SimpleNamespace

    from gleak_edu import arena, models, text
    from gleak_edu.defenses import add_precode

    for cls, handler in ((widgets.DefensePanel, "run"), (widgets.GRNNPanel, "run"), (widgets.PPPPanel, "run"),
                         (widgets.TextNoisePanel, "run"), (widgets.DPSchedulePanel, "run"), (widgets.ArenaPanel, "render")):
        monkeypatch.setattr(cls, handler, lambda self, *args, **kwargs: None)  # only the sliders are checked here
    x, y = photo_set.batch(0)
    std, multiplier = "noise std (absolute)", "noise multiplier σ (std = σ·C)"
    assert (widgets.NOISE_STD_LABEL, widgets.NOISE_MULTIPLIER_LABEL) == (std, multiplier)

    assert widgets.DefensePanel(make_lenet(seed=1), x, y).noise.description == std
    grnn_panel = widgets.GRNNPanel(lambda: models.build_model("lenet5", (3, 32, 32), 100, seed=0),
                                   photo_set.images, photo_set.labels, num_classes=100)
    assert grnn_panel.noise.description == std
    plain = models.build_model("mlp", (3, 32, 32), 100, seed=0, init="pytorch")
    pre = add_precode(models.build_model("mlp", (3, 32, 32), 100, seed=0, init="pytorch"))
    assert widgets.PPPPanel(plain, pre, x, y).noise.description == multiplier
    vocab = text.zen_vocabulary()
    transformer = models.TinyTransformer(len(vocab), 19)
    assert widgets.TextNoisePanel(transformer, vocab, "Now is better than never.").noise.description == multiplier
    g = torch.Generator().manual_seed(0)
    train = (torch.rand(128, 1, 28, 28, generator=g), torch.randint(0, 10, (128,), generator=g))
    dp_panel = widgets.DPSchedulePanel(lambda: models.MLP((1, 28, 28), 10, (16,), "tanh"), train, train,
                                       train[0][:1], train[1][:1])
    assert multiplier in dp_panel.start.description and multiplier in dp_panel.end.description
    settings = arena.ArenaSettings()
    arena_panel = widgets.ArenaPanel(SimpleNamespace(levels=settings.noise_levels, settings=settings))
    label = arena_panel.noise.description
    assert label == viz.arena_level_label(settings)
    for d in arena.NOISY:  # every noisy defense is named with the unit the arena declares for its level
        assert arena.DEFENSE_NAMES[d] in label and arena.KNOB_UNITS[arena.DEFENSE_LEVEL[d]] in label


def test_training_curves_take_train_state():
    from gleak_edu.training import TrainState

    curves = widgets.TrainingCurves(every=2)
    callback = curves.step_callback("fixed")
    for step in range(4):
        callback(TrainState(step=step, epoch=0, loss=1.0 / (step + 1), noise_multiplier=1.0, max_grad_norm=1.0, model=None))
    assert curves.curves == {"fixed": [1.0, 0.5, 1 / 3, 0.25]}
    assert curves.image.value[:8] == PNG_MAGIC  # drawn at step 2 and 4


def test_figure_axes_say_the_noise_unit():
    fig = viz.schedules_figure({"linear": [3.0, 2.0, 1.0]})
    assert fig.axes[0].get_ylabel() == "noise multiplier σ (std = σ·C)"
    plt.close(fig)
    from gleak_edu import arena

    label = viz.arena_level_label(arena.ArenaSettings(max_grad_norm=2.0))
    assert "noise std (absolute) for noise" in label and "noise multiplier σ (std = σ·C) at C = 2 for PPP, DP fixed" in label
    # DP dynamic's bound is each example's own: its level is not a std of σ·C
    assert "for DP dynamic" in label and "(×dynamic C" in label and "DP fixed, DP dynamic" not in label


def test_widgets_and_viz_import_the_package_only_at_the_top():
    """Layers import downward at module level (issue 15): no function-level import of a gleak_edu module."""
    import ast
    import inspect

    for module in (widgets, viz):
        tree = ast.parse(inspect.getsource(module))
        inner = []
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gleak_edu"):
                        inner.append(f"{fn.name}: from {node.module}")
                    elif isinstance(node, ast.Import) and any(a.name.startswith("gleak_edu") for a in node.names):
                        inner.append(f"{fn.name}: import {node.names[0].name}")
        assert inner == [], f"{module.__name__}: {inner}"

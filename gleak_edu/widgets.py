"""Live views and slider panels for the notebooks.

Both degrade gracefully: without a Jupyter front end (nbval, scripts) the
widgets still build and their handlers still run once with the defaults, so a
notebook executes headlessly; without ipywidgets installed, :class:`LiveView`
prints a line per update instead.

Every noise slider says its unit: ``"noise std (absolute)"`` (:data:`NOISE_STD_LABEL`:
the standard deviation of the Gaussian noise added to each shared entry) or
``"noise multiplier σ (std = σ·C)"`` (:data:`NOISE_MULTIPLIER_LABEL`: relative to
the clipping bound C, ``max_grad_norm``). Attacks are run through the registry
(:data:`gleak_edu.attacks.ATTACKS`); live views receive an :class:`AttackState`
(:class:`TextState` for text), training curves a :class:`gleak_edu.training.TrainState`.
"""

from __future__ import annotations

import html
import math
from typing import Sequence

import torch
from torch import nn

from gleak_edu import arena, data, fl, flower, metrics, models, viz
from gleak_edu.attacks import (
    ATTACKS,
    AttackInterrupted,
    AttackOptions,
    AttackResult,
    AttackState,
    CallbackError,
    TextState,
    fedavg_unrolled,
    inverting_gradients,
)
from gleak_edu.defenses import (
    SCHEDULES,
    AttackPlan,
    clip_and_noise,
    epsilon,
    epsilon_for_steps,
    gaussian_noise,
    history_from_noise_multipliers,
    noise_schedule,
    perturbation_scope,
    perturbed_gradient,
    prune_gradients,
    steps_per_epoch,
    train_dp,
)
from gleak_edu.training import TrainState

__all__ = [
    "ArenaPanel", "LiveView", "DefensePanel", "GRNNPanel", "LayerPanel", "PPPPanel", "TrainingCurves", "DPSchedulePanel",
    "TextLiveView", "TextNoisePanel", "Playground", "PrecodeKnobPanel", "TEXT_NOISE_LEVELS",
    "FederationLiveView", "FedAvgPanel", "LocalDpPanel", "FEDAVG_STEPS", "FEDAVG_BATCHES", "LOCAL_DP_EPSILONS",
    "NOISE_LEVELS", "PPP_NOISE_LEVELS", "NOISE_STD_LABEL", "NOISE_MULTIPLIER_LABEL",
]

# The two units of a noise slider, in its label (the package's vocabulary: noise_std, noise_multiplier).
NOISE_STD_LABEL = viz.NOISE_STD_LABEL  # "noise std (absolute)"
NOISE_MULTIPLIER_LABEL = viz.NOISE_MULTIPLIER_LABEL  # "noise multiplier σ (std = σ·C)"

# The noise slider's stops (absolute std per gradient entry; see gaussian_noise).
NOISE_LEVELS: tuple[float, ...] = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)

# The text notebook's slider: noise multipliers of the Gaussian mechanism (std = σ·C, C = 1 there).
TEXT_NOISE_LEVELS: tuple[float, ...] = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 1.0)

# PPP's slider: noise multipliers (relative to the clipping bound; see perturbed_gradient).
PPP_NOISE_LEVELS: tuple[float, ...] = (0.0, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)


def _widgets():
    try:
        import ipywidgets

        return ipywidgets
    except ImportError:  # pragma: no cover - ipywidgets is a dependency
        return None


def _noise_slider(w, levels: Sequence[float], *, description: str, value: float | None = None, width: str = "520px"):
    """The course's noise slider: one stop per level, labelled with ``:g``, sending its value on release.

    ``description`` names the unit (:data:`NOISE_STD_LABEL` or :data:`NOISE_MULTIPLIER_LABEL`), shown in full.
    """
    return w.SelectionSlider(
        options=[(f"{v:g}", v) for v in levels], value=levels[0] if value is None else value,
        description=description, continuous_update=False, layout=w.Layout(width=width),
        style={"description_width": "initial"},
    )


class _Panel:
    """A box of widgets (``self.widget``) that shows itself in a notebook."""

    widget = None

    def display(self) -> None:
        """Show the panel (sliders or selector, live view, summary) in the notebook."""
        from IPython.display import display

        display(self.widget if self.widget is not None else f"{type(self).__name__}: ipywidgets not installed")

    def _ipython_display_(self) -> None:
        self.display()


class LiveView(_Panel):
    """The current reconstruction beside the original, updated while an attack runs.

    Use it as the attack's callback::

        view = LiveView(original=x)
        view.display()
        result = dlg(model, shared, ..., callback=view, options=AttackOptions(callback_every=5))

    Args:
        original: the true images ``[B, C, H, W]`` in [0, 1] (shown for
            comparison and for the PSNR readout), or None.
        scale: on-screen enlargement of the 32x32 pixels.
        title: a line shown above the images.

    Attributes:
        updates: how many frames it has drawn; ``last_psnr`` the latest PSNR (dB).
    """

    def __init__(self, original: torch.Tensor | None = None, scale: int = 5, title: str = "") -> None:
        self.original = original
        self.scale = int(scale)
        self.updates = 0
        self.last_psnr: float | None = None
        self.last_state: AttackState | None = None
        w = _widgets()
        self._w = w
        if w is None:
            self.widget = None
            return
        self.title = w.HTML(f"<b>{html.escape(title)}</b>" if title else "")
        self.image = w.Image(format="png", layout=w.Layout(margin="2px"))
        self.readout = w.HTML("waiting for the first update ...")
        row = []
        if original is not None:
            row.append(w.VBox([w.HTML("original"), w.Image(value=self._grid(original), format="png", layout=w.Layout(margin="2px"))]))
        row.append(w.VBox([w.HTML("reconstruction"), self.image]))
        self.widget = w.VBox([self.title, w.HBox(row), self.readout])

    def _grid(self, images: torch.Tensor) -> bytes:
        imgs = torch.as_tensor(images)
        if imgs.ndim == 4:
            imgs = torch.cat(list(imgs), dim=-1)  # side by side
        return viz.png_bytes(imgs, scale=self.scale)


    def __call__(self, state: AttackState) -> None:
        """Attack callback: draw ``state.estimate`` and the readout."""
        self.updates += 1
        self.last_state = state
        psnr = state.psnr
        if psnr is None and self.original is not None and self.original.shape == state.estimate.shape:
            psnr = float(metrics.psnr(state.estimate, self.original).mean())
        self.last_psnr = psnr
        text = (
            f"{state.attack} · iteration {state.iteration} · {state.evaluations} evaluations · "
            f"{state.seconds:.1f} s" + (f" · loss {state.loss:.3g}" if state.loss is not None else "")
            + (f" · <b>PSNR {psnr:.1f} dB</b>" if psnr is not None else "")
            + (f" · label {state.labels.tolist()}" if state.labels is not None else " · no label recovered")
            + (" · done" if state.done else "")
        )
        if self.widget is None:
            print(html.unescape(text.replace("<b>", "").replace("</b>", "")))
            return
        self.image.value = self._grid(state.estimate)
        self.readout.value = text


class DefensePanel(_Panel):
    """Sliders for the noise std and the pruning fraction that re-run an attack on release.

    The private batch's gradient is computed once; every slider release applies
    the defense (:func:`gaussian_noise` with absolute std ``noise_std``, then
    :func:`prune_gradients`), re-runs the attack with a :class:`LiveView`, and
    shows the final reconstruction with its PSNR, SSIM and label.

    Args:
        model: the victim model.
        x: private images ``[B, C, H, W]`` in [0, 1]; y: labels int64 ``[B]``.
        attack: a key of :data:`gleak_edu.attacks.ATTACKS`, ``"dlg"`` or ``"idlg"``
            (the L-BFGS attacks, fast enough for a slider).
        iterations: L-BFGS iterations per run (fewer than the registry's
            default keeps the slider responsive: about 5 s per run at 100;
            that gets to about 30 dB without a defense on the course's photos).
        noise_levels: the noise slider's stops (absolute stds, "noise std (absolute)").
        seed: seed of the noise and of the dummy start.

    Attributes:
        widget: the ipywidgets box to display; ``results``: ``{(noise_std, prune):
        AttackResult}`` of every run so far; ``last``: the latest result.

    The handler runs once with the defaults when the panel is built
    (``interactive_output``), so the panel works in a headless run.
    """

    ATTACKS = ("dlg", "idlg")

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        attack: str = "idlg",
        iterations: int = 100,
        noise_levels: Sequence[float] = NOISE_LEVELS,
        prune_step: float = 0.1,
        seed: int = 0,
        num_classes: int | None = None,
    ) -> None:
        if attack not in self.ATTACKS:
            raise ValueError(f"attack must be one of {self.ATTACKS} (keys of gleak_edu.attacks.ATTACKS), got {attack!r}")
        fl.check_batch(model, x, y)
        self.model, self.x, self.y = model, x, y
        self.attack = attack
        self.iterations = int(iterations)
        self.seed = int(seed)
        self.num_classes = num_classes or getattr(model, "num_classes")
        self.shared = fl.client_gradient(model, x, y)
        self.results: dict[tuple[float, float], AttackResult] = {}
        self.last: AttackResult | None = None
        w = _widgets()
        self.noise = _noise_slider(w, noise_levels, description=NOISE_STD_LABEL)
        self.prune = w.FloatSlider(
            value=0.0, min=0.0, max=0.9, step=prune_step, description="prune", readout_format=".0%",
            continuous_update=False, layout=w.Layout(width="360px"),
        )
        self.view = LiveView(original=x, title=f"{ATTACKS[attack].name} against the defended gradient")
        self.summary = w.HTML()
        out = w.interactive_output(self.run, {"noise_std": self.noise, "prune": self.prune})
        self.widget = w.VBox([w.HBox([self.noise, self.prune]), self.view.widget, self.summary, out])

    def defended(self, noise_std: float, prune: float):
        """The shared gradient after Gaussian noise of absolute std ``noise_std`` and pruning ``prune``."""
        shared = gaussian_noise(self.shared, noise_std, seed=self.seed) if noise_std > 0 else self.shared
        return prune_gradients(shared, prune) if prune > 0 else shared

    def run(self, noise_std: float, prune: float) -> AttackResult:
        """Apply the defense, run the attack (drawing the live view), summarise, return the result."""
        result = ATTACKS[self.attack].run(
            self.model, self.defended(noise_std, prune), input_shape=tuple(self.x.shape), num_classes=self.num_classes,
            iterations=self.iterations, seed=self.seed, truth=(self.x, self.y), callback=self.view,
            options=AttackOptions(callback_every=5),
        )
        self.results[(float(noise_std), float(prune))] = result
        self.last = result
        m = result.metrics
        self.summary.value = (
            f"noise std = {noise_std:g} (absolute), pruned {prune:.0%}: <b>PSNR {m['psnr_mean']:.1f} dB</b>, "
            f"SSIM {m['ssim_mean']:.3f}, label {'recovered' if m.get('label_accuracy') == 1 else 'wrong'} "
            f"({result.evaluations} evaluations, {result.seconds:.1f} s)"
        )
        return result



class GRNNPanel(_Panel):
    """Sliders for the batch size and the gradient noise std, re-running GRNN on release.

    The victim (a fresh model from ``model_factory``) shares the gradient of
    the first ``B`` images of ``images``; Gaussian noise of absolute std
    ``noise_std`` (see :func:`gleak_edu.defenses.gaussian_noise`) is added; GRNN then trains its
    generator, and the live view shows the generator's output as it learns.

    Args:
        model_factory: ``() -> model`` (called once; the same weights for every run).
        images: float32 ``[N, C, H, W]`` in [0, 1]; labels: int64 ``[N]``.
        num_classes: classes of the victim.
        iterations: generator updates per run.
        max_batch: the batch slider's top end (at most N).
        noise_levels: the noise slider's stops (absolute stds, "noise std (absolute)").

    Attributes: ``widget``, ``results`` ``{(batch, noise_std): AttackResult}``, ``last``.
    The handler runs once with the defaults (batch 1, no noise) when built.
    """

    def __init__(
        self,
        model_factory,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        num_classes: int,
        iterations: int = 300,
        max_batch: int = 8,
        noise_levels: Sequence[float] = NOISE_LEVELS,
        seed: int = 0,
    ) -> None:
        if max_batch < 1 or max_batch > images.shape[0]:
            raise ValueError(f"max_batch must lie in 1..{images.shape[0]} (the number of images), got {max_batch}")
        self.model = model_factory()
        self.images, self.labels = images, labels
        self.num_classes = int(num_classes)
        self.iterations = int(iterations)
        self.seed = int(seed)
        self.results: dict[tuple[int, float], AttackResult] = {}
        self.last: AttackResult | None = None
        w = _widgets()
        self.batch = w.IntSlider(value=1, min=1, max=max_batch, description="batch", continuous_update=False)
        self.noise = _noise_slider(w, noise_levels, description=NOISE_STD_LABEL)
        self.view_box = w.VBox()
        self.summary = w.HTML()
        out = w.interactive_output(self.run, {"batch": self.batch, "noise_std": self.noise})
        self.widget = w.VBox([w.HBox([self.batch, self.noise]), self.view_box, self.summary, out])

    def run(self, batch: int, noise_std: float) -> AttackResult:
        """Share the gradient of the first ``batch`` images, add noise of absolute std ``noise_std``, run GRNN live."""
        x, y = self.images[:batch], self.labels[:batch]
        shared = fl.client_gradient(self.model, x, y)
        if noise_std > 0:
            shared = gaussian_noise(shared, noise_std, seed=self.seed)
        view = LiveView(original=x, scale=4, title=f"GRNN, batch {batch}, noise std = {noise_std:g} (absolute)")
        if view.widget is not None:
            self.view_box.children = (view.widget,)
        result = ATTACKS["grnn"].run(
            self.model, shared, input_shape=tuple(x.shape), num_classes=self.num_classes,
            iterations=self.iterations, seed=self.seed, truth=(x, y), callback=view,
            options=AttackOptions(callback_every=25),
        )
        self.results[(int(batch), float(noise_std))] = result
        self.last = result
        m = result.metrics
        self.summary.value = (
            f"batch {batch}, noise std = {noise_std:g} (absolute): <b>mean PSNR {m['psnr_mean']:.1f} dB</b>, "
            f"SSIM {m['ssim_mean']:.3f}, labels recovered {m['label_accuracy']:.0%} ({result.seconds:.1f} s)"
        )
        return result



class LayerPanel(_Panel):
    """Choose which parameters the attacker matches, and watch Inverting Gradients with that choice.

    Args:
        model: the victim (e.g. an MLP with PRECODE), in the mode the victim used.
        shared: its shared gradient of ``x``; x: ``[1, C, H, W]`` in [0, 1].
        default: the names selected at first (e.g. the bypass's deterministic ones).
        iterations: Inverting Gradients steps per run; tv_weight: its TV weight.

    The attacker uses the model in eval mode (the bottleneck's mean): the run
    is :func:`gleak_edu.attacks.precode_bypass` with ``layers=names`` (the
    registry's "bypass"). ``run(names)`` is the
    handler; it runs once with ``default`` when the panel is built.
    Attributes: ``widget``, ``results`` ``{tuple(names): AttackResult}``, ``last``.
    """

    def __init__(self, model: nn.Module, shared, x: torch.Tensor, *, default: Sequence[str], iterations: int = 300,
                 tv_weight: float = 1e-3, num_classes: int | None = None, seed: int = 0) -> None:
        names = list(shared)
        unknown = [n for n in default if n not in names]
        if unknown:
            raise ValueError(f"default names {unknown[:3]} are not parameters of the model")
        self.model, self.shared, self.x = model, shared, x
        self.iterations, self.tv_weight, self.seed = int(iterations), float(tv_weight), int(seed)
        self.num_classes = num_classes or getattr(model, "num_classes")
        self.results: dict[tuple[str, ...], AttackResult] = {}
        self.last: AttackResult | None = None
        w = _widgets()
        self.select = w.SelectMultiple(options=names, value=tuple(default), rows=min(len(names), 10),
                                       description="match", layout=w.Layout(width="420px"))
        self.view = LiveView(original=x, title="Inverting Gradients on the selected parameters")
        self.summary = w.HTML()
        out = w.interactive_output(lambda names: self.run(list(names)), {"names": self.select})
        self.widget = w.VBox([self.select, self.view.widget, self.summary, out])

    def run(self, names: Sequence[str]) -> AttackResult | None:
        """Run the attack matching only ``names``; an empty choice just says so."""
        if not names:
            self.summary.value = "select at least one parameter"
            return None
        result = ATTACKS["bypass"].run(
            self.model, self.shared, input_shape=tuple(self.x.shape), num_classes=self.num_classes, layers=list(names),
            iterations=self.iterations, tv_weight=self.tv_weight, seed=self.seed, truth=self.x,
            callback=self.view, options=AttackOptions(callback_every=25),
        )
        self.results[tuple(names)] = result
        self.last = result
        m = result.metrics
        self.summary.value = f"{len(names)} parameter tensors matched: <b>SSIM {m['ssim_mean']:.3f}</b>, PSNR {m['psnr_mean']:.1f} dB"
        return result



class PPPPanel(_Panel):
    """A noise slider and two live reconstructions: full perturbation against PPP, each under its best attack.

    Left: a plain model whose client clips and noises *every* gradient (full
    perturbation), attacked with Inverting Gradients on all layers (which is
    what the bypass is on a model without a bottleneck). Right: a PRECODE
    model whose client clips and noises only the deterministic gradients (PPP),
    attacked with the PRECODE bypass. Both use the same noise multiplier σ
    and clipping bound C = ``max_grad_norm`` (noise std σ·C;
    :func:`gleak_edu.defenses.perturbed_gradient`); each slider release
    recomputes both shared gradients and re-runs both attacks.

    Args:
        plain_model: the victim without a bottleneck; precode_model: with one
            (both in train mode, as a client is).
        x: one private image ``[1, C, H, W]`` in [0, 1]; y: its label ``[1]``.
        max_grad_norm: the clipping bound C (> 0).
        iterations: attack steps per run (300: about 2 s per attack on the course's MLP).
        noise_levels: the slider's stops (noise multipliers, "noise multiplier σ (std = σ·C)").
        seed: seed of the noise, PRECODE's sample and the attacks' starts.

    Attributes: ``widget``, ``results`` ``{noise_multiplier: (full_result, ppp_result)}``, ``last``.
    The handler runs once with the first stop when the panel is built.

    Raises:
        ValueError: if ``precode_model`` has no bottleneck or x is not one image.
    """

    def __init__(
        self,
        plain_model: nn.Module,
        precode_model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        max_grad_norm: float = 1.0,
        iterations: int = 300,
        noise_levels: Sequence[float] = PPP_NOISE_LEVELS,
        seed: int = 0,
        num_classes: int | None = None,
    ) -> None:
        if x.shape[0] != 1:
            raise ValueError(f"PPPPanel attacks one image; got a batch of {x.shape[0]}")
        fl.check_batch(plain_model, x, y)
        perturbation_scope(precode_model, "ppp")  # raises for a model without PRECODE
        self.plain, self.precode, self.x, self.y = plain_model, precode_model, x, y
        self.max_grad_norm, self.iterations, self.seed = float(max_grad_norm), int(iterations), int(seed)
        self.num_classes = num_classes or getattr(plain_model, "num_classes")
        self.results: dict[float, tuple[AttackResult, AttackResult]] = {}
        self.last: tuple[AttackResult, AttackResult] | None = None
        w = _widgets()
        self.noise = _noise_slider(w, noise_levels, description=NOISE_MULTIPLIER_LABEL)
        self.full_view = LiveView(original=x, scale=4, title=f"full perturbation · {ATTACKS['ig'].name} on all layers")
        self.ppp_view = LiveView(original=x, scale=4, title=f"PPP · the {ATTACKS['bypass'].name}")
        self.summary = w.HTML()
        out = w.interactive_output(self.run, {"noise_multiplier": self.noise})
        self.widget = w.VBox([self.noise, w.HBox([self.full_view.widget, self.ppp_view.widget]), self.summary, out])

    def shared(self, noise_multiplier: float):
        """The two shared gradients at ``noise_multiplier`` (std σ·C): (full perturbation, PPP)."""
        knobs = dict(noise_multiplier=noise_multiplier, max_grad_norm=self.max_grad_norm, seed=self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            full = perturbed_gradient(self.plain, self.x, self.y, scope="full", **knobs)
            ppp = perturbed_gradient(self.precode, self.x, self.y, scope="ppp", **knobs)
        return full, ppp

    def run(self, noise_multiplier: float) -> tuple[AttackResult, AttackResult]:
        """Perturb both gradients at ``noise_multiplier``, run both attacks live, summarise; returns (full, PPP) results."""
        full, ppp = self.shared(noise_multiplier)
        common = dict(input_shape=tuple(self.x.shape), num_classes=self.num_classes, iterations=self.iterations,
                      seed=self.seed, truth=(self.x, self.y), options=AttackOptions(callback_every=25))
        r_full = ATTACKS["ig"].run(self.plain, full, callback=self.full_view, **common)
        r_ppp = ATTACKS["bypass"].run(self.precode, ppp, callback=self.ppp_view, **common)
        self.results[float(noise_multiplier)] = (r_full, r_ppp)
        self.last = (r_full, r_ppp)
        self.summary.value = (
            f"noise multiplier σ = {noise_multiplier:g} (std = σ·C), clipping bound C = {self.max_grad_norm:g}: "
            f"full perturbation <b>SSIM {r_full.metrics['ssim_mean']:.3f}</b> · "
            f"PPP <b>SSIM {r_ppp.metrics['ssim_mean']:.3f}</b> (0 = nothing recovered, 1 = the image)"
        )
        return r_full, r_ppp


class TrainingCurves(_Panel):
    """Live training-loss curves: pass :meth:`step_callback` as the ``callback`` of a training run.

    Every training loop of the package (``train_dp``, ``train_perturbed``,
    ``train_classifier``) calls its callback with a :class:`gleak_edu.training.TrainState`
    after each step.

    Args:
        every: redraw every this many steps (and at the end of each run, via :meth:`finish`).

    Attributes: ``curves`` ``{run label: [loss per step]}``; ``widget``.
    """

    def __init__(self, every: int = 20) -> None:
        self.curves: dict[str, list[float]] = {}
        self.every = int(every)
        self._label = None
        w = _widgets()
        self.image = w.Image(format="png") if w is not None else None
        self.widget = w.VBox([self.image]) if w is not None else None

    def step_callback(self, label: str):
        """The training callback (it receives a :class:`TrainState`) for the run called ``label``."""
        self.curves[label] = []
        self._label = label

        def callback(state: TrainState) -> None:
            self.curves[label].append(float(state.loss))
            if (state.step + 1) % self.every == 0:
                self.draw()

        return callback

    def draw(self) -> None:
        """Redraw the curves now."""
        import matplotlib.pyplot as plt

        fig = viz.training_curves_figure(self.curves)
        if self.image is not None:
            self.image.value = viz.fig_png_bytes(fig)
        plt.close(fig)

    finish = draw


class DPSchedulePanel(_Panel):
    """Sliders for the noise schedule: the noise curve and epsilon update on release, then training and the attack re-run.

    On every release of a control: the schedule's curve is redrawn and its
    epsilon (RDP and PRV at ``delta``) shown at once; then the model is trained
    with DP-SGD along that schedule (:func:`gleak_edu.defenses.train_dp`) and
    the shared gradient of one private image is attacked with Inverting
    Gradients at the first, middle and last step, with the reconstructions
    and the test accuracy shown.

    Args:
        model_factory: ``() -> model`` (a fresh, identically initialised model each run).
        train, test: the data (see train_dp); x, y: the attacked image ``[1, C, H, W]`` and label.
        epochs, batch_size, lr, max_grad_norm, noise_updates: the training (see train_dp; the noise
            multiplier changes ``noise_updates`` times, which keeps the epsilon readout under a second).
        delta: of the epsilon readout. iterations: Inverting Gradients steps per checkpoint.
        start, end, schedule: the controls' initial values (noise multipliers σ, std = σ·C, C = ``max_grad_norm``).

    Attributes: ``widget``, ``runs`` ``{(schedule, start, end): DPRun}``, ``last``, ``epsilons``
    (the latest readout: ``{"rdp": eps, "prv": eps}``). The handler runs once when built.
    """

    def __init__(self, model_factory, train, test, x, y, *, epochs: int = 2, batch_size: int = 64, lr: float = 0.2,
                 max_grad_norm: float = 1.0, delta: float = 1e-5, iterations: int = 200, start: float = 3.0, end: float = 0.5,
                 schedule: str = "linear", noise_updates: int | None = 21) -> None:
        self.model_factory, self.train, self.test, self.x, self.y = model_factory, train, test, x, y
        self.epochs, self.batch_size, self.lr = int(epochs), int(batch_size), float(lr)
        self.max_grad_norm = float(max_grad_norm)
        self.delta, self.iterations, self.noise_updates = float(delta), int(iterations), noise_updates
        self.steps = self.epochs * steps_per_epoch(len(train[0]), self.batch_size)
        self.sample_rate = min(1.0, self.batch_size / len(train[0]))
        self.runs: dict = {}
        self.last = None
        self.epsilons: dict[str, float] = {}
        w = _widgets()
        self.kind = w.Dropdown(options=list(SCHEDULES), value=schedule, description="schedule")
        opts = dict(min=0.1, max=8.0, step=0.1, continuous_update=False, readout_format=".1f",
                    layout=w.Layout(width="440px"), style={"description_width": "initial"})
        self.start = w.FloatSlider(value=start, description=f"start: {NOISE_MULTIPLIER_LABEL}", **opts)
        self.end = w.FloatSlider(value=end, description=f"end: {NOISE_MULTIPLIER_LABEL}", **opts)
        self.curve = w.Image(format="png")
        self.readout = w.HTML()
        self.result = w.HTML()
        self.recon = w.Image(format="png")
        out = w.interactive_output(self.run, {"kind": self.kind, "start": self.start, "end": self.end})
        self.widget = w.VBox([w.VBox([self.kind, self.start, self.end]),
                              w.HBox([self.curve, w.VBox([self.readout, self.result, self.recon])]), out])

    def schedule(self, kind: str, start: float, end: float) -> list[float]:
        """The noise multipliers of the run's steps (a cyclic end above its start is capped at the start)."""
        return noise_schedule(kind, self.steps, start, min(end, start) if kind == "cyclic" else end, updates=self.noise_updates)

    def run(self, kind: str, start: float, end: float):
        """Show the curve and epsilon at once, then train and attack; returns the :class:`DPRun`."""
        import matplotlib.pyplot as plt

        multipliers = self.schedule(kind, start, end)
        hist = history_from_noise_multipliers(multipliers, self.sample_rate)
        self.epsilons = {}
        for acc in ("rdp", "prv"):
            try:
                self.epsilons[acc] = epsilon(hist, self.delta, acc)
            except ValueError:  # e.g. PRV's grid too large at the sliders' extremes: say so, RDP still holds
                self.epsilons[acc] = math.nan
        fig = viz.schedules_figure({kind: multipliers})
        self.curve.value = viz.fig_png_bytes(fig)
        plt.close(fig)
        self.readout.value = (
            f"{kind}, noise multiplier σ {multipliers[0]:.2f} → {multipliers[-1]:.2f} (std = σ·C, C = {self.max_grad_norm:g}) "
            f"over {self.steps} steps at q = {self.sample_rate:.3f}: "
            f"<b>ε = {self.epsilons['rdp']:.2f}</b> (RDP), "
            + ("n/a (use RDP)" if math.isnan(self.epsilons["prv"]) else f"{self.epsilons['prv']:.2f}")
            + f" (PRV) at δ = {self.delta:g}"
        )
        self.result.value = "training and attacking ..."
        plan = AttackPlan(steps=(0, self.steps // 2, self.steps - 1), images=(self.x, self.y), attacks=("ig",),
                          iterations=self.iterations)
        dp = train_dp(
            self.model_factory(), self.train, self.test, noise_multiplier=multipliers, max_grad_norm=self.max_grad_norm,
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, delta=self.delta, attack_plan=plan,
        )
        self.runs[(kind, float(start), float(end))] = dp
        self.last = dp
        recons = torch.cat([torch.tensor(cp["ig"]["reconstructions"]) for cp in dp.checkpoints])
        self.recon.value = viz.png_bytes(torch.cat(list(torch.cat([self.x, recons])), dim=-1), scale=3)
        ssims = ", ".join(f"step {cp['step']} (σ {cp['noise_multiplier']:.2f}): SSIM {cp['ig']['ssim'][0]:.2f}"
                          for cp in dp.checkpoints)
        self.result.value = (f"test accuracy <b>{dp.test_accuracy:.1%}</b> · {ATTACKS['ig'].name} on the shared gradient: "
                             f"{ssims}<br>original, then the three reconstructions:")
        return dp


def _words_html(words: Sequence[str], truth: Sequence[str] | None) -> str:
    """The recovered words, green where they match the true word at that position, red otherwise."""
    out = []
    for j, w in enumerate(words):
        ok = truth is not None and j < len(truth) and truth[j] == w
        colour = "#1e8449" if ok else ("#b03a2e" if truth is not None else "#222")
        out.append(f"<span style='color:{colour}'>{html.escape(w)}</span>")
    return " ".join(out)


class TextLiveView(_Panel):
    """The sentence an attack currently decodes, updated while :func:`gleak_edu.attacks.text_recovery` runs.

    Use it as the callback: ``text_recovery(..., callback=view)``. Words at the
    right position are green when ``truth`` (the true words) is given.
    Attributes: ``updates``, ``last_words``.
    """

    def __init__(self, truth: Sequence[str] | None = None, title: str = "") -> None:
        self.truth = list(truth) if truth is not None else None
        self.updates = 0
        self.last_words: list[str] = []
        w = _widgets()
        self.html = w.HTML(f"<b>{html.escape(title)}</b><br>waiting ..." if title else "waiting ...") if w else None
        self.title = title
        self.widget = w.VBox([self.html]) if w else None

    def __call__(self, state: TextState) -> None:
        """Attack callback: show ``state.words`` (a :class:`TextState`)."""
        self.updates += 1
        self.last_words = list(state.words)
        text = (
            (f"<b>{html.escape(self.title)}</b><br>" if self.title else "")
            + f"<span style='font-size:120%'>{_words_html(state.words, self.truth)}</span><br>"
            + f"<small>step {state.iteration}" + (f" · matching loss {state.loss:.3g}" if state.loss is not None else "")
            + f"{' · done' if state.done else ''}</small>"
        )
        if self.html is None:
            print(" ".join(state.words))
        else:
            self.html.value = text


class TextNoisePanel(_Panel):
    """A noise slider for the tiny transformer: the recovered words, token accuracy and epsilon for each noise multiplier.

    The sentence's gradient is computed once; each release clips it to C =
    ``max_grad_norm`` and adds N(0, (σC)²) (noise multiplier σ;
    :func:`gleak_edu.defenses.clip_and_noise`), runs the registry's "text"
    attack (:func:`gleak_edu.attacks.text_recovery`) with a live view, and shows
    token-set recall and precision, in-order accuracy, and epsilon: per
    release (Opacus RDP at sample rate 1, one step: valid at every ε, unlike the classical
    Gaussian-mechanism formula, which holds only for ε < 1) and over ``steps`` training steps
    at sample rate ``sample_rate`` (Opacus RDP, :func:`gleak_edu.defenses.epsilon_for_steps`).

    Attributes: ``widget``, ``results`` ``{noise_multiplier: TextAttackResult}``, ``last``.
    The handler runs once with the first stop when built.
    """

    def __init__(self, model: nn.Module, vocab, sentence: str, label: int = 0, *, max_grad_norm: float = 1.0,
                 noise_levels: Sequence[float] = TEXT_NOISE_LEVELS, iterations: int = 200, delta: float = 1e-5,
                 steps: int = 300, sample_rate: float = 0.2, seed: int = 0) -> None:
        self.model, self.vocab = model, vocab
        self.tokens = vocab.encode(sentence)
        self.label = int(label)
        self.truth_words = [vocab.words[int(t)] for t in self.tokens]
        self.shared = fl.client_text_gradient(model, self.tokens, torch.tensor([self.label]))
        self.max_grad_norm, self.iterations, self.delta = float(max_grad_norm), int(iterations), float(delta)
        self.steps, self.sample_rate, self.seed = int(steps), float(sample_rate), int(seed)
        self.results: dict = {}
        self.last = None
        w = _widgets()
        self.noise = _noise_slider(w, noise_levels, description=NOISE_MULTIPLIER_LABEL)
        self.view = TextLiveView(self.truth_words, title="recovered sentence (green: right word in the right place)")
        self.summary = w.HTML()
        out = w.interactive_output(self.run, {"noise_multiplier": self.noise})
        self.widget = w.VBox([self.noise, self.view.widget, self.summary, out])

    def run(self, noise_multiplier: float):
        """Clip and noise the gradient at ``noise_multiplier``, attack it live, summarise; returns the TextAttackResult."""
        noisy = noise_multiplier > 0
        shared = clip_and_noise(self.shared, noise_multiplier, self.max_grad_norm, seed=self.seed) if noisy else self.shared
        result = ATTACKS["text"].run(self.model, shared, vocab=self.vocab, iterations=self.iterations, seed=self.seed,
                                     truth=(self.tokens, self.label), callback=self.view,
                                     options=AttackOptions(callback_every=20))
        self.results[float(noise_multiplier)] = result
        self.last = result
        m = result.metrics
        eps = ""
        if noisy:
            composed = epsilon_for_steps(noise_multiplier, self.sample_rate, self.steps, self.delta)
            release = epsilon_for_steps(noise_multiplier, 1.0, 1, self.delta)
            eps = (f" · <b>ε = {release:.3g}</b> per release (RDP), {composed:.3g} over "
                   f"{self.steps} steps at q = {self.sample_rate:g} (δ = {self.delta:g})")
        self.summary.value = (
            f"noise multiplier σ = {noise_multiplier:g} (std = σ·C, C = {self.max_grad_norm:g}): word set recall "
            f"{m['set_recall']:.0%}, precision {m['set_precision']:.0%}, <b>in order {m['order_accuracy']:.0%}</b>" + eps
        )
        return result


class ArenaPanel(_Panel):
    """The defense arena's heatmap with a noise slider, re-drawn from a computed result (nothing is recomputed).

    The slider's stops are the noise levels the result holds
    (:func:`gleak_edu.arena.arena`); its label says how each noisy defense
    reads a stop, in the unit the arena declares for it
    (:data:`gleak_edu.arena.DEFENSE_LEVEL`, :data:`gleak_edu.arena.KNOB_UNITS`:
    a noise std for "noise", a noise multiplier σ for PPP and DP). Moving it re-renders
    :func:`gleak_edu.viz.arena_heatmap` at that level. A second slider picks
    the pruning cell when the result has more than one pruned fraction. Below,
    a reconstruction strip: pick a defense and an attack to see the attacked
    images (top) and what the attack made of them at the slider's level
    (bottom); an impossible pair shows its reason instead.

    Args:
        result: a :class:`gleak_edu.arena.ArenaResult` (computed, or loaded:
            it needs the rows, each cell's reconstructions and the attacked images).
        defense, attack: the strip's first choice.
        fold_zero: leave out of the heatmap the attacks at 0 % in every cell
            (see :func:`gleak_edu.viz.arena_heatmap`); they stay in the strip's menu.

    Attributes: ``widget``, ``noise`` (the slider), ``prune`` (slider or None),
    ``image`` (the heatmap PNG), ``strip`` (the reconstructions PNG),
    ``renders`` (how many times the heatmap was drawn), ``last_level``.
    The handler runs once with the first level when the panel is built.
    """

    def __init__(self, result, *, defense: str = "ppp", attack: str = "bypass", fold_zero: bool = False) -> None:
        self.result = result
        self.fold_zero = fold_zero
        self.renders = 0
        self.last_level: float | None = None
        w = _widgets()
        levels = list(result.levels)
        self.noise = _noise_slider(w, levels, description=viz.arena_level_label(result.settings), width="820px")
        fractions = list(result.settings.prune_fractions)
        self.prune = None
        if len(fractions) > 1:
            self.prune = w.SelectionSlider(options=[(f"{v:.0%}", v) for v in fractions], value=fractions[0],
                                           description="pruned", continuous_update=False, layout=w.Layout(width="300px"))
        self.defense = w.Dropdown(options=[(arena.DEFENSE_NAMES[d], d) for d in arena.DEFENSES], value=defense,
                                  description="defense")
        self.attack = w.Dropdown(options=[(arena.ATTACK_NAMES[a], a) for a in arena.ATTACKS], value=attack,
                                 description="attack")
        self.image = w.Image(format="png")
        self.strip = w.Image(format="png")
        self.caption = w.HTML()
        controls = {"level": self.noise, "prune_fraction": self.prune if self.prune is not None else w.fixed(fractions[0]),
                    "defense": self.defense, "attack": self.attack}
        out = w.interactive_output(self.render, controls)
        sliders = [self.noise] + ([self.prune] if self.prune is not None else [])
        self.widget = w.VBox([w.HBox(sliders), self.image, w.HBox([self.defense, self.attack]), self.caption,
                              self.strip, out])

    def render(self, level: float, prune_fraction: float, defense: str, attack: str) -> None:
        """Draw the heatmap at ``level`` and the strip of ``attack`` against ``defense`` there."""
        import matplotlib.pyplot as plt

        fig = viz.arena_heatmap(self.result, level, prune_fraction=prune_fraction, fold_zero=self.fold_zero)
        self.image.value = viz.fig_png_bytes(fig, dpi=80)
        plt.close(fig)
        self.renders += 1
        self.last_level = float(level)
        reason = arena.impossible(attack, defense)
        knob = self.result.knob(defense, level, prune_fraction)
        pair = f"{arena.ATTACK_NAMES[attack]} × {arena.defense_label(defense, knob, self.result.settings)}"
        if reason is not None:
            self.caption.value = f"<b>{html.escape(pair)}</b>: n/a, {html.escape(reason)}"
            self.strip.value = b""
            return
        rec = self.result.reconstructions(defense, attack, level, prune_fraction=prune_fraction)
        row = self.result.row(defense, attack, level, prune_fraction)
        truth = self.result.test_images
        grid = torch.cat([torch.cat(list(truth), dim=-1), torch.cat(list(rec), dim=-1)], dim=-2)
        self.strip.value = viz.png_bytes(grid, scale=3)
        self.caption.value = (
            f"<b>{html.escape(pair)}</b>: "
            f"top the private digits, bottom the reconstructions (first seed) · success over every seed "
            f"{metrics.success_rate(successes=row['successes'], n=row['n'])}"
            + (" (no evidence: it rebuilt nothing without a defense either)" if row.get("no_evidence") else "")
            + f", mean SSIM {row['ssim']:.2f}, PSNR {row['psnr']:.1f} dB"
        )


class Playground(_Panel):
    """The workshop's attack playground: pick or upload an image, an attack and a defense, move the sliders, run.

    Served as a web app by ``make app`` (Voila, ``app/playground.ipynb``) and
    usable in any notebook. The victim is the course's model for the attack
    (LeNet-Zhu with DLG's uniform init for DLG and iDLG, an MLP with PyTorch's
    init for Inverting Gradients, 100 classes); the shared gradient is the
    client's on the chosen image, then the defense (Gaussian noise of absolute
    std ``noise_std``, the "noise std (absolute)" slider, or pruning) is
    applied, and the attack runs with a live view. The attacks are the
    registry's (:data:`gleak_edu.attacks.ATTACKS`), named as it names them.

    Attributes: ``widget``, ``x`` (the current image ``[1, 3, 32, 32]``),
    ``last`` (the latest :class:`AttackResult`), ``runs`` (how many).
    """

    ATTACKS = ("idlg", "dlg", "ig")  # keys of gleak_edu.attacks.ATTACKS
    CALLBACK_EVERY = {"idlg": 5, "dlg": 5, "ig": 25}  # live-view refresh: L-BFGS steps are slower than Adam's

    def __init__(self, seed: int = 1) -> None:
        self.photos = data.photos()
        self.seed = int(seed)
        self.x = self.photos.images[:1]
        self.last: AttackResult | None = None
        self.runs = 0
        w = _widgets()
        self.image = w.Dropdown(options=[(n, i) for i, n in enumerate(self.photos.item_names)], value=0, description="image")
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="or upload")
        self.attack = w.Dropdown(options=[(ATTACKS[k].name, k) for k in self.ATTACKS], value="idlg", description="attack")
        self.defense = w.ToggleButtons(options=[("none", "none"), ("noise", "noise"), ("pruning", "prune")], value="none",
                                       description="defense")
        self.noise = _noise_slider(w, NOISE_LEVELS, description=NOISE_STD_LABEL, value=1e-2)
        self.prune = w.FloatSlider(value=0.5, min=0.0, max=0.9, step=0.1, description="prune", readout_format=".0%",
                                   continuous_update=False)
        self.iterations = w.IntSlider(value=100, min=20, max=300, step=20, description="iterations", continuous_update=False)
        self.button = w.Button(description="run the attack", button_style="danger", icon="play")
        self.status = w.HTML("pick an image, an attack and a defense, then run")
        self.view_box = w.VBox()
        self.button.on_click(lambda _b: self._clicked())
        self.upload.observe(self._uploaded, names="value")
        self.image.observe(lambda change: self._pick(change["new"]), names="value")
        controls = w.VBox([w.HBox([self.image, self.upload]), w.HBox([self.attack, self.iterations]), self.defense,
                           w.HBox([self.noise, self.prune]), self.button, self.status])
        self.widget = w.VBox([controls, self.view_box])

    def _pick(self, index: int) -> None:
        self.x = self.photos.images[int(index) : int(index) + 1]

    def _uploaded(self, change) -> None:
        files = change["new"]
        if files:
            try:  # ipywidgets 8 sends a tuple of dicts, ipywidgets 7 a dict of dicts
                item = files[0] if isinstance(files, (list, tuple)) else next(iter(files.values()))
                content, name = bytes(item["content"]), str(item.get("name", "upload"))
            except Exception as exc:  # noqa: BLE001 - an upload the widget could not hand over
                self._error(f"could not read the upload: {exc.__class__.__name__}: {exc}")
                return
            self.load_bytes(content, name)

    def load_bytes(self, content: bytes, name: str = "upload") -> None:
        """Use an uploaded image (PNG/JPEG bytes), resized to 32x32; a bad file is reported in the status line.

        Decoded by :func:`gleak_edu.data.load_image_bytes`, the same code path as
        image files: an unreadable file, one over the pixel limit or one that
        decodes to NaN leaves the current image in place and says why.
        """
        try:
            x = data.load_image_bytes(content, size=32, channels=3, name=name)
        except (ValueError, TypeError) as exc:
            self._error(f"could not use {name}: {exc}")
            return
        except MemoryError:
            self._error(f"could not use {name}: it is too large to decode in memory; downsize the photo")
            return
        self.x = x
        self.status.value = f"using the uploaded image {html.escape(name)}"

    def _error(self, message: str) -> None:
        self.status.value = f"<span style='color:#b03a2e'>{html.escape(message)}</span>"

    def _clicked(self) -> None:
        try:
            self.run()
        except Exception:  # noqa: BLE001 - run() has put the error in the status line
            pass

    def run(self) -> AttackResult:
        """Share the gradient of the current image, apply the defense, run the attack live; returns its result.

        The status line always ends with the outcome: the metrics, or the error
        (which is raised again) or "stopped" after an interrupt, never "running ...".
        """
        self.status.value = "running ..."
        try:
            result = self._run()
        except (AttackInterrupted, CallbackError) as exc:  # the attack kept its best estimate: show it
            self.last = exc.result
            m = exc.result.metrics
            why = "stopped (interrupted)" if isinstance(exc, AttackInterrupted) else f"the live view failed ({exc.result.error})"
            self._error(f"{why} at iteration {exc.result.iterations}; best estimate so far: PSNR {m['psnr_mean']:.1f} dB, "
                        f"SSIM {m['ssim_mean']:.3f} (in playground.last)")
            raise
        except Exception as exc:
            self._error(f"the run failed: {exc.__class__.__name__}: {exc}")
            raise
        except BaseException:  # KeyboardInterrupt: the kernel's stop button
            self._error("stopped before the attack finished")
            raise
        m = result.metrics
        self.status.value = (f"<b>PSNR {m['psnr_mean']:.1f} dB</b>, SSIM {m['ssim_mean']:.3f}, "
                             f"label {'recovered' if m.get('label_accuracy') == 1 else 'wrong'} ({result.seconds:.1f} s)")
        return result

    def _run(self) -> AttackResult:
        if not bool(torch.isfinite(self.x).all()):
            raise ValueError("the current image has NaN or infinite pixels; pick or upload another image")
        kind = self.attack.value
        label = torch.tensor([0])
        if kind == "ig":
            model = models.build_model("mlp", (3, 32, 32), 100, seed=self.seed, init="pytorch")
        else:
            model = models.build_model("lenet-zhu", (3, 32, 32), 100, seed=self.seed)
        shared = fl.client_gradient(model, self.x, label)
        if self.defense.value == "noise" and self.noise.value > 0:
            shared = gaussian_noise(shared, self.noise.value, seed=self.seed)
        elif self.defense.value == "prune" and self.prune.value > 0:
            shared = prune_gradients(shared, self.prune.value)
        spec = ATTACKS[kind]
        view = LiveView(original=self.x, title=f"{spec.name} against the shared gradient")
        if view.widget is not None:
            self.view_box.children = (view.widget,)
        result = spec.run(model, shared, input_shape=tuple(self.x.shape), num_classes=100, iterations=self.iterations.value,
                          seed=self.seed, truth=(self.x, label), callback=view,
                          options=AttackOptions(callback_every=self.CALLBACK_EVERY[kind]))
        self.last, self.runs = result, self.runs + 1
        return result


class PrecodeKnobPanel(_Panel):
    """PRECODE's KL weight β on a slider, re-drawn from runs computed beforehand (nothing is recomputed).

    Notebook 03 trains one PRECODE model per β in a loop it shows, attacks one private image of each with
    Inverting Gradients on all layers and with the PRECODE bypass, and passes the results here; moving
    the slider shows that β's reconstructions (:func:`gleak_edu.viz.precode_knob_view`) and, below, the
    per-parameter randomness of its gradient (:func:`gleak_edu.viz.stochasticity_figure`). The static
    counterpart for the saved notebook is :func:`gleak_edu.viz.precode_knob_figure`.

    Args:
        runs: ``{β: {"accuracy": float, "cosines": {name: cosine}, "ig": AttackResult,
            "bypass": AttackResult}}`` (see :mod:`gleak_edu.viz.precode`).
        original: the attacked image ``[1, C, H, W]`` in [0, 1].
        plain_accuracy: test accuracy without PRECODE (shown for reference), or None.
        deterministic: the parameters the bypass matches (colours of the randomness bars).

    Attributes: ``widget``, ``slider``, ``image`` (the reconstructions PNG), ``bars`` (the randomness PNG),
    ``renders`` (how many times it drew), ``last_beta``. The handler runs once with the smallest β.

    Raises:
        ValueError: for empty runs or a run that lacks one of its four entries.
    """

    def __init__(self, runs, original: torch.Tensor, *, plain_accuracy: float | None = None,
                 deterministic: Sequence[str] | None = None) -> None:
        if not runs:
            raise ValueError("runs is empty: compute at least one β")
        for beta, run in runs.items():
            missing = [k for k in ("accuracy", "cosines", "ig", "bypass") if k not in run]
            if missing:
                raise ValueError(f"the run at β = {beta:g} lacks {missing}")
        betas = sorted(float(b) for b in runs)
        self.runs = {float(b): r for b, r in runs.items()}
        self.original = original
        self.plain_accuracy = plain_accuracy
        self.deterministic = list(deterministic) if deterministic is not None else None
        self.renders = 0
        self.last_beta: float | None = None
        w = _widgets()
        self.slider = w.SelectionSlider(
            options=[(f"{b:g}", b) for b in betas], value=betas[0], description="PRECODE's KL weight β",
            continuous_update=False, layout=w.Layout(width="520px"), style={"description_width": "initial"},
        )
        self.image = w.Image(format="png")
        self.bars = w.Image(format="png")
        out = w.interactive_output(self.render, {"beta": self.slider})
        self.widget = w.VBox([self.slider, self.image, self.bars, out])

    def render(self, beta: float) -> None:
        """Draw β's reconstructions and its per-parameter randomness."""
        import matplotlib.pyplot as plt

        fig = viz.precode_knob_view(self.runs, beta, self.original, plain_accuracy=self.plain_accuracy)
        self.image.value = viz.fig_png_bytes(fig, dpi=80)
        plt.close(fig)
        fig = viz.stochasticity_figure(self.runs[float(beta)]["cosines"], self.deterministic)
        self.bars.value = viz.fig_png_bytes(fig, dpi=70)
        plt.close(fig)
        self.renders += 1
        self.last_beta = float(beta)


# --------------------------------------------------------------------------------------------------
# Notebook 08: federations on Flower


class FederationLiveView(_Panel):
    """The curious server at work: each update it receives is attacked at once and drawn, round by round.

    Pass it as ``on_update`` to :func:`gleak_edu.flower.run_federation`; for
    each :class:`gleak_edu.flower.Observation` it runs
    :func:`gleak_edu.flower.attack_observation` (in the server's thread, while
    the federation waits) and redraws a grid: per update, the client's digits
    above the server's reconstruction, one row of panels per round.

    Args:
        settings: the federation's :class:`gleak_edu.flower.FederationSettings`.
        attack: ``"unrolled"`` or ``"simple"``.
        iterations: Adam steps per update (200: about a second for a FedSGD update).

    Attributes:
        widget; ``results``: a list of ``(observation, AttackResult)`` in arrival order.
    """

    def __init__(self, settings, *, attack: str = "unrolled", iterations: int = 200) -> None:
        self._flower = flower
        self.settings, self.attack, self.iterations = settings, attack, int(iterations)
        self.results: list = []
        w = _widgets()
        self.image = w.Image(format="png")
        self.readout = w.HTML("waiting for the first round ...")
        self.widget = w.VBox([self.image, self.readout])

    def __call__(self, obs) -> None:
        res = self._flower.attack_observation(self.settings, obs, attack=self.attack, iterations=self.iterations)
        self.results.append((obs, res))
        self.readout.value = (f"round {obs.round}, client {obs.partition_id}: SSIM <b>{res.metrics['ssim_mean']:.2f}</b> "
                              f"· {len(self.results)} update(s) attacked")
        import matplotlib.pyplot as plt

        fig = self.figure()
        self.image.value = viz.fig_png_bytes(fig, dpi=70)
        plt.close(fig)

    def figure(self):
        """The grid as a static figure (truth above reconstruction, one row of clients per round, by client)."""
        truth, recon, titles, ssims = [], [], [], []
        for obs, res in sorted(self.results, key=lambda r: (r[0].round, r[0].partition_id)):
            x, _ = self._flower.observed_examples(self.settings, obs)
            truth.append(x)
            recon.append(res.reconstruction[torch.as_tensor(res.metrics["order"])])
            titles.append(f"round {obs.round} · client {obs.partition_id}")
            ssims.append(res.metrics["ssim_mean"])
        return viz.federation_grid(truth, recon, titles, columns=self.settings.per_round, ssims=ssims,
                                   caption="top: the client's digits; below: what the server rebuilt from its update")


FEDAVG_STEPS: tuple[int, ...] = (1, 2, 5, 10)
FEDAVG_BATCHES: tuple[int, ...] = (1, 4)


class FedAvgPanel(_Panel):
    """Sliders for a FedAvg client's local steps K and local batch B, and the server's two attacks, live.

    One client (its digits from :func:`gleak_edu.flower.client_data`) runs K
    local SGD steps of B digits on the global model (:func:`gleak_edu.fl.client_update`,
    the code its ClientApp runs); the server attacks the update it would
    receive, simply (Inverting Gradients on ``update / (-lr K)``) or by
    replaying the K steps (:func:`gleak_edu.attacks.fedavg_unrolled`), with
    the labels read off the update (one digit) or given (several). The handler
    runs once with K = 2, B = 1 and the unrolled attack.

    Args:
        settings: a :class:`gleak_edu.flower.FederationSettings` with at least
            40 digits per client; partition_id: the client.
        iterations: Adam steps per attack (200).

    Attributes: ``widget``, ``last`` (the last AttackResult), ``results`` ``{(K, B, attack): AttackResult}``.
    """

    def __init__(self, settings, partition_id: int = 0, *, iterations: int = 200) -> None:
        if settings.examples < max(FEDAVG_STEPS) * max(FEDAVG_BATCHES):
            raise ValueError(f"the panel needs {max(FEDAVG_STEPS) * max(FEDAVG_BATCHES)} digits per client "
                             f"(settings.examples), got {settings.examples}")
        self._flower = flower
        self.settings, self.iterations = settings, int(iterations)
        self.model = flower.global_model(settings)
        self.x, self.y = flower.client_data(settings, partition_id)
        self.results: dict = {}
        self.last = None
        w = _widgets()
        self.k = w.SelectionSlider(options=list(FEDAVG_STEPS), value=2, description="local steps K",
                                   continuous_update=False, style={"description_width": "initial"})
        self.b = w.SelectionSlider(options=list(FEDAVG_BATCHES), value=1, description="local batch B",
                                   continuous_update=False, style={"description_width": "initial"})
        self.which = w.ToggleButtons(options=[("unrolled (replay the K steps)", "unrolled"),
                                              ("simple (update / -lr K)", "simple")], value="unrolled")
        self.view = LiveView(original=None, scale=3, title="the server's reconstruction")
        self.truth = w.Image(format="png")
        self.summary = w.HTML()
        out = w.interactive_output(self.run, {"local_steps": self.k, "local_batch": self.b, "attack": self.which})
        self.widget = w.VBox([w.HBox([self.k, self.b]), self.which, w.HTML("the client's digits, in step order"),
                              self.truth, self.view.widget, self.summary, out])

    def run(self, local_steps: int, local_batch: int, attack: str):
        """Compute the client's update for (K, B) and attack it; returns the AttackResult."""
        m = local_steps * local_batch
        x, y = self.x[:m], self.y[:m]
        update = fl.client_update(self.model, x, y, lr=self.settings.lr, local_steps=local_steps, local_batch=local_batch)
        labels = None if m == 1 else y
        common = dict(input_shape=tuple(x.shape), num_classes=10, labels=labels, iterations=self.iterations,
                      truth=(x, y), callback=self.view, options=AttackOptions(callback_every=25))
        self.truth.value = viz.png_bytes(torch.cat(list(x), dim=-1), scale=3)
        if attack == "unrolled":
            res = fedavg_unrolled(self.model, update, lr=self.settings.lr, local_steps=local_steps,
                                  local_batch=local_batch, **common)
        else:
            res = inverting_gradients(self.model, fl.update_as_gradient(update, lr=self.settings.lr,
                                                                        local_steps=local_steps), **common)
        self.results[(local_steps, local_batch, attack)] = res
        self.last = res
        ssim = res.metrics["ssim"]
        rebuilt = sum(v >= metrics.SUCCESS_SSIM for v in ssim)
        self.summary.value = (f"K = {local_steps}, B = {local_batch}: {m} digit(s), {attack} attack: "
                              f"<b>{rebuilt} of {m} rebuilt</b> (SSIM ≥ 0.6), mean SSIM {sum(ssim) / m:.2f}"
                              + (" · labels given (the server would have to know or guess them)" if m > 1 else
                                 " · label read off the update"))
        return res


LOCAL_DP_EPSILONS: tuple[float, ...] = (math.inf, 1e5, 1e4, 3e3, 1e3, 100.0, 10.0, 1.0)


class LocalDpPanel(_Panel):
    """An epsilon slider for Flower's LocalDpMod and the curious server's attack on the noised update, live.

    One client's FedSGD update (one digit, one step) goes through Flower's own
    ``LocalDpMod`` in-process (:func:`gleak_edu.flower.local_dp_update`:
    clip to C, Gaussian noise of std ``C sqrt(2 ln(1.25/δ)) / ε`` on every
    weight); the server then runs the unrolled attack (K = 1: Inverting
    Gradients) on what it receives. ε = inf is the mod switched off.

    Args:
        settings: a :class:`gleak_edu.flower.FederationSettings` (its clipping norm C and delta are used).
        partition_id: the client; iterations: Adam steps (200).

    Attributes: ``widget``, ``last``, ``results`` ``{epsilon: AttackResult}``.
    """

    def __init__(self, settings, partition_id: int = 0, *, iterations: int = 200,
                 epsilons: Sequence[float] = LOCAL_DP_EPSILONS) -> None:
        self._flower = flower
        self.settings, self.iterations = settings, int(iterations)
        self.model = flower.global_model(settings)
        x, y = flower.client_data(settings, partition_id)
        self.x, self.y = x[:1], y[:1]
        self.update = fl.client_update(self.model, self.x, self.y, lr=settings.lr, local_steps=1, local_batch=1)
        self.results: dict = {}
        self.last = None
        w = _widgets()
        self.epsilon = w.SelectionSlider(options=[("off" if math.isinf(e) else f"{e:g}", e) for e in epsilons],
                                         value=epsilons[0], description="LocalDpMod ε per round (δ = "
                                         f"{settings.delta:g})", continuous_update=False,
                                         style={"description_width": "initial"}, layout=w.Layout(width="560px"))
        self.view = LiveView(original=self.x, scale=4, title="the server's reconstruction")
        self.summary = w.HTML()
        out = w.interactive_output(self.run, {"epsilon": self.epsilon})
        self.widget = w.VBox([self.epsilon, self.view.widget, self.summary, out])

    def run(self, epsilon: float):
        """Noise the update with LocalDpMod at ``epsilon`` (inf: off) and attack it; returns the AttackResult."""
        import dataclasses

        if math.isinf(epsilon):
            received = self.update
        else:
            s = dataclasses.replace(self.settings, dp="local", epsilon=float(epsilon))
            received = self._flower.local_dp_update(s, self.model.state_dict(), self.update, seed=self.settings.seed)
        res = fedavg_unrolled(self.model, received, input_shape=tuple(self.x.shape), num_classes=10,
                              lr=self.settings.lr, local_steps=1, local_batch=1, iterations=self.iterations,
                              truth=(self.x, self.y), callback=self.view, options=AttackOptions(callback_every=25))
        self.results[epsilon] = res
        self.last = res
        c = self.settings.clipping_norm
        std = 0.0 if math.isinf(epsilon) else c * math.sqrt(2 * math.log(1.25 / self.settings.delta)) / epsilon
        entries = sum(v.numel() for v in self.update.values())
        self.summary.value = (f"ε = {epsilon:g} per round: noise std {std:.3g} on each of {entries:,} weights "
                              f"(noise norm about {std * math.sqrt(entries):.3g}; the update is clipped to C = {c:g}) · "
                              f"<b>SSIM {res.metrics['ssim_mean']:.2f}</b>")
        return res

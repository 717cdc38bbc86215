"""The privacy-accuracy trade-off of notebook 04: no defense, full perturbation, PRECODE alone, PPP.

For every noise level of a grid, each defense trains a small classifier
briefly on the offline MNIST subset (:func:`gleak_edu.defenses.train_perturbed`)
and the trained model is then attacked on single private test images, with the
PRECODE bypass and with Inverting Gradients on all layers, on the shared
gradient that defense lets out (:func:`gleak_edu.defenses.perturbed_gradient`).

The paper (Scheliga et al., arXiv 2208.04767) trains larger models on other
data; every number in :class:`PPPSweepSettings` is this course's own choice,
made so the sweep runs in about a minute on a CPU, stated there, and the
notebook says so.

Results are cached on disk, one JSON file per (defense, noise level, seed)
cell, named by a SHA-256 of every setting that cell depends on plus the
versions of gleak_edu, torch and opacus. A file that cannot be read, whose key
does not match or whose result does not validate against the cell's schema
(:func:`_cell_schema`: types, ranges, one entry per attacked image) is
recomputed and overwritten with a warning that names it (never trusted);
writes are atomic (a temporary file, then a rename). An unusable cache folder
is found before any cell is computed (a warning; the run then does not write
the cache), and the folder is kept within a size bound. The cache machinery
is shared with :mod:`gleak_edu.arena` (:mod:`gleak_edu._cache`).

Units: the sweep's noise levels are noise multipliers σ (Opacus's meaning:
the noise std on the clipped gradient sum is σ·C, C = ``max_grad_norm``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch

from gleak_edu import data as gdata
from gleak_edu import metrics, training
from gleak_edu._cache import Array, Flag, ListOf, Number, Record, cell_key, default_cache_dir, open_cache
from gleak_edu._cache import finite as _finite
from gleak_edu._cache import number as _number
from gleak_edu._cache import versions as _versions
from gleak_edu.attacks import inverting_gradients, precode_bypass
from gleak_edu.defenses import perturbed_gradient, train_perturbed
from gleak_edu.models import MLP
from gleak_edu.precode import add_precode
from gleak_edu.scale import run_cells

__all__ = [
    "DEFENSES",
    "PPPSweepSettings",
    "SweepResult",
    "claim_check",
    "default_cache_dir",
    "ppp_sweep",
    "sweep_cell",
    "victim",
]

DEFENSES = ("none", "full", "precode", "ppp")
_ATTACKS = ("bypass", "ig")
# Bump when what a cell computes or holds changes without a version change (invalidates cached cells).
# 2: sigma -> noise_multiplier, clip -> max_grad_norm, attacks with truth=(x, y).
_CELL_FORMAT = 2


@dataclass(frozen=True)
class PPPSweepSettings:
    """Settings of the trade-off sweep (all of them the course's own choices, sized for a CPU).

    Attributes:
        noise_levels: noise multipliers σ (relative to ``max_grad_norm``: the
            noise std is σ·C) for full perturbation and PPP; none and PRECODE
            alone are noise-free.
        max_grad_norm: the clipping bound C (> 0) on each example's gradient
            norm (over the perturbed parameters; Opacus's meaning).
        seeds: training seeds; accuracies are averaged over them, and each
            seed's model is attacked.
        images: how many test images are attacked (the first ones of the test split).
        epochs, batch_size, lr: the short SGD schedule (no momentum).
        hidden, activation: the victim MLP (784-128-128-10, tanh: bounded
            activations keep noisy training stable, the "tempered sigmoid"
            choice of Papernot et al. 2021).
        bottleneck, beta: PRECODE's K and KL weight (the paper's 256 and 1e-3).
        iterations: Inverting Gradients / bypass steps per image.
        success_ssim: an attack succeeds on an image when SSIM >= this.
        delta: delta of the reported epsilon.
        test_fraction: share of the 5,000 MNIST images held out for testing.
        train_images: train on only the first this-many training images (None: all 4,000).
    """

    noise_levels: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
    max_grad_norm: float = 1.0
    seeds: tuple[int, ...] = (0, 1, 2)
    images: int = 3
    epochs: int = 2
    batch_size: int = 64
    lr: float = 0.2
    hidden: tuple[int, ...] = (128, 128)
    activation: str = "tanh"
    bottleneck: int = 256
    beta: float = 1e-3
    iterations: int = 500
    success_ssim: float = metrics.SUCCESS_SSIM
    delta: float = 1e-5
    test_fraction: float = 0.2
    train_images: int | None = None

    def __post_init__(self) -> None:
        levels = tuple(float(v) for v in self.noise_levels)
        if not levels or any(not math.isfinite(v) or v < 0 for v in levels):
            raise ValueError(f"noise_levels must be finite numbers >= 0, got {self.noise_levels}")
        object.__setattr__(self, "noise_levels", levels)
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if not self.seeds:
            raise ValueError("seeds must name at least one training seed")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(f"max_grad_norm (the clipping bound C) must be a finite number > 0, got {self.max_grad_norm}")
        if self.images < 1 or self.epochs < 1 or self.iterations < 1:
            raise ValueError("images, epochs and iterations must be at least 1")
        if self.train_images is not None and self.train_images < 1:
            raise ValueError(f"train_images must be at least 1 (or None for all), got {self.train_images}")
        if not 0 < self.success_ssim <= 1:
            raise ValueError(f"success_ssim must lie in (0, 1], got {self.success_ssim}")


def _cell_key(settings: PPPSweepSettings, defense: str, noise_multiplier: float, seed: int) -> tuple[str, dict]:
    spec = dataclasses.asdict(settings)
    for name in ("noise_levels", "seeds"):
        spec.pop(name)
    spec.update(kind="ppp-sweep-cell", format=_CELL_FORMAT, defense=defense, noise_multiplier=float(noise_multiplier),
                seed=int(seed), versions=_versions())
    return cell_key(spec), spec


def _cell_schema(settings: PPPSweepSettings) -> Record:
    """What a cached cell must hold to be used (see :func:`sweep_cell`); anything else is recomputed.

    accuracy in [0, 1]; epsilon >= 0, inf (no noise) or null (nothing
    perturbed); diverged a bool; train_seconds finite >= 0; steps a whole
    number >= 0; attacks exactly "bypass" and "ig", each with one entry per
    attacked image: ssim in [-1, 1] or null, psnr finite or null,
    reconstructions ``[1][28][28]`` in [0, 1].
    """
    n = settings.images
    attack = Record({
        "ssim": ListOf(Number(-1.0, 1.0, null=True), n),
        "psnr": ListOf(Number(null=True), n),
        "reconstructions": ListOf(Array((1, 28, 28), 0.0, 1.0), n),
    })
    return Record({
        "accuracy": Number(0.0, 1.0),
        "epsilon": Number(0.0, null=True, inf=True),
        "diverged": Flag(),
        "train_seconds": Number(0.0),
        "steps": Number(0, 2**53, integer=True),
        "attacks": Record({a: attack for a in _ATTACKS}, exact=True),
    })


def victim(settings: PPPSweepSettings, defense: str, seed: int = 0):
    """The sweep's untrained victim for ``defense``: the MLP of ``settings`` (PyTorch init from ``seed``), with PRECODE for "precode" and "ppp".

    ``settings`` is any object with ``hidden``, ``activation``, ``bottleneck`` and ``beta``
    (:class:`PPPSweepSettings`, :class:`gleak_edu.arena.ArenaSettings`); ``defense`` names a
    PRECODE model when it is "precode" or "ppp".
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = MLP((1, 28, 28), 10, settings.hidden, settings.activation)
    if defense in ("precode", "ppp"):
        add_precode(model, settings.bottleneck, settings.beta, seed=seed)
    return model


_SCOPE = {"none": "none", "full": "full", "precode": "none", "ppp": "ppp"}


def sweep_cell(settings: PPPSweepSettings, defense: str, noise_multiplier: float, seed: int, data=None) -> dict:
    """Train one defense at one noise multiplier and seed, attack it, return the cell's results (no cache).

    ``noise_multiplier`` is σ of "full" and "ppp" (noise std σ·C, C =
    ``settings.max_grad_norm``); 0 for "none" and "precode".

    Returns a dict: ``accuracy`` (test, in [0, 1]), ``epsilon`` (Opacus RDP at
    ``settings.delta``; inf without noise, nan with nothing perturbed),
    ``diverged``, ``train_seconds``, ``steps``, and ``attacks``:
    ``{"bypass"|"ig": {"ssim": [...], "psnr": [...] (dB), "reconstructions":
    nested lists [images][1][28][28] in [0, 1]}}``. For a model without a
    bottleneck the bypass matches every layer, i.e. it *is* Inverting
    Gradients, so "bypass" repeats "ig" there (one attack run, not two).

    Raises:
        ValueError: for an unknown defense.
    """
    if defense not in DEFENSES:
        raise ValueError(f"defense must be one of {DEFENSES}, got {defense!r}")
    train, test = data or training.split(gdata.mnist_subset(), settings.test_fraction, seed=0)
    if settings.train_images is not None:
        train = (train[0][: settings.train_images], train[1][: settings.train_images])
    model = victim(settings, defense, seed)
    scope = _SCOPE[defense]
    trained = train_perturbed(
        model, train, test, noise_multiplier=noise_multiplier, max_grad_norm=settings.max_grad_norm, scope=scope,
        epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr, delta=settings.delta, seed=seed,
    )
    model.train()  # the victim shares a training step's gradient (PRECODE samples)
    attacks = {name: {"ssim": [], "psnr": [], "reconstructions": []} for name in _ATTACKS}
    has_bottleneck = defense in ("precode", "ppp")
    for i in range(settings.images):
        x, y = test[0][i : i + 1], test[1][i : i + 1]
        common = dict(input_shape=tuple(x.shape), num_classes=10, iterations=settings.iterations, seed=i, truth=(x, y))
        # seeded: PRECODE's samples in the victim's step and in IG's train-mode forward passes
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1000 * seed + i)
            shared = perturbed_gradient(model, x, y, noise_multiplier=noise_multiplier, max_grad_norm=settings.max_grad_norm,
                                        scope=scope, seed=1000 * seed + i)
            runs = {"ig": inverting_gradients(model, shared, **common)}
            runs["bypass"] = precode_bypass(model, shared, **common) if has_bottleneck else runs["ig"]
        for name, res in runs.items():
            attacks[name]["ssim"].append(float(metrics.ssim(res.reconstruction, x)[0]))
            attacks[name]["psnr"].append(float(metrics.psnr(res.reconstruction, x)[0]))
            attacks[name]["reconstructions"].append(res.reconstruction[0].tolist())
    return {
        "accuracy": trained.test_accuracy, "epsilon": trained.epsilon, "diverged": trained.diverged,
        "train_seconds": trained.seconds, "steps": trained.steps, "attacks": attacks,
    }


@dataclass
class SweepResult:
    """Output of :func:`ppp_sweep`.

    Attributes:
        settings: the :class:`PPPSweepSettings` used.
        cells: ``{(defense, noise_multiplier, seed): cell dict}`` (see :func:`sweep_cell`).
        rows: the tidy table, one row per (defense, noise level, attack):
            defense, noise_multiplier (σ; noise std σ·C; 0 for none/PRECODE), attack
            ("bypass" or "ig"), accuracy (mean test accuracy over seeds, in
            [0, 1]), accuracy_loss (points of accuracy below "none", in [0, 1]),
            epsilon (at ``settings.delta``; inf without noise), ssim and psnr
            (means over seeds and images; dB), success_rate (share of attacked
            images with SSIM >= ``settings.success_ssim``) with its counts successes
            and n and its 95 % Wilson interval success_low, success_high
            (:func:`gleak_edu.metrics.success_rate`), diverged (any seed).
        cached, computed: how many cells came from the cache / were computed.
        test_images: the attacked images ``[images, 1, 28, 28]``.
    """

    settings: PPPSweepSettings
    cells: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    cached: int = 0
    computed: int = 0
    test_images: torch.Tensor | None = None

    def select(self, defense: str, attack: str = "bypass") -> list[dict]:
        """Rows of one defense and attack, by increasing noise multiplier."""
        return sorted((r for r in self.rows if r["defense"] == defense and r["attack"] == attack),
                      key=lambda r: r["noise_multiplier"])

    def reconstructions(self, defense: str, noise_multiplier: float, attack: str = "bypass",
                        seed: int | None = None) -> torch.Tensor:
        """The attack's reconstructions ``[images, 1, 28, 28]`` for one cell (default: the first seed)."""
        seed = self.settings.seeds[0] if seed is None else seed
        cell = self.cells[(defense, 0.0 if defense in ("none", "precode") else float(noise_multiplier), seed)]
        return torch.tensor(cell["attacks"][attack]["reconstructions"], dtype=torch.float32)

    def table(self) -> str:
        """The tidy table as aligned text."""
        head = f"{'defense':8} {'σ (×C)':>6} {'attack':6} {'accuracy':>8} {'loss':>6} {'epsilon':>8} {'SSIM':>6} {'PSNR':>6} {'success [95 % CI]':>17}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            eps = "inf" if math.isinf(r["epsilon"]) else ("-" if math.isnan(r["epsilon"]) else f"{r['epsilon']:.3g}")
            lines.append(
                f"{r['defense']:8} {r['noise_multiplier']:6g} {r['attack']:6} {r['accuracy']:8.3f} {r['accuracy_loss']:6.3f} "
                f"{eps:>8} {r['ssim']:6.3f} {r['psnr']:6.1f} "
                f"{metrics.rate_brief(r):>17}" + ("  diverged" if r["diverged"] else "")
            )
        lines.append(f"σ: the noise multiplier (noise std σ·C, C = {self.settings.max_grad_norm:g})")
        return "\n".join(lines)

    def to_json(self) -> dict:
        """Settings, versions and rows (each rate with ``successes``, ``n``, ``success_low``, ``success_high``), JSON-ready (inf written as the string "inf", nan as null)."""
        return _finite({"settings": dataclasses.asdict(self.settings), "versions": _versions(), "rows": self.rows})


def _rows(settings: PPPSweepSettings, cells: dict) -> list[dict]:
    def mean(v: Iterable[float | None]) -> float:
        v = [x for x in v if x is not None]  # null: nan written to the cache
        return sum(v) / len(v) if v else math.nan

    groups = [("none", 0.0), ("precode", 0.0)] + [(d, s) for s in settings.noise_levels for d in ("full", "ppp")]
    base = mean(_number(cells[("none", 0.0, seed)]["accuracy"]) for seed in settings.seeds)
    rows = []
    for defense, noise_multiplier in groups:
        group = [cells[(defense, noise_multiplier, seed)] for seed in settings.seeds]
        acc = mean(_number(c["accuracy"]) for c in group)
        for attack in _ATTACKS:
            ssims = [v for c in group for v in c["attacks"][attack]["ssim"]]
            psnrs = [v for c in group for v in c["attacks"][attack]["psnr"]]
            rows.append({
                "defense": defense, "noise_multiplier": noise_multiplier, "attack": attack, "accuracy": acc,
                "accuracy_loss": base - acc, "epsilon": _number(group[0]["epsilon"]),
                "ssim": mean(ssims), "psnr": mean(psnrs),
                **metrics.success_rate([v is not None and v >= settings.success_ssim for v in ssims]).row_fields(),
                "diverged": any(bool(c["diverged"]) for c in group),
                "accuracy_per_seed": [_number(c["accuracy"]) for c in group],
            })
    return rows


def _cell_task(defense: str, noise_multiplier: float, seed: int, shared) -> dict:
    """One sweep cell where :func:`gleak_edu.scale.run_cells` runs it; ``shared`` is ``(settings, (train, test))``."""
    settings, split_data = shared
    return sweep_cell(settings, defense, noise_multiplier, seed, data=split_data)


def ppp_sweep(
    settings: PPPSweepSettings | None = None,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = False,
    workers: int = 1,
    address: str | None = None,
    **overrides,
) -> SweepResult:
    """Run (or load from the cache) the trade-off sweep of notebook 04.

    Args:
        settings: the grid and recipe (default :class:`PPPSweepSettings`);
            ``overrides`` replace single fields, e.g. ``noise_levels=(0.1, 1.0)``.
        cache_dir: where cells are cached (default :func:`default_cache_dir`).
            A folder that cannot be used (a file in its place, not writable)
            gives one warning before any cell is computed, and the run goes on
            without writing the cache (see :func:`gleak_edu._cache.open_cache`).
        use_cache: False computes every cell (and still writes the cache).
        progress: a tqdm bar over cells (those from the cache count as done at the start).
        workers: 1 computes missing cells in this process; more runs them as tasks of a local
            Ray with this many CPUs (:func:`gleak_edu.scale.run_cells`; the numbers do not depend on it).
        address: a Ray cluster for the missing cells (default ``$RAY_ADDRESS``).

    Returns:
        :class:`SweepResult` (cells, tidy rows, cache counts).

    Raises:
        ValueError: for invalid settings (see :class:`PPPSweepSettings`) or workers < 1.
        ImportError: when an address is given and Ray is not installed.
    """
    from tqdm.auto import tqdm

    settings = dataclasses.replace(settings or PPPSweepSettings(), **overrides)
    cache = open_cache(cache_dir, "ppp")  # an unusable folder: one warning now, before any cell is computed
    schema = _cell_schema(settings)
    todo = [(d, 0.0, s) for d in ("none", "precode") for s in settings.seeds]
    todo += [(d, nm, s) for nm in settings.noise_levels for d in ("full", "ppp") for s in settings.seeds]
    result = SweepResult(settings)
    missing = {}
    for where in todo:
        key, spec = _cell_key(settings, *where)
        cell = cache.read(key, schema) if use_cache else None
        if cell is None:
            missing[where] = (key, spec)
        else:
            result.cached += 1
            result.cells[where] = cell
    loaded = training.split(gdata.mnist_subset(), settings.test_fraction, seed=0) if missing else None

    def store(where, cell: dict) -> None:
        key, spec = missing[where]
        cache.write(key, spec, cell)
        result.cells[where] = cell
        result.computed += 1

    bar = tqdm(total=len(todo), initial=result.cached, desc=f"sweep ({result.cached} from cache)",
               disable=not progress or not missing, leave=False)
    try:
        run_cells(_cell_task, list(missing), store, workers=int(workers), address=address,
                  shared=(settings, loaded), progress=bar)
    finally:
        bar.close()
    result.cells = {where: result.cells[where] for where in todo}  # the grid's order, whatever order cells finished in
    cache.close()  # the size bound: least recently used cells of other runs evicted
    result.rows = _rows(settings, result.cells)
    _, (x_test, _) = loaded or training.split(gdata.mnist_subset(), settings.test_fraction, seed=0)
    result.test_images = x_test[: settings.images]
    return result


def claim_check(result: SweepResult, *, ssim_max: float = 0.3, ratio: float = 2.0) -> list[dict]:
    """Test PPP's claim at every noise level of a sweep.

    The claim (arXiv 2208.04767, as issue 5 states it): at some noise level PPP
    keeps the bypass's mean SSIM <= ``ssim_max`` while full perturbation at the
    same level loses at least ``ratio`` times as much test accuracy (against
    no defense) as PPP.

    Returns one dict per noise level: noise_multiplier, ppp_bypass_ssim, full_ig_ssim,
    ppp_loss, full_loss (accuracy points in [0, 1]), loss_ratio (full / PPP;
    inf when PPP loses nothing), holds (bool).
    """
    out = []
    for ppp_row, full_row in zip(result.select("ppp", "bypass"), result.select("full", "ig")):
        ppp_loss, full_loss = ppp_row["accuracy_loss"], full_row["accuracy_loss"]
        r = full_loss / ppp_loss if ppp_loss > 0 else (math.inf if full_loss > 0 else math.nan)
        out.append({
            "noise_multiplier": ppp_row["noise_multiplier"], "ppp_bypass_ssim": ppp_row["ssim"], "full_ig_ssim": full_row["ssim"],
            "ppp_loss": ppp_loss, "full_loss": full_loss, "loss_ratio": r,
            "holds": bool(ppp_row["ssim"] <= ssim_max and full_loss > 0 and r >= ratio),
        })
    return out

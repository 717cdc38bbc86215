"""One cell of the arena: train the victim under one defense, then run every possible attack on its shared gradient.

Every defense trains through :func:`gleak_edu.defenses.train_perturbed`, the
DP-SGD loop notebook 05's ``train_dp`` uses: "none", "precode", "noise" and
"pruning" with ``scope="none"`` (ordinary SGD on the same batches; noise and
pruning act on each step's mean gradient through ``gradient_transform``),
"ppp" and the DP defenses with their clipping and noise. Every attack runs
through the registry (:data:`gleak_edu.attacks.ATTACKS`).
"""

from __future__ import annotations

import math
import time

import torch

from gleak_edu import data as gdata
from gleak_edu import metrics, training
from gleak_edu.arena.settings import (
    CLASSES,
    DEFENSE_SPECS,
    NOISY,
    ArenaSettings,
    _check_defense,
    possible_attacks,
)
from gleak_edu.attacks import ATTACKS as ATTACK_REGISTRY
from gleak_edu.attacks import AttackOptions
from gleak_edu.defenses import (
    dp_shared_gradient,
    gaussian_noise,
    noise_schedule,
    perturbation_scope,
    perturbed_gradient,
    prune_gradients,
    steps_per_epoch,
    train_perturbed,
)
from gleak_edu.fl import client_gradient
from gleak_edu.sweeps import victim

__all__ = ["arena_cell", "attacked_noise_std", "gradient_snr", "shared_gradient"]


def _train(settings: ArenaSettings, defense: str, level: float, seed: int, model, train, test) -> tuple[dict, float | None]:
    """Train ``model`` under ``defense`` at ``level`` (in the defense's unit) with :func:`train_perturbed`.

    Returns:
        ``(summary, attacked_noise_multiplier)``: the summary holds accuracy,
        epsilon (None unless DP), diverged, train_seconds, steps; the noise
        multiplier is that of the last step taken (what the attacked client
        uses), or None for a defense without one.
    """
    common = dict(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr, delta=settings.delta, seed=seed)
    attacked: float | None = None
    if defense in ("none", "precode", "pruning", "noise"):
        def pruned(grads, batch_size, step):
            return prune_gradients(grads, level)

        def noised(grads, batch_size, step):
            # noise std `level` on the batch's gradient sum = level / B on its mean (DP-SGD's noise, no clipping)
            return gaussian_noise(grads, level / batch_size, seed=(seed + 1) * 1_000_003 + step)

        transform = {"pruning": pruned, "noise": noised}.get(defense)
        res = train_perturbed(model, train, test, noise_multiplier=0.0, max_grad_norm=settings.max_grad_norm,
                              scope="none", gradient_transform=transform, **common)
    elif defense == "dp_dynamic":
        total = settings.epochs * steps_per_epoch(len(train[0]), settings.batch_size)
        schedule = noise_schedule(settings.dynamic_schedule, total, level, level * settings.dynamic_end,
                                  updates=settings.dynamic_updates)
        res = train_perturbed(model, train, test, noise_multiplier=schedule, max_grad_norm=settings.max_grad_norm,
                              clipping="dynamic", scope="full", **common)
        attacked = float(schedule[max(res.steps, 1) - 1])
    else:  # ppp, dp_fixed
        res = train_perturbed(model, train, test, noise_multiplier=level, max_grad_norm=settings.max_grad_norm,
                              scope="ppp" if defense == "ppp" else "full", **common)
        attacked = float(level)
    # PPP's epsilon covers only its perturbed gradients (the rest leave unperturbed): no guarantee for the model
    eps = float(res.epsilon) if DEFENSE_SPECS[defense].dp else None
    summary = {"accuracy": res.test_accuracy, "epsilon": eps, "diverged": res.diverged,
               "train_seconds": res.seconds, "steps": res.steps}
    return summary, attacked


def attacked_noise_std(settings: ArenaSettings, defense: str, level: float) -> float | None:
    """The std of the Gaussian noise on each (perturbed) entry of one image's shared gradient under ``defense``.

    0 for "none", "pruning" and "precode"; the level itself for "noise" (an
    absolute std); σ·C for "ppp" and "dp_fixed" (σ the level, C =
    ``settings.max_grad_norm``; one image, so no division by a batch size);
    None for "dp_dynamic", whose bound (and so its std) is each example's own.

    Raises:
        ValueError: for an unknown defense.
    """
    _check_defense(defense)
    knob = DEFENSE_SPECS[defense].knob
    if knob == "noise_std":
        return float(level)
    if defense == "dp_dynamic":
        return None
    if knob == "noise_multiplier":
        return float(level) * settings.max_grad_norm
    return 0.0


def shared_gradient(settings: ArenaSettings, defense: str, level: float, model, x, y, *,
                    noise_multiplier: float | None = None, seed: int):
    """The gradient a client shares on (x, y) under ``defense`` at its last training step.

    Args:
        settings: the recipe (its ``max_grad_norm`` is C).
        defense: one of :data:`gleak_edu.arena.DEFENSES`.
        level: the defense's level in its unit (a noise std for "noise", a
            noise multiplier for "ppp" and "dp_fixed", a pruned fraction for
            "pruning"; ignored otherwise).
        model: the trained victim, in train mode (PRECODE samples).
        x: one image float32 ``[1, 1, 28, 28]`` in [0, 1]; y: its label int64 ``[1]``.
        noise_multiplier: "dp_dynamic" only: the noise multiplier of the
            attacked step (its schedule's last value); it clips with the
            dynamic bound.
        seed: seed of the noise.

    Returns:
        OrderedDict name -> gradient tensor, like :func:`gleak_edu.fl.client_gradient`.

    Raises:
        ValueError: for an unknown defense, or "dp_dynamic" without ``noise_multiplier``.
    """
    _check_defense(defense)
    c = settings.max_grad_norm
    if defense in ("none", "precode"):
        return client_gradient(model, x, y)
    if defense == "pruning":
        return prune_gradients(client_gradient(model, x, y), level)
    if defense == "noise":
        return gaussian_noise(client_gradient(model, x, y), level, seed=seed)
    if defense == "ppp":
        return perturbed_gradient(model, x, y, noise_multiplier=level, max_grad_norm=c, scope="ppp", seed=seed)
    if defense == "dp_fixed":
        return dp_shared_gradient(model, x, y, noise_multiplier=level, max_grad_norm=c, seed=seed)
    if noise_multiplier is None:
        raise ValueError("dp_dynamic's shared gradient needs the noise multiplier of the attacked step")
    return dp_shared_gradient(model, x, y, noise_multiplier=noise_multiplier, max_grad_norm=c, clipping="dynamic",
                              seed=seed)


def _norm(grads, names) -> float:
    return float(torch.sqrt(sum(grads[n].double().pow(2).sum() for n in names)))


def gradient_snr(settings: ArenaSettings, defense: str, level: float, model, x, y, shared=None, *,
                 noise_multiplier: float | None = None, seed: int) -> dict:
    """How far one image's shared gradient stands above the noise the defense adds to it.

    Compares the shared gradient (:func:`shared_gradient`, or ``shared`` when
    the caller already has it) with the same gradient without its noise
    (clipped as the defense clips, noise multiplier 0) and with the plain one.
    Each gradient is computed under ``torch.manual_seed(seed)`` inside a forked
    random state, as the arena's cell seeds image i (``seed = 1000 * seed + i``),
    so PRECODE's sample and the noise are the ones the attacks saw and the
    caller's random stream is left as it was.

    Args:
        settings, defense, level, noise_multiplier, seed: as :func:`shared_gradient`.
        model: the defense's trained victim, in train mode.
        x: one image float32 ``[1, 1, 28, 28]`` in [0, 1]; y: its label int64 ``[1]``.
        shared: the shared gradient already computed with these arguments (None: computed here).

    Returns:
        dict: ``gradient_norm`` (the plain gradient's L2 norm over every parameter,
        before any defense), ``signal_norm`` (L2 norm of the shared gradient
        without its noise, after clipping and pruning, over the entries the
        noise goes on: every entry, PPP's deterministic ones for "ppp"),
        ``noise_norm`` (L2 norm of the noise on those entries; 0 without noise),
        ``snr`` (signal_norm / noise_norm, a ratio of norms; None without noise),
        ``cosine`` (cosine similarity, over every parameter, of the shared
        gradient without its noise with the plain gradient: how much of the
        gradient's direction pruning or clipping keeps; 1 when they leave it
        alone), ``entries`` (how many entries the noise goes on).

    Raises:
        ValueError: as :func:`shared_gradient`.
    """
    _check_defense(defense)

    def seeded(fn, *args, **kwargs):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # PRECODE's sample, as in the arena's cell
            return fn(*args, **kwargs)

    c = settings.max_grad_norm
    plain = seeded(client_gradient, model, x, y)
    if shared is None:
        shared = seeded(shared_gradient, settings, defense, level, model, x, y, noise_multiplier=noise_multiplier,
                        seed=seed)
    names = list(shared)
    if defense == "noise":
        clean = plain
    elif defense == "ppp":
        clean = seeded(perturbed_gradient, model, x, y, noise_multiplier=0.0, max_grad_norm=c, scope="ppp", seed=seed)
        names = perturbation_scope(model, "ppp")
    elif defense == "dp_fixed":
        clean = seeded(dp_shared_gradient, model, x, y, noise_multiplier=0.0, max_grad_norm=c, seed=seed)
    elif defense == "dp_dynamic":
        clean = seeded(dp_shared_gradient, model, x, y, noise_multiplier=0.0, max_grad_norm=c, clipping="dynamic",
                       seed=seed)
    else:  # none, pruning, precode: no noise
        clean = shared
    noise = {n: shared[n] - clean[n] for n in names}
    signal_norm, noise_norm = _norm(clean, names), _norm(noise, names)
    every = list(plain)
    dot = float(sum((clean[n].double() * plain[n].double()).sum() for n in every))
    cosine = dot / max(_norm(clean, every) * _norm(plain, every), 1e-30)
    return {"gradient_norm": _norm(plain, every), "signal_norm": signal_norm, "noise_norm": noise_norm,
            "snr": signal_norm / noise_norm if noise_norm > 0 else None,
            "cosine": max(-1.0, min(1.0, cosine)), "entries": int(sum(clean[n].numel() for n in names))}


def _run_attack(attack: str, settings: ArenaSettings, model, shareds, xs, ys) -> list[tuple]:
    """One attack on every image of a cell through the registry, all images in one vectorised run
    (:meth:`gleak_edu.attacks.AttackSpec.run_many`; image i's attack is seeded with i).

    Returns:
        one ``(reconstruction [1, 1, 28, 28] in [0, 1] or None, predicted label or None (an attack that
        reads no label), error, seconds)`` per image; the error is "" or the first line of the ValueError that
        stopped the attack on that image (e.g. an all-zero output-layer gradient leaves iDLG no label to read);
        seconds is the image's share of the run.
    """
    spec = ATTACK_REGISTRY[attack]
    kwargs: dict = dict(input_shape=(1, *xs.shape[1:]), num_classes=CLASSES)
    budget = settings.iterations(attack)
    if budget is not None:
        kwargs["iterations"] = budget
    restarts = settings.restarts(attack)
    if restarts > 1:
        kwargs["options"] = AttackOptions(restarts=restarts)
    n = len(shareds)
    start = time.perf_counter()
    results = spec.run_many(model, shareds, seeds=list(range(n)),
                            truths=[(xs[i : i + 1], ys[i : i + 1]) for i in range(n)], **kwargs)
    share = (time.perf_counter() - start) / n
    out = []
    for res in results:
        if isinstance(res, ValueError):
            out.append((None, None, str(res).splitlines()[0], share))
        else:
            label = None if res.labels is None else int(res.labels.reshape(-1)[0])
            out.append((res.reconstruction.detach(), label, "", share))  # every AttackResult is already in [0, 1]
    return out


def arena_cell(settings: ArenaSettings, defense: str, level: float, seed: int, data=None) -> dict:
    """Train one defense at one level and seed, run every possible attack on it, return the cell (no cache).

    Args:
        settings: the recipe (:class:`gleak_edu.arena.ArenaSettings`).
        defense: one of :data:`gleak_edu.arena.DEFENSES`.
        level: in the unit of the defense's level
            (:data:`gleak_edu.arena.DEFENSE_LEVEL`): the noise std for
            "noise"; the noise multiplier σ (std σ·C) for "ppp" and
            "dp_fixed", and the start of "dp_dynamic"'s schedule; the pruned
            fraction for "pruning"; ignored (use 0) for "none" and "precode".
        seed: training seed (model init, batches, noise); the attacked
            images' noise and PRECODE samples are seeded by ``1000 * seed + i``.
        data: ``(train, test)`` as from :func:`gleak_edu.training.split`
            (default: the MNIST subset split at ``settings.test_fraction``).

    Returns:
        dict with ``accuracy`` (test, in [0, 1]), ``epsilon`` (at
        ``settings.delta`` for the DP defenses; None elsewhere: noise without
        clipping has no bounded sensitivity, and PPP's covers only part of the
        gradient), ``diverged``, ``train_seconds``, ``steps``,
        ``attacked_noise_multiplier`` (σ of the attacked step for "ppp",
        "dp_fixed" (the level) and "dp_dynamic" (its schedule's end); None for
        the defenses without one), ``attacked_noise_std`` (the noise std per
        perturbed entry of the attacked gradient, see
        :func:`attacked_noise_std`; None for "dp_dynamic"), ``truth``
        ``[images][1][28][28]`` and ``labels`` (the attacked images),
        ``snr`` (one :func:`gradient_snr` dict per image: the shared
        gradient's signal and noise norms and their ratio), and
        ``attacks``: for every attack that is possible against the defense,
        ``{"ssim": [...] (in [-1, 1]), "psnr": [...] (dB, at most 100),
        "label_correct": [...] (None for an attack that reads no label, e.g.
        analytic), "seconds": [...], "errors": [...] ("" or why the attack
        could not run; then SSIM and PSNR are None), "reconstructions":
        [images][1][28][28] (rounded to 1e-4)}``.

    Raises:
        ValueError: for an unknown defense, or a level that is not valid for it.
    """
    _check_defense(defense)
    level = float(level)
    if defense in NOISY and not (math.isfinite(level) and level > 0):
        raise ValueError(f"the level of {defense!r} ({DEFENSE_SPECS[defense].knob}) must be a finite number > 0, got {level}")
    if defense == "pruning" and not 0 <= level < 1:
        raise ValueError(f"the pruned fraction must lie in [0, 1), got {level}")
    train, test = data or training.split(gdata.mnist_subset(), settings.test_fraction, seed=0)
    if settings.train_images is not None:
        train = (train[0][: settings.train_images], train[1][: settings.train_images])
    if settings.images > len(test[0]):
        raise ValueError(f"images ({settings.images}) exceeds the {len(test[0])} test images")
    model = victim(settings, defense, seed)  # the sweep's MLP (+ PRECODE for precode/ppp), same init
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # fastest for these tiny models, and the same numbers in every worker process
    try:
        return _attack_cell(settings, defense, level, seed, model=model, train=train, test=test)
    finally:
        torch.set_num_threads(threads)


def _attack_cell(settings: ArenaSettings, defense: str, level: float, seed: int, *, model, train, test) -> dict:
    summary, attacked = _train(settings, defense, level, seed, model, train, test)
    model.train()  # a client shares a training step's gradient (PRECODE samples)
    attacks = {a: {"ssim": [], "psnr": [], "label_correct": [], "seconds": [], "errors": [], "reconstructions": []}
               for a in possible_attacks(defense)}
    xs, ys = test[0][: settings.images], test[1][: settings.images]
    shareds = []
    with torch.random.fork_rng(devices=[]):
        for i in range(settings.images):
            torch.manual_seed(1000 * seed + i)  # PRECODE's sample of image i (its noise has its own seed)
            shareds.append(shared_gradient(settings, defense, level, model, xs[i : i + 1], ys[i : i + 1],
                                           noise_multiplier=attacked, seed=1000 * seed + i))
        # the attacks' own draws (PRECODE's samples) go on from there: with one image, the stream a cell always used
        runs = {attack: _run_attack(attack, settings, model, shareds, xs, ys) for attack in attacks}
    model.train()
    snr = [gradient_snr(settings, defense, level, model, xs[i : i + 1], ys[i : i + 1], shareds[i],
                        noise_multiplier=attacked, seed=1000 * seed + i) for i in range(settings.images)]
    for attack, out in attacks.items():
        for i, (rec, label, error, seconds) in enumerate(runs[attack]):
            x, y = xs[i : i + 1], ys[i : i + 1]
            out["seconds"].append(seconds)
            out["errors"].append(error)
            if rec is None:
                out["ssim"].append(None)
                out["psnr"].append(None)
                out["reconstructions"].append(torch.zeros_like(x[0]).tolist())
            else:
                rec = (rec * 1e4).round() / 1e4  # what the cache keeps: score the same numbers
                out["ssim"].append(float(metrics.ssim(rec, x)[0]))
                out["psnr"].append(float(metrics.psnr(rec, x)[0]))
                out["reconstructions"].append(rec[0].tolist())
            out["label_correct"].append(label is not None and label == int(y[0]))
    for attack, out in attacks.items():
        if not ATTACK_REGISTRY[attack].recovers_labels:
            out["label_correct"] = None  # it reads no label: nothing to be right or wrong about
    return {**summary, "attacked_noise_multiplier": attacked,
            "attacked_noise_std": attacked_noise_std(settings, defense, level),
            "truth": xs.tolist(), "labels": ys.tolist(), "snr": snr, "attacks": attacks}

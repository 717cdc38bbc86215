"""Notebook 05's exercises, questions and figures (gleak_edu.exercises.nb05, gleak_edu.viz.dp): fast, no training."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from matplotlib.colors import to_hex  # noqa: E402

from gleak_edu import viz  # noqa: E402
from gleak_edu.defenses import DPRun, clip_and_noise  # noqa: E402
from gleak_edu.exercises import QUESTIONS  # noqa: E402
from gleak_edu.exercises import nb05 as ex  # noqa: E402
from gleak_edu.viz.palette import DEFENSE, ROLE, SCHEDULE  # noqa: E402

T, Q, DELTA, UPDATES = 40, 64 / 4000, 1e-5, 5  # a short schedule: the PRV accountant stays fast


# ---------------------------------------------------------------------------- the scaffolded DP-SGD step


def _solution(per_example_grads, max_grad_norm, noise_multiplier, z):
    norms = per_example_grads.norm(dim=1, keepdim=True)
    clipped = per_example_grads * torch.clamp(max_grad_norm / norms, max=1.0)
    noise = noise_multiplier * max_grad_norm * z
    return (clipped.sum(dim=0) + noise) / len(per_example_grads)


def _blank(per_example_grads, max_grad_norm, noise_multiplier, z):
    norms = per_example_grads.norm(dim=1, keepdim=True)  # noqa: F841 (the notebook's scaffold, unfilled)
    clipped = ...
    noise = ...
    return (clipped.sum(dim=0) + noise) / len(per_example_grads)


def _no_clip(g, c, s, z):
    return (g.sum(0) + s * c * z) / len(g)


def _always_to_c(g, c, s, z):  # scales short rows up too
    return (g / g.norm(dim=1, keepdim=True) * c).sum(0) / len(g) + s * c * z / len(g)


def _noise_without_c(g, c, s, z):
    clipped = g * torch.clamp(c / g.norm(dim=1, keepdim=True), max=1.0)
    return (clipped.sum(0) + s * z) / len(g)


def _noise_after_mean(g, c, s, z):  # noise on the mean instead of the sum: B times too much
    clipped = g * torch.clamp(c / g.norm(dim=1, keepdim=True), max=1.0)
    return clipped.mean(0) + s * c * z


def test_reference_step_is_clip_and_noise_then_the_noisy_mean():
    g = torch.tensor([[3.0, 4.0], [0.3, 0.4]], dtype=torch.float64)  # norms 5 and 0.5
    z = torch.tensor([1.0, -1.0], dtype=torch.float64)
    out = ex.dp_sgd_step(g, 1.0, 2.0, z)
    clipped = torch.tensor([[0.6, 0.8], [0.3, 0.4]], dtype=torch.float64)
    assert torch.allclose(out, (clipped.sum(0) + 2.0 * z) / 2)
    assert torch.allclose(clip_and_noise({"g": g[0]}, 0.0, 1.0)["g"], clipped[0])


def test_step_check_accepts_the_solution_and_reports_a_blank(capsys):
    assert ex.check_dp_sgd_step(_solution).correct is True
    assert capsys.readouterr().out.startswith("Correct")
    assert ex.check_dp_sgd_step(_blank).correct is None


@pytest.mark.parametrize("wrong, part", [(_no_clip, "clipped"), (_always_to_c, "clipped"),
                                         (_noise_without_c, "noise"), (_noise_after_mean, "noise")])
def test_step_check_rejects_wrong_steps_with_a_hint_about_the_wrong_part(wrong, part, capsys):
    assert ex.check_dp_sgd_step(wrong).correct is False
    out = capsys.readouterr().out
    assert out.startswith("Not quite") and f"`{part}`" in out
    assert "clamp" not in out and "* z" not in out  # a hint, not the line


# ---------------------------------------------------------------------------- predict first, then run


def test_cost_prediction_is_registered_and_observed_from_the_run():
    q = QUESTIONS["05.cost"]
    assert q.answer is None and set(q.options) == set(ex.COST_RATIOS)
    assert ex.observed_cost({"fixed": 0.24, "linear": 6.19, "cyclic": 6.15}) == "c"
    assert ex.observed_cost({"fixed": 1.0, "linear": 3.0}) == "b"
    assert ex.observed_cost({"fixed": 1.0, "linear": 1.5}) == "a"
    with pytest.raises(ValueError):
        ex.observed_cost({"linear": 3.0})


def test_prediction_and_reveal(capsys):
    assert ex.predict("05.cost", None).correct is None
    ex.predict("05.cost", "c")
    assert ex.reveal("05.cost", "c").correct is True
    ex.predict("05.cost", "a")
    assert ex.reveal("05.cost", "c").correct is False


def test_every_question_key_starts_with_05():
    ours = [k for k in QUESTIONS if k.startswith("05.")]
    assert {"05.cost", "05.why-end"} <= set(ours)
    assert all(QUESTIONS[k].key == k for k in ours)


# ---------------------------------------------------------------------------- the why question


def test_why_question(capsys):
    q = QUESTIONS["05.why-end"]
    assert ex.ask("05.why-end", None).correct is None
    assert ex.ask("05.why-end", q.answer).correct is True
    for letter in set(q.options) - {q.answer}:
        fb = ex.ask("05.why-end", letter)
        assert fb.correct is False and q.hints[letter] in fb.message


# ---------------------------------------------------------------------------- the budget exercise


def test_budget_check(capsys):
    eps, sigma = ex.budget_reference(T, Q, DELTA, UPDATES)
    assert 0.3 < sigma < 3.0 and eps > 0
    assert ex.check_budget(None, None, T=T, q=Q, delta=DELTA, updates=UPDATES).correct is None
    assert ex.check_budget(eps, sigma, T=T, q=Q, delta=DELTA, updates=UPDATES).correct is True
    capsys.readouterr()
    for wrong in ((eps * 1.2, sigma), (eps, sigma * 1.2), (eps * 0.5, sigma * 2), ("x", sigma)):
        fb = ex.check_budget(*wrong, T=T, q=Q, delta=DELTA, updates=UPDATES)
        out = capsys.readouterr().out
        assert fb.correct is False
        for value in (eps, sigma):  # never the expected values, in any rounding
            for digits in (1, 2, 3, 4):
                assert f"{value:.{digits}f}" not in out


def test_budget_check_names_the_wrong_accountant(capsys):
    from gleak_edu.defenses import epsilon, history_from_noise_multipliers, noise_schedule

    rdp = epsilon(history_from_noise_multipliers(noise_schedule("cyclic", T, 3.0, 0.5, updates=UPDATES), Q), DELTA)
    fb = ex.check_budget(rdp, 1.0, T=T, q=Q, delta=DELTA, updates=UPDATES)
    assert fb.correct is False and "RDP" in fb.message


# ---------------------------------------------------------------------------- figures


def _run(method: str, sigmas=(3.0, 2.0, 1.0), ssims=((0.1, 0.05), (0.7, 0.2), (0.9, 0.3))) -> DPRun:
    img = torch.rand(1, 1, 8, 8).tolist()[0]
    cps = [{"step": i, "noise_multiplier": s, "max_grad_norm": 1.0,
            "ig": {"ssim": [a], "psnr": [10.0], "label_correct": [None], "reconstructions": [img]},
            "idlg": {"ssim": [b], "psnr": [9.0], "label_correct": [True], "reconstructions": [img]}}
           for i, (s, (a, b)) in enumerate(zip(sigmas, ssims))]
    return DPRun(method=method, clipping="flat", max_grad_norm=1.0, noise_multiplier_start=sigmas[0],
                 noise_multiplier_end=sigmas[-1], test_accuracy=0.7, epsilon=2.0, delta=1e-5, accountant="rdp",
                 step_loss=[2.3, 2.0, 1.8, 1.5, 1.4, 1.2], checkpoints=cps)


def _colours(fig) -> set[str]:
    out = set()
    for ax in fig.axes:
        out |= {to_hex(line.get_color()) for line in ax.get_lines()}
        out |= {to_hex(p.get_facecolor()) for p in ax.patches}
        out |= {to_hex(t.get_color()) for t in ax.texts + [ax.title, ax.yaxis.label]}
        for coll in ax.collections:
            out |= {to_hex(c) for c in coll.get_facecolors()}
    return {c.lower() for c in out}


def test_method_colours_come_from_the_palette():
    assert viz.method_color("none") == ROLE["reference"]
    assert viz.method_color("fixed") == SCHEDULE["fixed"] == viz.method_color("fixed σ=0.60")
    assert viz.method_color("exponential") == SCHEDULE["exponential"]
    assert viz.method_color("linear + dynamic C") == DEFENSE["dp_dynamic"]
    assert viz.method_colors(["none", "linear"]) == {"none": ROLE["reference"], "linear": SCHEDULE["linear"]}


def test_checkpoint_grid_shows_per_image_ssim_in_the_success_colours():
    import matplotlib.pyplot as plt

    runs = {"none": _run("none"), "exponential": _run("schedule")}
    fig = viz.dp_checkpoint_grid(runs, torch.rand(1, 1, 8, 8))
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 2 * 4
    titles = [ax.get_title() for ax in fig.axes if ax.get_title().startswith("after step")]
    assert len(titles) == 6 and all("SSIM" in t for t in titles)
    assert "IG 0.70 · iDLG 0.20" in titles[1]  # both attacks, the best first
    colours = _colours(fig)
    assert ROLE["leak"].lower() in colours and ROLE["protected"].lower() in colours
    plt.close(fig)
    with pytest.raises(ValueError):
        viz.dp_checkpoint_grid({"x": DPRun(method="none", clipping="flat", max_grad_norm=1.0,
                                           noise_multiplier_start=0, noise_multiplier_end=0, test_accuracy=0.5,
                                           epsilon=math.inf, delta=1e-5, accountant="rdp")}, torch.rand(1, 1, 8, 8))


def test_metrics_curves_and_return_figures():
    import matplotlib.pyplot as plt

    report = {"none": {"test_accuracy": 0.88, "epsilon": math.inf, "attack_success_rate": 1.0, "ssim": 0.9,
                       "delta": 1e-5},
              "fixed": {"test_accuracy": 0.63, "epsilon": 0.24, "attack_success_rate": 0.0, "ssim": 0.04,
                        "delta": 1e-5}}
    fig = viz.dp_metrics_figure(report)
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 4
    assert {ROLE["reference"].lower(), SCHEDULE["fixed"].lower()} <= _colours(fig)
    plt.close(fig)
    fig = viz.dp_training_curves({"none": _run("none"), "cyclic": [2.0, 1.0, 0.5]})
    assert {ROLE["reference"].lower(), SCHEDULE["cyclic"].lower()} <= _colours(fig)
    plt.close(fig)
    run = _run("schedule", sigmas=(1.0, 0.1, 0.01), ssims=((0.1, 0.0), (0.4, 0.0), (0.8, 0.0)))
    fig = viz.noise_return_figure(run, torch.rand(1, 1, 8, 8))
    assert isinstance(fig, matplotlib.figure.Figure)
    assert {ROLE["leak"].lower(), ROLE["protected"].lower(), ROLE["threshold"].lower()} <= _colours(fig)
    plt.close(fig)
    fig = viz.schedules_figure({"fixed": [3.0, 3.0], "linear": [3.0, 0.5]}, colors=viz.method_colors(["fixed", "linear"]))
    assert {SCHEDULE["fixed"].lower(), SCHEDULE["linear"].lower()} <= _colours(fig)
    plt.close(fig)

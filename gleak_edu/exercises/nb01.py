"""Exercises, questions and checks of notebook 01 (DLG and iDLG).

The notebook imports this module as ``ex``; the core helpers are re-exported.

* Scaffolded code: :func:`check_matching_loss` (DLG's objective) and
  :func:`check_label_rule` (iDLG's label rule) compare the student's function
  with the package's on a few random victims.
* Predict first, then run: ``"01.relu"`` (DLG on a ReLU network) and
  ``"01.noise"`` (noise std 0.01, the DLG paper's harmless variance 1e-4);
  :func:`ssim_band` turns the run's SSIM into the observed option.
* Why question: ``"01.label-noise"`` (why the label survives far more noise than the image).
* Exercise: :func:`check_label_noise` (the smallest noise std at which the label rule
  fails in at least half of 20 noise seeds).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gleak_edu import fl, models
from gleak_edu.attacks import idlg_label
from gleak_edu.attacks._chain import matching_fn
from gleak_edu.defenses import gaussian_noise
from gleak_edu.exercises import (
    QUESTIONS,
    Feedback,
    Question,
    ask,
    check_function,
    correct,
    course_checks,
    hint,
    predict,
    register,
    reveal,
    unanswered,
)
from gleak_edu.metrics import SUCCESS_SSIM

__all__ = [
    "CANDIDATES",
    "Feedback",
    "FAILED_SSIM",
    "ask",
    "check_label_noise",
    "check_label_rule",
    "check_matching_loss",
    "course_checks",
    "label_errors",
    "predict",
    "reference_matching_loss",
    "reveal",
    "show_question",
    "ssim_band",
]

#: Below this SSIM a reconstruction shows nothing of the image (the glossary's lower band).
FAILED_SSIM = 0.3

#: The noise stds the exercise offers (absolute std per shared entry).
CANDIDATES = (1e-2, 1e-1, 1.0, 3.0, 10.0, 30.0)

_BANDS = {
    "a": f"the photo comes back (SSIM at least {SUCCESS_SSIM}: the course's success)",
    "b": f"a damaged photo: shapes show through, but below the success line (SSIM {FAILED_SSIM} to {SUCCESS_SSIM})",
    "c": f"nothing of the photo (SSIM below {FAILED_SSIM})",
}


def ssim_band(ssim: float) -> str:
    """The option letter of the SSIM band a reconstruction falls in: "a" (>= 0.6), "b" (0.3 to 0.6), "c" (< 0.3)."""
    s = float(ssim)
    if s >= SUCCESS_SSIM:
        return "a"
    return "b" if s >= FAILED_SSIM else "c"


def show_question(key: str) -> None:
    """Print a question of this notebook and its options (before answering it with ``ask`` or ``predict``)."""
    q = QUESTIONS[key]
    print(q.prompt)
    for letter, text in q.options.items():
        print(f"  ({letter}) {text}")


register(
    Question(
        key="01.relu",
        prompt=("DLG rebuilt the astronaut from the sigmoid LeNet's gradient. Swap every sigmoid for a ReLU and "
                "let DLG retry from fresh random starts whenever a run fails. What comes back?"),
        options=dict(_BANDS),
        explanation=(
            "DLG needs the gradient of the gradient. A ReLU network's output is piecewise linear in the input "
            "(ReLU's second derivative is zero wherever it exists), so the matching loss is a patchwork of "
            "pieces with kinks where units switch on or off, and L-BFGS's long curvature-based steps land far "
            "off: every start explodes or freezes within a few iterations, and a retry is only another start. "
            "That is DLG failing, not the network protecting its data: the next cell shows a stronger attack "
            "getting through."),
    ),
    Question(
        key="01.noise",
        prompt=("The DLG paper found Gaussian noise of variance 1e-4 on the gradient harmless: its attack still "
                "leaked the images. Variance 1e-4 is a noise std of 0.01. Predict what noise std 0.01 does to "
                "iDLG here (100 iterations, the astronaut):"),
        options=dict(_BANDS),
        explanation=(
            "Noise of std 0.01 on each of the 85,036 shared numbers has a squared norm of about "
            "85,036 x 0.01^2 = 8.5. A 3,072-pixel image cannot match 85,036 random numbers, so the matching loss "
            "stops near 8.5 (the table's last two columns): a level the noiseless DLG run passed within its first "
            "10 iterations (the table in section 3), long before its image became sharp. The attack then spends "
            "its effort fitting the noise. How much a given std hides depends on the size of the gradient "
            "it is added to and on the attack's budget: one reason the paper's level and this one disagree, and "
            "why DP-SGD clips first and scales its noise to the clipping bound (notebooks 04-07)."),
    ),
    Question(
        key="01.label-noise",
        prompt="Why does the iDLG label rule survive far more noise than the image does?",
        options={
            "a": ("The rule reduces each of the output layer's rows to one sum over 768 entries and only needs the "
                  "true row's sum to stay the lowest. In a sum the noise of the entries partly cancels (its spread "
                  "grows like sqrt(768), not 768), and the true row's sum is far below the others. The image needs "
                  "3,072 pixel values, each pinned down by small details of the gradient that the noise swamps."),
            "b": "Gaussian noise is only added to the convolution layers, not to the output layer.",
            "c": "iDLG optimises the label with L-BFGS, which averages the noise away over its iterations.",
            "d": ("The output layer's gradient entries are much larger than the noise, so noise on them does not "
                  "matter."),
        },
        answer="a",
        hints={
            "b": ("gaussian_noise adds noise to every shared entry, the output layer's included. Look at what the "
                  "rule does with that layer's entries before it compares classes."),
            "c": "the label rule does no optimisation at all: reread section 4 (an argmin over row sums).",
            "d": ("check the sizes: the output layer's weight gradient has a norm of about 24 spread over 76,800 "
                  "entries, so a typical entry is below 0.1, and the rule still works at a noise std of 0.1 and "
                  "more. Something else protects the label: what does the rule compute from the entries?"),
        },
        explanation=(
            "the rule reads one number per class, a sum over a row, and only compares the sums. The noise on a "
            "row's sum has std noise_std x sqrt(768), about 28 x noise_std, while the true row's sum is the "
            "only large negative number (softmax minus one, times the positive features). The image has no such "
            "margin: every pixel depends on fine details of all 85,036 numbers."),
    ),
)


# --------------------------------------------------------------------------------------------------
# Scaffolded code: the DLG matching loss and the iDLG label rule


def reference_matching_loss(model: nn.Module, dummy_x: torch.Tensor, dummy_label: torch.Tensor,
                            shared: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """DLG's objective, as the package's attacks compute it (:func:`gleak_edu.attacks._chain.matching_fn`).

    Args:
        model: the victim; dummy_x: float32 ``[1, C, H, W]``; dummy_label: probabilities ``[1, K]``;
        shared: the shared gradient, parameter name -> tensor.

    Returns:
        A 0-d float64 tensor: ``sum over parameters ||grad of the dummy's loss - shared||^2``.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    terms = matching_fn(model, [shared[n] for n in names])
    with torch.no_grad():
        return terms(dummy_x[None], dummy_label[None])[0][0]


def _victims(n: int, seed: int) -> list[tuple[nn.Module, Mapping[str, torch.Tensor], torch.Tensor]]:
    """``n`` random (LeNet-Zhu, shared gradient of a random image and label, that image) triples."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n):
        model = models.build_model("lenet-zhu", (3, 32, 32), 100, seed=seed + k)
        x = torch.rand((1, 3, 32, 32), generator=gen)
        y = torch.randint(100, (1,), generator=gen)
        out.append((model, fl.client_gradient(model, x, y), x))
    return out


def check_matching_loss(student: Callable) -> Feedback:
    """Check the student's ``dlg_matching_loss(model, dummy_x, dummy_label, shared)`` against the package's.

    Three random victims, each with a random dummy image and random soft label (DLG's start).
    """
    gen = torch.Generator().manual_seed(101)
    cases = []
    for model, shared, _ in _victims(3, seed=11):
        dummy_x = torch.randn((1, 3, 32, 32), generator=gen)
        dummy_label = F.softmax(torch.randn((1, 100), generator=gen), dim=-1)
        cases.append((model, dummy_x, dummy_label, shared))
    return check_function(
        student, reference_matching_loss, cases, what="your DLG matching loss", rtol=1e-3, atol=1e-4,
        hint_text=("It should be one number: for each layer, the difference between the dummy's gradient and "
                   "the shared one, squared entry by entry and summed; then the sum over the layers. Not a norm "
                   "(no square root), not a mean."),
    )


def check_label_rule(student: Callable) -> Feedback:
    """Check the student's ``my_idlg_label(model, shared)`` against :func:`gleak_edu.attacks.idlg_label`.

    Six random single-image victims (LeNet-Zhu, 100 classes, random image and label).
    """
    cases = [(model, shared) for model, shared, _ in _victims(6, seed=23)]

    def reference(model, shared):
        return idlg_label(model, shared)

    def as_int(model, shared):  # accept an int or a one-element tensor
        got = student(model, shared)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            return int(got)
        return got

    return check_function(
        as_int, reference, cases, what="your label rule",
        hint_text=("Sum each row of g (one sum per class: which dimension is the class?), then pick the class "
                   "whose sum is the negative one, i.e. the smallest."),
    )


# --------------------------------------------------------------------------------------------------
# The exercise: when does the label rule break?


def label_errors(model: nn.Module, shared: Mapping[str, torch.Tensor], label: int,
                 candidates: Sequence[float] = CANDIDATES, seeds: int = 20) -> dict[float, int]:
    """``{noise std: how many of `seeds` noise seeds make iDLG's rule miss `label`}``."""
    return {float(std): sum(idlg_label(model, gaussian_noise(shared, std, seed=k)) != int(label) for k in range(seeds))
            for std in candidates}


def check_label_noise(answer, model: nn.Module, shared: Mapping[str, torch.Tensor], y,
                      candidates: Sequence[float] = CANDIDATES) -> Feedback:
    """Check the smallest noise std in ``candidates`` at which the label rule fails in >= 10 of 20 seeds.

    Prints ``Correct: ...`` or a hint (never the expected value).
    """
    if answer is None or answer is Ellipsis:
        return unanswered("set `answer` to one of the candidates, then run this cell again.")
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return hint("`answer` should be a single number: one of the noise stds in `candidates`.")
    cands = [float(c) for c in candidates]
    if not any(abs(value - c) <= 1e-9 * max(1.0, c) for c in cands):
        return hint("`answer` should be one of the noise stds in `candidates` (the exercise only tries those).")
    label = int(torch.as_tensor(y).reshape(-1)[0])
    wrong = label_errors(model, shared, label, cands)
    fails = [c for c in cands if wrong[c] >= 10]
    if not fails:
        return hint("at none of these noise stds does the rule fail in half of the seeds for this gradient; "
                    "try larger candidates.")
    truth = fails[0]
    if abs(value - truth) <= 1e-9 * max(1.0, truth):
        return correct(f"from this noise std on, the rule picks a wrong label in {wrong[truth]} of 20 noise seeds, "
                       "while one candidate below it the label still survives in most seeds. Compare it with the "
                       "noise std that left nothing of the image in section 7's table.")
    if wrong[min(cands, key=lambda c: abs(c - value))] < 10:
        return hint("at that noise std the rule still finds the label in more than half of the 20 seeds. "
                    "Count the wrong labels (idlg_label(model, noisy) != y.item()) for each candidate and look further up.")
    return hint("the rule does fail in at least half of the seeds there, but a smaller candidate already makes it "
                "fail that often: the task asks for the smallest one.")

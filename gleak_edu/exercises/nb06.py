"""Exercises, questions and checks of notebook 06 (transformers).

The notebook imports this module as ``ex``; the core helpers are re-exported.

* :func:`check_order_from_rows` checks the exercise "the order without any optimisation": the
  student's function reads a sentence's word order off the embedding gradients alone. Any
  row-matching rule that puts the words in place is accepted (Euclidean distance, cosine
  similarity, ...): it is judged on what it returns, on sentences whose words all differ.
* :func:`what_survives` is the observed answer of the prediction ``06.survives``, computed from the
  student's own noise curve.
* Questions: ``06.survives`` (predict first, then run), ``06.flat``, ``06.step``, ``06.repeat`` (why).
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from gleak_edu import fl
from gleak_edu.exercises import (
    Feedback,
    Question,
    ask,
    correct,
    course_checks,
    hint,
    predict,
    register,
    reveal,
    unanswered,
)

__all__ = ["Feedback", "REPEATED", "SENTENCES", "ask", "check_order_from_rows", "course_checks", "predict", "reveal",
           "what_survives"]

#: Sentences whose words all differ, labelled with an aphorism index: the exercise's test cases.
SENTENCES: tuple[tuple[str, int], ...] = (
    ("errors should never pass silently unless explicitly silenced", 9),
    ("beautiful is better than ugly", 0),
    ("although practicality beats purity", 8),
    ("namespaces are one honking great idea", 18),
)
#: A sentence with a repeated word ("special"), where reading rows alone cannot place every word.
REPEATED: tuple[str, int] = ("special cases aren't special enough to break the rules", 7)


register(
    Question(
        key="06.survives",
        prompt=("We add more and more noise to the sentence's clipped gradient. Which survives more noise: "
                "the attacker's knowledge of the word set, or of the word order?"),
        options={
            "a": "the word set (which words) survives more noise than the order",
            "b": "the order survives more noise than the word set",
            "c": "both are lost at the same noise level",
        },
        explanation=(
            "the words are read off directly: a word that occurs has a whole embedding row of signal, which stands "
            "above the noise floor of the rows of absent words until the noise is as large as the row itself. The "
            "order needs more: gradient matching must explain every parameter's gradient, and small differences "
            "between candidate orders drown first. (The set also feeds the order: a missing word can never be put "
            "in place.)"
        ),
    ),
    Question(
        key="06.flat",
        prompt=("In the course's run the in-order accuracy is exactly 5 % at σ = 0.01, 0.1 and 1, four times "
                "the chance line (1/80 = 1.25 %). Why is it flat, and why above the line?"),
        options={
            "a": "the attack still extracts a little of the sentence's signal at every one of these noise levels",
            "b": ("every level reuses the same noise draw (seed), the attack ignores the overall scale, and that "
                  "draw makes one word's row the strongest: a one-word guess that happens to be right, repeated"),
            "c": "5 % is simply the chance level: one right place out of the probes' 20 places",
            "d": "clipping to C = 1 removes most of the noise, so a little signal always remains",
        },
        answer="b",
        explanation=(
            "at these levels the noise dominates: no position row stands above the noise floor, so the attacker "
            "guesses a one-word sentence, the word whose noisy row is strongest. The noise of probe i is drawn with "
            "seed SEED + i at every level (only its scale changes), and the attack is scale-free (a relative "
            "threshold, cosines, a fitted scale), so once the sentence's own signal is negligible it sees (almost) the same thing at σ = 0.01, 0.1 and 1. With seed 0 the "
            "strongest noise row is 'beautiful', the first word of the first probe: 1 place of 20, 5 %. Any other "
            "seed makes it a 1-in-80 coincidence; the chance line assumes a guess at every place, so a one-word "
            "guess even lies below it on average."
        ),
        hints={
            "a": ("if signal still leaked, a hundredfold more noise (0.01 -> 1) would change something. Look at "
                  "what the attacker outputs at these levels (the cell after the curve) and at the noise alone."),
            "c": ("chance is a uniformly random word at each place: 1 in 80, whatever the number of places. "
                  "Count how many words the attacker actually guesses at these levels."),
            "d": ("clipping bounds the gradient before the noise is added; the noise itself is not clipped, and at "
                  "σ = 1 it is far larger than the clipped gradient. Look at the attacker's guesses."),
        },
    ),
    Question(
        key="06.step",
        prompt=("At σ = 4 the run with step size 0.5 ends above its starting loss, while the run with a much "
                "smaller step size falls (slowly). Why?"),
        options={
            "a": "the noise floor of the bound, η·L·V, shrinks with the step size η; the price is slower progress",
            "b": "a smaller step size adds less noise to each gradient",
            "c": "a smaller step size spends less privacy, so the accountant lets the run train",
            "d": "with a smaller step size fewer per-example gradients are clipped",
        },
        answer="a",
        explanation=(
            "the noise on the mean gradient has the same variance V = d(σC/B)² whatever the step size; the step "
            "size sets how far each noisy step moves. In the bound, the floor η·L·V shrinks with η while the first "
            "term 2(f(w₀) − f*)/(ηT) grows: small steps average the noise over many steps, and need more of them. "
            "The privacy cost (σ, sampling rate, steps) is the same for both runs."
        ),
        hints={
            "b": "the noise added is N(0, (σC)²) on the sum, whatever the step size. What does the step size scale?",
            "c": ("the accountant sees σ, the sampling rate and the number of steps, not the step size: both runs "
                  "spend the same ε."),
            "d": "clipping acts on each example's gradient before the step; the step size does not enter it.",
        },
    ),
    Question(
        key="06.repeat",
        prompt=("Why is matching rows no longer guaranteed to work for a word that occurs twice (your rule may "
                "still place it right, or not)?"),
        options={
            "a": "its token-embedding row is the sum of its two positions' rows, so it equals neither of them",
            "b": "its token-embedding row is zero, so it is not in the leaked word set",
            "c": "the position-embedding rows of its two places are zero",
            "d": "the attention layer ignores a repeated word, so it has no gradient",
        },
        answer="a",
        explanation=(
            "∂L/∂E_v sums ∂L/∂h_j over every place j that holds v; a word at one place has exactly its place's row "
            "(∂L/∂P_j = ∂L/∂h_j), a word at two places has the sum of two rows, which equals neither. That sum may "
            "still be the nearest row to both places (a similarity rule often survives, since the sum points partly "
            "along each), but nothing guarantees it: another word may win one of the places. Where the identity "
            "gives out, gradient matching (section 3) decides the order."
        ),
        hints={
            "b": "check section 2's formula: the row is a sum over the places of the word; is that sum ever zero here?",
            "c": "∂L/∂P_j = ∂L/∂h_j for every place j of the sentence; why would a repeated word make it zero?",
            "d": "every token's embedding feeds the model (and the mean pooling); its row gets gradient at both places.",
        },
    ),
)


def what_survives(order_accuracy: Mapping[float, float], set_recall: Mapping[float, float], level: float = 0.5) -> str:
    """The observed option of ``06.survives`` from a noise curve.

    Args:
        order_accuracy, set_recall: noise multiplier -> the measure (in [0, 1]) at that noise.
        level: a measure "survives" a noise multiplier while it is at least this.

    Returns:
        ``"a"`` when the word set survives a larger noise multiplier than the order, ``"b"`` when
        the order survives a larger one, ``"c"`` when both are lost at the same level.
    """
    def last_surviving(measure: Mapping[float, float]) -> float:
        alive = [s for s in sorted(measure) if measure[s] >= level]
        return alive[-1] if alive else -1.0

    words, order = last_surviving(set_recall), last_surviving(order_accuracy)
    return "a" if words > order else "b" if order > words else "c"


def _as_words(answer, vocab) -> list[str] | None:
    if isinstance(answer, torch.Tensor):
        answer = answer.reshape(-1).tolist()
    if isinstance(answer, str):
        return None
    try:
        items = list(answer)
    except TypeError:
        return None
    out = []
    for w in items:
        if isinstance(w, torch.Tensor) and w.numel() == 1:
            w = w.item()
        if isinstance(w, int) and 0 <= w < len(vocab.words):
            out.append(vocab.words[w])
        elif isinstance(w, str):
            out.append(w)
        else:
            return None
    return out


def check_order_from_rows(student: Callable, model: torch.nn.Module, vocab) -> Feedback:
    """Check the student's ``order_from_rows(shared, length, vocab)`` on sentences whose words all differ.

    The function receives a sentence's shared gradient (no noise), its length and the vocabulary,
    and must return the sentence's words in order (a list of words, or of token ids). It is called
    on the notebook's sentence and on the other sentences of :data:`SENTENCES`; it passes when it
    puts every word of every one in place. Once it does, it is shown :data:`REPEATED` (a repeated
    word) and the message says how many places it gets there (not judged).

    Returns:
        :class:`Feedback`: None while the function is not written (``...``), a hint when it misplaces
        a word, raises, or returns something else than a list of words; never the expected words.
    """
    if student is None or student is Ellipsis:
        return unanswered("write the function order_from_rows above, then run this cell again.")
    if not callable(student):
        return hint("order_from_rows should be a function (shared, length, vocab) -> list of words.")
    for sentence, label in SENTENCES:
        tokens = vocab.encode(sentence)
        shared = fl.client_text_gradient(model, tokens, torch.tensor([label]))
        length = len(tokens)
        try:
            got = student(shared, length, vocab)
        except NotImplementedError:
            return unanswered("the function is not written yet: replace the `...` and run the cell again.")
        except Exception as exc:  # the student's code failed: say how
            return hint(f"order_from_rows raised {type(exc).__name__}: {exc}. Check the shapes: the position rows are "
                        "[length, d], the candidates' token rows [k, d].")
        if got is None or got is Ellipsis:
            return unanswered("the function is not written yet: replace the `...` (and return the words).")
        words = _as_words(got, vocab)
        if words is None:
            return hint("return a list with one word per place (strings such as vocab.words[i], or token ids).")
        truth = vocab.split(sentence)
        if len(words) != length:
            return hint(f"return one word per place: {length} places here, but the function returned {len(words)} "
                        "words. Take the first `length` rows of the position-embedding gradient.")
        if not set(words) <= set(truth):
            return hint("some returned words do not occur in the sentence: choose only among the non-zero rows of the "
                        "token-embedding gradient (the leaked words), and map a row index to vocab.words[index].")
        if words != truth:
            return hint(
                "every word is a leaked word, but not every one is in its place (on one of the test sentences). For "
                "place j, compare row j of the position-embedding gradient with each candidate's token-embedding row: "
                "for a word that occurs once the two rows are equal (distance 0, cosine 1). Check that you take the "
                "minimum of a distance (or the maximum of a similarity) over the candidates, for each place; a raw dot "
                "product favours long rows, so normalise it (cosine) or use a distance."
            )
    sentence, label = REPEATED
    tokens = vocab.encode(sentence)
    truth = vocab.split(sentence)
    try:
        words = _as_words(student(fl.client_text_gradient(model, tokens, torch.tensor([label])), len(tokens), vocab), vocab)
    except Exception:  # noqa: BLE001 - the demonstration is not judged
        words = None
    right = sum(a == b for a, b in zip(words or [], truth))
    return correct(
        f"your rule puts every word in place on {len(SENTENCES)} sentences whose words all differ, with no optimisation "
        f"at all. On \"{sentence}\" ('special' twice) it gets {right} of {len(truth)} places: "
        + (f"it returned \"{' '.join(words)}\"." if words else "it did not return a list of words there.")
        + " The question below asks what a repeated word changes."
    )

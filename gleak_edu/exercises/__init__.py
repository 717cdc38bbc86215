"""Exercises and the course's checks: hints, never answers.

Four kinds of cell in every notebook use this package:

* **Exercise checks** (``gleak_edu.exercises.nb01`` ... ``nb07``): a check
  recomputes the reference answer here, in the package, and prints
  ``Correct: ...`` or ``Not quite: <a hint>``. It never prints or returns the
  expected value; it returns a :class:`Feedback` (``correct`` True, False,
  or None when nothing was answered yet).
* **Predict first, then run** (:func:`predict`, :func:`reveal`): the
  student records a multiple-choice prediction *before* running an
  experiment; after it, :func:`reveal` compares the prediction with what the
  run measured (the observed option is computed from the run, so it follows
  the student's own settings) and shows the explanation.
* **Why questions** (:func:`ask`): a checked multiple-choice question; a
  wrong choice gets that choice's hint.
* **Scaffolded code** (:func:`check_function`): the student writes the key
  line of an algorithm (``...`` in the notebook); the check compares their
  function with the package's on random inputs.

And :func:`course_checks`, the collapsed cell that checks the notebook's
scientific claims (CI runs it). At the course's own settings a failed claim
raises ``AssertionError`` (a bug in the course or the package); once a
student has changed a setting it names the change and warns instead of
raising, because the claims were measured at the course's settings.

Answer keys live in this package, so a determined student can read them;
the checks are for learning, not grading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch

__all__ = [
    "CourseChecks",
    "Feedback",
    "Question",
    "ask",
    "check_function",
    "course_checks",
    "predict",
    "register",
    "reveal",
    "QUESTIONS",
]


@dataclass(frozen=True)
class Feedback:
    """What a check found: ``correct`` is True, False, or None (not answered yet); ``message`` was printed."""

    correct: bool | None
    message: str

    def __bool__(self) -> bool:
        return bool(self.correct)

    def __repr__(self) -> str:  # the message was printed already; keep the echo short
        return f"Feedback(correct={self.correct})"


def _say(correct: bool | None, message: str) -> Feedback:
    prefix = {True: "Correct: ", False: "Not quite: ", None: "Not answered yet: "}[correct]
    text = message if message.startswith(prefix.strip(": ")) else prefix + message
    print(text)
    return Feedback(correct, text)


def correct(message: str) -> Feedback:
    """Print ``Correct: message`` and return a correct :class:`Feedback`."""
    return _say(True, message)


def hint(message: str) -> Feedback:
    """Print ``Not quite: message`` (a hint, never the expected value) and return an incorrect :class:`Feedback`."""
    return _say(False, message)


def unanswered(message: str = "set the answer in the cell above, then run this cell again.") -> Feedback:
    """Print ``Not answered yet: message`` and return a :class:`Feedback` with ``correct=None``."""
    return _say(None, message)


# --------------------------------------------------------------------------------------------------
# Multiple-choice questions: "why" questions and "predict first, then run"


@dataclass(frozen=True)
class Question:
    """A multiple-choice question of a notebook.

    Attributes:
        key: unique id, ``"NN.short-name"`` (e.g. ``"01.relu"``).
        prompt: the question, as the notebook asks it.
        options: letter -> answer text, e.g. ``{"a": "...", "b": "..."}``.
        explanation: shown once the question is answered right (or revealed).
        answer: the right letter for a *why* question (:func:`ask`); None for a
            prediction, whose right option comes from the run (:func:`reveal`).
        hints: letter -> hint for that wrong choice (a default hint otherwise).
    """

    key: str
    prompt: str
    options: Mapping[str, str]
    explanation: str
    answer: str | None = None
    hints: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if not self.options:
            raise ValueError(f"question {self.key!r} has no options")
        if self.answer is not None and self.answer not in self.options:
            raise ValueError(f"question {self.key!r}: answer {self.answer!r} is not one of {sorted(self.options)}")
        unknown = set(self.hints) - set(self.options)
        if unknown:
            raise ValueError(f"question {self.key!r}: hints for unknown options {sorted(unknown)}")

    def describe(self, letter: str) -> str:
        return f"({letter}) {self.options[letter]}"


#: Every question of the course, by key (each notebook's module registers its own).
QUESTIONS: dict[str, Question] = {}
_PREDICTIONS: dict[str, str] = {}


def register(*questions: Question) -> None:
    """Add questions to :data:`QUESTIONS`.

    Raises:
        ValueError: when a key is already taken by a different question.
    """
    for q in questions:
        if q.key in QUESTIONS and QUESTIONS[q.key] != q:
            raise ValueError(f"question key {q.key!r} is registered twice")
        QUESTIONS[q.key] = q


def _question(key: str) -> Question:
    if key not in QUESTIONS:
        raise KeyError(f"no question {key!r}; the course's questions are: {', '.join(sorted(QUESTIONS))}")
    return QUESTIONS[key]


def _normalise(key: str, choice: Any) -> str | None:
    """The letter of a choice (``"b"``, ``"B"``, ``"(b)"``), None when unanswered; ValueError for anything else."""
    if choice is None or choice is Ellipsis:
        return None
    q = _question(key)
    letter = str(choice).strip().strip("()").lower()
    if letter not in q.options:
        raise ValueError(f"{choice!r} is not an option of question {key!r}: choose one of "
                         + ", ".join(f'"{k}"' for k in q.options))
    return letter


def predict(key: str, choice: Any) -> Feedback:
    """Record a prediction *before* running the experiment it is about.

    Args:
        key: the question's key (see :data:`QUESTIONS`).
        choice: a letter of the question's options, or None (not predicted yet).

    Returns:
        :class:`Feedback` with ``correct=None`` (a prediction is judged by :func:`reveal`).

    Raises:
        KeyError: for an unknown question; ValueError: for a choice that is not an option.
    """
    letter = _normalise(key, choice)
    q = _question(key)
    if letter is None:
        _PREDICTIONS.pop(key, None)
        msg = ("no prediction recorded. Write down your guess (" + ", ".join(f'"{k}"' for k in q.options)
               + ") before you run the experiment: a guess made afterwards teaches nothing.")
        print("Prediction: " + msg)
        return Feedback(None, msg)
    _PREDICTIONS[key] = letter
    msg = f"recorded {q.describe(letter)}. Now run the experiment."
    print("Prediction " + msg)
    return Feedback(None, msg)


def reveal(key: str, observed: str) -> Feedback:
    """Compare the recorded prediction with what the run measured, then explain.

    Args:
        key: the question's key.
        observed: the letter of the option the run's measurement supports (computed from the run
            by the notebook's module, so it follows the student's own settings).

    Returns:
        :class:`Feedback`: correct True/False when a prediction was recorded, None otherwise.

    Raises:
        KeyError: for an unknown question; ValueError: when ``observed`` is not an option.
    """
    q = _question(key)
    seen = _normalise(key, observed)
    if seen is None:
        raise ValueError(f"reveal({key!r}) needs the observed option, one of {sorted(q.options)}")
    said = _PREDICTIONS.get(key)
    head = f"The run shows {q.describe(seen)}."
    if said is None:
        msg = f"{head} (No prediction was recorded.) Why: {q.explanation}"
        print(msg)
        return Feedback(None, msg)
    if said == seen:
        return correct(f"you predicted {q.describe(said)}, and the run agrees. Why: {q.explanation}")
    return _say(False, f"you predicted {q.describe(said)}; {head[0].lower()}{head[1:]} Why: {q.explanation}")


def ask(key: str, choice: Any) -> Feedback:
    """Check the answer to a *why* question: the explanation when right, that choice's hint when wrong.

    Raises:
        KeyError: for an unknown question; ValueError: for a choice that is not an option, or a
            question that is a prediction (use :func:`reveal`).
    """
    q = _question(key)
    if q.answer is None:
        raise ValueError(f"question {key!r} is a prediction: record it with predict() and check it with reveal()")
    letter = _normalise(key, choice)
    if letter is None:
        return unanswered("pick one of " + ", ".join(f'"{k}"' for k in q.options) + ".")
    if letter == q.answer:
        return correct(q.explanation)
    return hint(q.hints.get(letter, "that option does not fit what the notebook measured; reread the section and try another."))


# --------------------------------------------------------------------------------------------------
# Scaffolded code


def check_function(
    student: Callable,
    reference: Callable,
    cases: Iterable[tuple],
    *,
    what: str,
    hint_text: str,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> Feedback:
    """Compare a student's function with the package's on a few inputs.

    Args:
        student: the function the student completed (its body's ``...`` replaced).
        reference: the package's function with the same signature.
        cases: argument tuples to call both with.
        what: what the function computes, for the messages ("the DLG matching loss").
        hint_text: printed on a wrong result; says what to look at, never the line itself.
        atol, rtol: tolerance for tensors and floats.

    Returns:
        :class:`Feedback`; ``correct=None`` while the body still returns ``...`` or raises
        ``NotImplementedError``.
    """
    for args in cases:
        try:
            got = student(*args)
        except NotImplementedError:
            return unanswered(f"{what} is not written yet: replace the `...` and run the cell again.")
        except Exception as exc:  # the student's code failed: say how, as a hint
            return hint(f"{what} raised {type(exc).__name__}: {exc}. {hint_text}")
        if got is Ellipsis or got is None:
            return unanswered(f"{what} is not written yet: replace the `...` (and return the value).")
        want = reference(*args)
        if not _close(got, want, atol, rtol):
            return hint(f"{what} gives a different value on a test input. {hint_text}")
    return correct(f"{what} matches the package's on every test input.")


def _close(got: Any, want: Any, atol: float, rtol: float) -> bool:
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            try:
                got = torch.as_tensor(got, dtype=want.dtype)
            except (TypeError, ValueError, RuntimeError):
                return False
        if got.shape != want.shape and got.numel() == want.numel() == 1:
            got, want = got.reshape(()), want.reshape(())
        return got.shape == want.shape and bool(torch.allclose(got.to(want.dtype), want, atol=atol, rtol=rtol))
    if isinstance(want, float):
        try:
            return math.isclose(float(got), want, abs_tol=atol, rel_tol=rtol)
        except (TypeError, ValueError):
            return False
    return got == want


# --------------------------------------------------------------------------------------------------
# The course's checks of its own claims


class CourseChecks:
    """The claims of one notebook, checked at the notebook's settings (use :func:`course_checks`)."""

    def __init__(self, notebook: str, settings: Mapping[str, tuple[Any, Any]]):
        self.notebook = notebook
        self.changed = {k: (now, default) for k, (now, default) in settings.items() if not _same(now, default)}
        self.passed: list[str] = []
        self.failed: list[str] = []

    def __call__(self, condition: Any, claim: str) -> bool:
        """Record one claim: ``condition`` is truthy when the claim holds. Returns it as a bool."""
        ok = bool(condition)
        (self.passed if ok else self.failed).append(claim)
        return ok

    def __enter__(self) -> "CourseChecks":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            return False
        n = len(self.passed) + len(self.failed)
        if n == 0:
            raise AssertionError(f"notebook {self.notebook}: the course-checks cell checked no claim")
        if not self.failed:
            note = "" if not self.changed else f" (even with your changes: {self._changes()})"
            print(f"All {n} course checks of notebook {self.notebook} passed{note}.")
            return False
        listing = "\n".join(f"  - {c}" for c in self.failed)
        if self.changed:
            print(f"Course checks: {len(self.failed)} of {n} claims do not hold at your settings:\n{listing}\n"
                  f"You changed {self._changes()}. The course measured these claims at its own settings, "
                  "so this is what your experiment found, not a mistake of yours. Set them back to see the "
                  "claims hold.")
            return False
        raise AssertionError(f"notebook {self.notebook}: {len(self.failed)} of {n} claims failed at the course's own "
                             f"settings (a bug in the course or the package; please report it):\n{listing}")

    def _changes(self) -> str:
        return ", ".join(f"{k} ({default!r} -> {now!r})" for k, (now, default) in self.changed.items())


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # tensors and other values without a plain ==
        return a is b


def course_checks(notebook: str, **settings: tuple[Any, Any]) -> CourseChecks:
    """Check a notebook's claims, knowing which of its settings the student changed.

    Usage (the last, collapsed cell of a notebook)::

        with course_checks("01", SEED=(SEED, 1)) as check:
            check(result.metrics["psnr_mean"] >= 30, "DLG rebuilds the photo (>= 30 dB) without a defense")

    Args:
        notebook: the notebook's number, ``"01"`` ... ``"07"``.
        settings: name=(value now, the course's value) for each knob the notebook invites the
            student to change.

    Returns:
        A context manager; calling it records a claim. On exit: every claim held -> one line;
        a claim failed with every setting at the course's value -> ``AssertionError`` listing
        the failed claims; a claim failed after a change -> a message naming the changed
        settings, and no error.
    """
    for name, value in settings.items():
        if not (isinstance(value, tuple) and len(value) == 2):
            raise TypeError(f"course_checks: setting {name} must be (value now, the course's value), got {value!r}")
    return CourseChecks(notebook, settings)

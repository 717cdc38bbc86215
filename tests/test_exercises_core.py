"""gleak_edu.exercises: hints never answers, predictions judged by the run, course checks that name a change."""

from __future__ import annotations

import pytest
import torch

from gleak_edu import exercises as ex


@pytest.fixture
def questions():
    why = ex.Question("99.why", "Why?", {"a": "because A", "b": "because B"}, "A is right because ...",
                      answer="a", hints={"b": "look at the second figure"})
    guess = ex.Question("99.guess", "Which?", {"a": "first", "b": "second", "c": "third"}, "the run decides")
    ex.register(why, guess)
    yield why, guess
    ex.QUESTIONS.pop("99.why", None)
    ex.QUESTIONS.pop("99.guess", None)
    ex._PREDICTIONS.pop("99.guess", None)


def test_ask_gives_the_option_hint_not_the_answer(questions, capsys):
    assert ex.ask("99.why", "b").correct is False
    out = capsys.readouterr().out
    assert out.startswith("Not quite") and "second figure" in out and "because A" not in out
    assert ex.ask("99.why", "(A)").correct is True
    assert "A is right" in capsys.readouterr().out
    assert ex.ask("99.why", None).correct is None


def test_ask_refuses_a_choice_that_is_not_an_option(questions):
    with pytest.raises(ValueError, match="not an option"):
        ex.ask("99.why", "z")
    with pytest.raises(KeyError, match="no question"):
        ex.ask("99.nope", "a")
    with pytest.raises(ValueError, match="is a prediction"):
        ex.ask("99.guess", "a")


def test_prediction_is_judged_by_what_the_run_observed(questions, capsys):
    assert ex.reveal("99.guess", "b").correct is None  # nothing predicted
    ex.predict("99.guess", "c")
    assert ex.reveal("99.guess", "b").correct is False
    assert "you predicted (c) third" in capsys.readouterr().out
    ex.predict("99.guess", "b")
    assert ex.reveal("99.guess", "b").correct is True
    ex.predict("99.guess", None)  # clearing it
    assert ex.reveal("99.guess", "a").correct is None
    with pytest.raises(ValueError):
        ex.reveal("99.guess", None)


def test_question_validates_itself():
    with pytest.raises(ValueError, match="answer"):
        ex.Question("99.bad", "?", {"a": "x"}, "e", answer="b")
    with pytest.raises(ValueError, match="hints"):
        ex.Question("99.bad", "?", {"a": "x"}, "e", hints={"q": "h"})
    ex.register(ex.Question("99.dup", "?", {"a": "x"}, "e"))
    try:
        with pytest.raises(ValueError, match="twice"):
            ex.register(ex.Question("99.dup", "other", {"a": "x"}, "e"))
    finally:
        ex.QUESTIONS.pop("99.dup")


def test_check_function_accepts_reference_rejects_wrong_and_waits_for_blank(capsys):
    ref = lambda a, b: ((a - b) ** 2).sum()  # noqa: E731
    cases = [(torch.randn(3, generator=torch.Generator().manual_seed(k)), torch.zeros(3)) for k in range(3)]
    kw = dict(what="the loss", hint_text="square the differences")
    assert ex.check_function(lambda a, b: ..., ref, cases, **kw).correct is None
    assert ex.check_function(lambda a, b: (a - b).abs().sum(), ref, cases, **kw).correct is False
    assert "square the differences" in capsys.readouterr().out
    assert ex.check_function(lambda a, b: 1 / 0, ref, cases, **kw).correct is False
    assert ex.check_function(ref, ref, cases, **kw).correct is True


def test_course_checks_raise_at_the_course_settings():
    with pytest.raises(AssertionError, match="claims failed at the course's own settings"):
        with ex.course_checks("99", SEED=(1, 1)) as check:
            check(True, "a true claim")
            check(False, "a false claim")


def test_course_checks_name_the_changed_setting_instead_of_failing(capsys):
    with ex.course_checks("99", SEED=(3, 1), ITERATIONS=(100, 100)) as check:
        check(False, "a false claim")
    out = capsys.readouterr().out
    assert "SEED (1 -> 3)" in out and "ITERATIONS" not in out and "a false claim" in out


def test_course_checks_pass_quietly_and_refuse_an_empty_cell(capsys):
    with ex.course_checks("99", SEED=(1, 1)) as check:
        check(1 < 2, "one is less than two")
    assert "All 1 course checks" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="no claim"):
        with ex.course_checks("99"):
            pass
    with pytest.raises(TypeError, match="value now"):
        ex.course_checks("99", SEED=1)


def test_an_error_inside_the_checks_propagates():
    with pytest.raises(ZeroDivisionError):
        with ex.course_checks("99", SEED=(1, 1)) as check:
            check(1 / 0, "never reached")

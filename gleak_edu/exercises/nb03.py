"""Exercises, questions and checks of notebook 03 (PRECODE and its bypass).

The notebook imports this module as ``ex``; the core helpers are re-exported.
"""

from __future__ import annotations

from gleak_edu.exercises import Feedback, Question, ask, check_function, course_checks, predict, register, reveal

__all__ = ["Feedback", "ask", "course_checks", "predict", "reveal"]

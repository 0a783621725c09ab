"""Automatic feedback for the notebook exercises: one module per lesson.

A check takes the learner's answer (usually a function), tests it on fresh
inputs against the package's reference, prints one line of feedback and
returns a :class:`~linquant_helpers.exercises.feedback.CheckResult`. A check
never raises, so a notebook still runs top to bottom with exercises unanswered.
"""

from .feedback import CheckResult, run_check

__all__ = ["CheckResult", "run_check"]

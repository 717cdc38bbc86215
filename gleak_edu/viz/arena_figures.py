"""Figures of notebook 07 (the defense arena)."""

from __future__ import annotations

__all__: list[str] = []

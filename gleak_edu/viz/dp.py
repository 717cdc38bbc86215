"""Figures of notebook 05 (DP-SGD, fixed vs dynamic)."""

from __future__ import annotations

__all__: list[str] = []

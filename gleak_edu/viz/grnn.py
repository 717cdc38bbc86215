"""Figures of notebook 02 (GRNN)."""

from __future__ import annotations

__all__: list[str] = []

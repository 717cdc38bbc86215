"""Figures of notebook 06 (transformers)."""

from __future__ import annotations

__all__: list[str] = []

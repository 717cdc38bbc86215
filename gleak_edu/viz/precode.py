"""Figures of notebook 03 (PRECODE and its bypass)."""

from __future__ import annotations

__all__: list[str] = []

"""Figures of notebook 04 (PPP)."""

from __future__ import annotations

__all__: list[str] = []

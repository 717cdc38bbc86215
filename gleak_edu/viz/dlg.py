"""Figures of notebook 01 (DLG and iDLG)."""

from __future__ import annotations

__all__: list[str] = []

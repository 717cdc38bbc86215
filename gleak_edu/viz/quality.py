"""What a PSNR or an SSIM value looks like: the same image at chosen quality levels (the glossary's pictures)."""

from __future__ import annotations

__all__: list[str] = []

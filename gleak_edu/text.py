"""Words for the transformer notebook: a vocabulary from the Zen of Python, which ships with Python.

``import this`` prints the Zen of Python (Tim Peters, PEP 20) and keeps it,
rot13-encoded, in ``this.s``; this module decodes it quietly. Its 19
aphorisms give 80 distinct lower-case words: the vocabulary of the tiny
transformer (:class:`gleak_edu.models.TinyTransformer`) and the training text of
notebook 06 (which aphorism does a fragment come from?).
"""

from __future__ import annotations

import codecs
import contextlib
import io
import re
from dataclasses import dataclass

import torch

__all__ = ["Vocabulary", "zen_lines", "zen_vocabulary", "zen_fragments"]

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def zen_lines() -> list[str]:
    """The 19 aphorisms of the Zen of Python, in order (no title line)."""
    with contextlib.redirect_stdout(io.StringIO()):
        import this  # noqa: F401  (prints the Zen on first import; silenced)
    text = codecs.decode(this.s, "rot13")
    return [line.strip() for line in text.splitlines()[1:] if line.strip()]


@dataclass(frozen=True)
class Vocabulary:
    """A word-level vocabulary: ``words[i]`` is token i.

    Text is lower-cased and split into words (letters and inner apostrophes);
    punctuation is dropped.
    """

    words: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.words)

    def split(self, text: str) -> list[str]:
        """The words of ``text`` (lower case, punctuation dropped)."""
        return _WORD.findall(text.lower())

    def encode(self, text: str) -> torch.Tensor:
        """Token ids of ``text`` as int64 ``[L]``.

        Raises:
            ValueError: if ``text`` has no words, or words outside the
                vocabulary (all of them are named, with a hint).
        """
        words = self.split(text)
        if not words:
            raise ValueError("the sentence has no words (letters a-z)")
        index = {w: i for i, w in enumerate(self.words)}
        unknown = [w for w in words if w not in index]
        if unknown:
            raise ValueError(
                f"words not in the vocabulary: {', '.join(sorted(set(unknown)))} "
                f"(the vocabulary is the {len(self.words)} words of the Zen of Python: gleak_edu.text.zen_vocabulary().words)"
            )
        return torch.tensor([index[w] for w in words], dtype=torch.int64)

    def decode(self, ids) -> str:
        """The words of token ids, joined by spaces."""
        return " ".join(self.words[int(i)] for i in ids)


def zen_vocabulary() -> Vocabulary:
    """The sorted distinct words of the Zen of Python (80 words)."""
    words = sorted({w for line in zen_lines() for w in _WORD.findall(line.lower())})
    return Vocabulary(tuple(words))


def zen_fragments(length: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Every run of ``length`` consecutive words within an aphorism, labelled with the aphorism's index.

    Returns:
        tokens int64 ``[N, length]`` and labels int64 ``[N]`` in 0..18
        (aphorisms shorter than ``length`` contribute nothing).

    Raises:
        ValueError: if ``length`` < 1 or no aphorism is that long.
    """
    if length < 1:
        raise ValueError(f"length must be at least 1, got {length}")
    vocab = zen_vocabulary()
    xs, ys = [], []
    for label, line in enumerate(zen_lines()):
        ids = vocab.encode(line)
        for start in range(0, len(ids) - length + 1):
            xs.append(ids[start : start + length])
            ys.append(label)
    if not xs:
        raise ValueError(f"no aphorism has {length} words")
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)

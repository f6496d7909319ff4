"""Real recorded speech: Debian's Asterisk core sound prompts and their transcripts (speech.md §5).

``asterisk-core-sounds-en-wav`` holds 568 studio prompts read by one professional female voice, 8 kHz 16-bit
WAV, under :data:`SOUNDS_DIR` (``digits/``, ``letters/`` ... sub-folders included). ``asterisk-core-sounds-en``
holds the transcripts, :data:`TRANSCRIPTS`, one ``key: text`` line per prompt (``digits/5: five``), with ``;``
comment lines. ``scripts/speech-data.sh`` installs both.

Invariants: a prompt is used only if its WAV exists and its transcript has words once stage directions in
brackets or parentheses (``[sound of monkeys screaming]``, ``dot [.]``, ``(1 second of silence)``) are
removed; prompts come back sorted by key, so any subset is deterministic.
"""

from __future__ import annotations

import gzip
import wave
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from voxcart.common.audio import SAMPLE_RATE, Resampler

__all__ = [
    "ISOLATED_NUMBERS",
    "SOUNDS_DIR",
    "TRANSCRIPTS",
    "AsteriskPrompt",
    "TranscriptError",
    "find_prompts",
    "missing_data",
    "parse_transcripts",
    "read_wav",
    "spoken_text",
]

SOUNDS_DIR: Final = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
TRANSCRIPTS: Final = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
ISOLATED_NUMBERS: Final = tuple(f"digits/{n}" for n in [*range(21), *range(30, 100, 10)])
"""The isolated-number prompts: 0-20, then 30, 40 ... 90 (28 prompts)."""


class TranscriptError(ValueError):
    """A transcript file line is not ``key: text``."""


@dataclass(frozen=True, slots=True)
class AsteriskPrompt:
    """One recorded prompt.

    Attributes:
        key: the transcript key, the WAV's path under the sounds folder without ``.wav`` (``digits/5``).
        text: what is said (stage directions removed).
        path: the WAV file.
        seconds: its duration.
    """

    key: str
    text: str
    path: Path
    seconds: float

    @property
    def words(self) -> int:
        """Words in the transcript (an ellipsis or other punctuation alone is not a word)."""
        return sum(any(c.isalnum() for c in w) for w in self.text.split())


def parse_transcripts(lines: Iterable[str], source: str = "<transcripts>") -> dict[str, str]:
    """Parse ``key: text`` lines; blank lines and ``;`` comments are skipped.

    Args:
        lines: the file's lines.
        source: the file name, for errors.

    Raises:
        TranscriptError: a line has no ``: `` after a non-empty key, or a key is repeated.
    """
    out: dict[str, str] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        key, sep, text = line.partition(":")
        key = key.strip()
        if not sep or not key or " " in key:
            raise TranscriptError(f"{source}:{number}: expected 'key: text', got {line[:80]!r}")
        if key in out:
            raise TranscriptError(f"{source}:{number}: key {key!r} appears twice")
        out[key] = text.strip()
    return out


def read_transcripts(path: Path) -> dict[str, str]:
    """:func:`parse_transcripts` on a file, gzip-compressed (``.gz``) or not."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return parse_transcripts(f, str(path))
    with path.open(encoding="utf-8") as f:
        return parse_transcripts(f, str(path))


def spoken_text(text: str) -> str:
    """``text`` without its stage directions in brackets or parentheses; "" when nothing is said."""
    out: list[str] = []
    depth = 0
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    return " ".join("".join(out).split())


def _wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def find_prompts(sounds_dir: Path = SOUNDS_DIR, transcripts: Path = TRANSCRIPTS) -> list[AsteriskPrompt]:
    """Every prompt with a WAV and spoken words, sorted by key.

    Raises:
        FileNotFoundError: ``sounds_dir`` or ``transcripts`` does not exist.
        TranscriptError: the transcript file is malformed.
    """
    if not sounds_dir.is_dir():
        raise FileNotFoundError(f"Asterisk sounds folder {sounds_dir} does not exist")
    texts = read_transcripts(transcripts)
    prompts: list[AsteriskPrompt] = []
    for key in sorted(texts):
        text = spoken_text(texts[key])
        path = sounds_dir / f"{key}.wav"
        if text and path.is_file():
            prompts.append(AsteriskPrompt(key=key, text=text, path=path, seconds=_wav_seconds(path)))
    return prompts


def missing_data(sounds_dir: Path = SOUNDS_DIR, transcripts: Path = TRANSCRIPTS) -> str | None:
    """Why the real-speech part cannot run (a message that says how to fix it), or None when it can."""
    missing = [str(p) for p in (sounds_dir, transcripts) if not p.exists()]
    if not missing:
        return None
    return (
        f"real recorded speech not installed ({', '.join(missing)} missing): run scripts/speech-data.sh "
        "(as root or with sudo; it installs the Debian packages asterisk-core-sounds-en-wav and "
        "asterisk-core-sounds-en)"
    )


def read_wav(path: Path) -> npt.NDArray[np.int16]:
    """A 16-bit WAV as 8 kHz mono int16 (channels averaged, other rates resampled).

    Raises:
        ValueError: the file is not 16-bit PCM.
    """
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * w.getsampwidth()}-bit samples, expected 16-bit PCM")
        channels, rate = w.getnchannels(), w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if rate != SAMPLE_RATE:
        data = Resampler(rate, SAMPLE_RATE, quality="HQ").process(data.astype(np.int16), last=True)
    return data.astype(np.int16)

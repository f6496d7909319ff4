"""The faster-whisper model: checking a local CTranslate2 model folder and loading it, never downloading.

No model can be downloaded here (speech.md §4): a user copies a model folder in by hand and points
``STT_MODEL_PATH`` at it; :func:`check_model_dir` says exactly what is wrong with it. faster-whisper itself is the
opt-in extra ``voxcart-stt[whisper]`` and is imported only by :func:`load_model` (through
:meth:`~voxcart.stt.whisper.WhisperProvider.load`), so importing this module never needs it.

Invariants:
- The folder is checked before faster-whisper is imported: a bad folder is reported even where the package is
  missing.
- The model is built with ``local_files_only=True`` on the CPU in int8: loading never touches the network.
- Every failure (unusable folder, missing package, model that does not load) is a
  :class:`~voxcart.stt.provider.ProviderError` naming ``STT_MODEL_PATH`` or the package, and how to fix it.
- Logs go to ``voxcart.stt.whisper``, the provider's logger, as before this module was split out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from .provider import ProviderError

__all__ = [
    "REQUIRED_FILES",
    "TranscribeModel",
    "WhisperSegment",
    "check_model_dir",
    "load_model",
]

log = logging.getLogger("voxcart.stt.whisper_model")

REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
"""Files a model folder must hold, plus one of :data:`_VOCABULARIES`. Without ``tokenizer.json`` faster-whisper
would try to download the tokenizer from Hugging Face."""
_VOCABULARIES = ("vocabulary.txt", "vocabulary.json")
_PREPROCESSOR = "preprocessor_config.json"
"""Optional: faster-whisper falls back to 80 mel bins without it, right for tiny to large-v2; large-v3 and turbo
(128 mel bins) need it, and their converted folders ship it."""
_HOW_TO = (
    "Prepare the folder on a machine with internet and copy it here: either "
    "`ct2-transformers-converter --model openai/whisper-tiny.en --output_dir faster-whisper-tiny.en "
    "--quantization int8 --copy_files tokenizer.json preprocessor_config.json` (pip install ctranslate2 transformers), "
    "or a copy of a Systran/faster-whisper-* model repository (e.g. Systran/faster-whisper-tiny.en, fetched with "
    "`git lfs` or `huggingface-cli download`)."
)
_LFS_POINTER = b"version https://git-lfs"


class WhisperSegment(Protocol):
    """What is read from one of faster-whisper's ``Segment`` s."""

    @property
    def text(self) -> str: ...

    @property
    def avg_logprob(self) -> float: ...

    @property
    def no_speech_prob(self) -> float: ...


class TranscribeModel(Protocol):
    """The part of ``faster_whisper.WhisperModel`` used here (a unit test injects a fake)."""

    def transcribe(self, audio: npt.NDArray[np.float32], /, **options: Any) -> tuple[Iterable[WhisperSegment], Any]:
        """Transcribe 16 kHz mono float32 audio; returns (segments, info), the segments possibly lazy."""
        ...


def check_model_dir(path: str | os.PathLike[str]) -> Path:
    """Check that ``path`` is a usable faster-whisper (CTranslate2) model folder.

    Args:
        path: the value of ``STT_MODEL_PATH``.

    Returns:
        The folder, resolved.

    Raises:
        ProviderError: the path is empty, missing or not a folder, or files are missing or empty; the message
            says which and how to produce the folder.
    """
    raw = os.fspath(path)
    if not raw.strip():
        raise ProviderError(f"STT_MODEL_PATH is empty: STT_PROVIDER=whisper needs a local model folder. {_HOW_TO}")
    folder = Path(raw).expanduser()
    if not folder.exists():
        raise ProviderError(f"STT_MODEL_PATH={raw}: no such folder. {_HOW_TO}")
    if not folder.is_dir():
        hint = f" (point it at {folder.parent}, the folder holding it)" if folder.name in REQUIRED_FILES else ""
        raise ProviderError(f"STT_MODEL_PATH={raw} is a file, not a model folder{hint}. {_HOW_TO}")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in _VOCABULARIES):
        missing.append(" or ".join(_VOCABULARIES))
    if missing:
        raise ProviderError(f"STT_MODEL_PATH={raw}: the model folder lacks {', '.join(missing)}. {_HOW_TO}")
    for name in REQUIRED_FILES:
        file = folder / name
        size = file.stat().st_size
        if size == 0:
            raise ProviderError(f"STT_MODEL_PATH={raw}: {name} is empty (an interrupted copy?). {_HOW_TO}")
        if size < 1024 and file.read_bytes().startswith(_LFS_POINTER):
            raise ProviderError(
                f"STT_MODEL_PATH={raw}: {name} is a Git LFS pointer, not the file: run `git lfs pull` in the "
                f"clone before copying it. {_HOW_TO}"
            )
    if not (folder / _PREPROCESSOR).is_file():
        log.warning(
            "STT_MODEL_PATH=%s has no %s: faster-whisper uses 80 mel bins, right for tiny to large-v2 but not for "
            "large-v3 or turbo models",
            raw,
            _PREPROCESSOR,
        )
    return folder.resolve()


def load_model(
    model_path: str | os.PathLike[str],
    *,
    model_factory: Callable[[Path], TranscribeModel] | None = None,
    cpu_threads: int | None = None,
    num_workers: int = 1,
) -> TranscribeModel:
    """Check the model folder (:func:`check_model_dir`), then build the model from it.

    Args:
        model_path: ``STT_MODEL_PATH``.
        model_factory: builds the model from the checked folder instead of faster-whisper (tests).
        cpu_threads: CTranslate2 intra-op threads per replica (default: the usable cores, at most 4).
        num_workers: CTranslate2 model replicas.

    Returns:
        The loaded model.

    Raises:
        ProviderError: the folder is unusable, faster-whisper is not installed, or the model fails to load.
    """
    folder = check_model_dir(model_path)
    if model_factory is None:
        threads = cpu_threads or _default_threads()
        model_factory = _faster_whisper_factory(threads, num_workers)
    try:
        model = model_factory(folder)
    except ProviderError:
        raise
    except Exception as e:  # CTranslate2 raises RuntimeError/ValueError for a bad or foreign model.bin
        raise ProviderError(
            f"STT_MODEL_PATH={os.fspath(model_path)}: faster-whisper could not load the model: "
            f"{type(e).__name__}: {e}. {_HOW_TO}"
        ) from e
    log.info("whisper model loaded from %s", folder)
    return model


def _default_threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _faster_whisper_factory(cpu_threads: int, num_workers: int) -> Callable[[Path], TranscribeModel]:
    """faster-whisper's ``WhisperModel`` on the CPU in int8, never touching the network."""
    try:
        from faster_whisper import WhisperModel
    except ImportError as e:
        raise ProviderError(
            f"STT_PROVIDER=whisper needs faster-whisper, which is not installed ({e}): "
            "pip install 'voxcart-stt[whisper]' (about 150 MB; no model is downloaded)"
        ) from e

    def build(folder: Path) -> TranscribeModel:
        model: TranscribeModel = WhisperModel(
            str(folder),
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads,
            num_workers=num_workers,
            local_files_only=True,
        )
        return model

    return build

"""The faster-whisper provider: model-folder checks, the missing-package error, and with a fake model, the
segmentation and result mapping on real caller speech through the 8 kHz μ-law path.

faster-whisper is an opt-in extra and no Whisper weights exist on this machine, so the model here is a fake; the
endpointer, the resampling and everything around the model are the real ones.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from voxcart.common.audio import ulaw_to_pcm16
from voxcart.stt.provider import CallStt, ProviderError, SttProvider
from voxcart.stt.results import Discarded, Final, RecognizerEvent, SpeechStart
from voxcart.stt.whisper import WhisperCallStt, WhisperProvider, check_model_dir, normalize_text

Entries = list[tuple[str, bytes, float]]
Speech = Callable[[str], bytes]
ToEntries = Callable[..., Entries]

SENTENCES = ["where is my order", "do you have these sneakers in size 10", "i want a refund for the red jacket"]


@dataclass(frozen=True)
class FakeSegment:
    text: str
    avg_logprob: float = -0.1
    no_speech_prob: float = 0.01


Reply = Sequence[FakeSegment] | Exception | Callable[[], Iterator[FakeSegment]]


class FakeWhisper:
    """Answers each ``transcribe`` with the next reply and records what it was given."""

    def __init__(self, replies: Sequence[Reply]) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[npt.NDArray[np.float32], dict[str, Any]]] = []

    def transcribe(self, audio: npt.NDArray[np.float32], /, **options: Any) -> tuple[Iterator[FakeSegment], None]:
        self.calls.append((audio, options))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply(), None  # lazy, like faster-whisper's generator
        return iter(reply), None


def _model_dir(root: Path, *, skip: Sequence[str] = (), vocabulary: str = "vocabulary.txt") -> Path:
    folder = root / "faster-whisper-tiny.en"
    folder.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json", vocabulary, "preprocessor_config.json"):
        if name not in skip:
            (folder / name).write_bytes(b"\0" * 2048 if name == "model.bin" else b"{}")
    return folder


async def _feed(stt: WhisperCallStt, entries: Entries) -> list[RecognizerEvent]:
    events: list[RecognizerEvent] = []
    for entry_id, frame, arrived in entries:
        events += await stt.feed(entry_id, frame, arrived)
    return events


def _chunk(entry_id: str) -> int:
    return int(entry_id.split("-")[1])


# --- the model folder -----------------------------------------------------------------------------------------


def test_folder_check_accepts_a_complete_folder(tmp_path: Path) -> None:
    folder = _model_dir(tmp_path, vocabulary="vocabulary.json")
    assert check_model_dir(str(folder)) == folder.resolve()


@pytest.mark.parametrize("value", ["", "   "])
def test_folder_check_empty_setting(value: str) -> None:
    with pytest.raises(ProviderError, match="STT_MODEL_PATH is empty") as err:
        check_model_dir(value)
    assert "ct2-transformers-converter" in str(err.value) and "Systran/faster-whisper-" in str(err.value)


def test_folder_check_no_such_folder(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match=r"STT_MODEL_PATH=.*nope: no such folder") as err:
        check_model_dir(tmp_path / "nope")
    assert "ct2-transformers-converter" in str(err.value)


def test_folder_check_a_file_points_at_its_folder(tmp_path: Path) -> None:
    folder = _model_dir(tmp_path)
    with pytest.raises(ProviderError, match="is a file, not a model folder") as err:
        check_model_dir(folder / "model.bin")
    assert f"point it at {folder}" in str(err.value)


def test_folder_check_names_every_missing_file(tmp_path: Path) -> None:
    folder = _model_dir(tmp_path, skip=("tokenizer.json", "vocabulary.txt"))
    with pytest.raises(ProviderError) as err:
        check_model_dir(folder)
    message = str(err.value)
    assert (
        f"STT_MODEL_PATH={folder}: the model folder lacks tokenizer.json, vocabulary.txt or vocabulary.json" in message
    )
    assert "model.bin" not in message.split("lacks")[1].split(".")[0]
    assert "ct2-transformers-converter" in message and "Systran/faster-whisper-tiny.en" in message


def test_folder_check_empty_file_and_lfs_pointer(tmp_path: Path) -> None:
    folder = _model_dir(tmp_path)
    (folder / "config.json").write_bytes(b"")
    with pytest.raises(ProviderError, match="config.json is empty"):
        check_model_dir(folder)
    (folder / "config.json").write_bytes(b"{}")
    (folder / "model.bin").write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 75538270\n")
    with pytest.raises(ProviderError, match="model.bin is a Git LFS pointer.*git lfs pull"):
        check_model_dir(folder)


def test_folder_check_without_preprocessor_config_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Systran's tiny..large-v2 folders ship no preprocessor_config.json; faster-whisper's defaults fit them."""
    folder = _model_dir(tmp_path, skip=("preprocessor_config.json",))
    with caplog.at_level(logging.WARNING, logger="voxcart.stt.whisper_model"):
        assert check_model_dir(folder) == folder.resolve()
    assert "no preprocessor_config.json" in caplog.text and "large-v3" in caplog.text


# --- loading --------------------------------------------------------------------------------------------------


def test_load_without_faster_whisper_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real ImportError: faster-whisper is not installed in this venv (if it ever is, it is hidden)."""
    if importlib.util.find_spec("faster_whisper") is not None:
        monkeypatch.setitem(sys.modules, "faster_whisper", None)
    with pytest.raises(ProviderError, match=r"pip install 'voxcart-stt\[whisper\]'") as err:
        WhisperProvider.load(_model_dir(tmp_path), end_silence_ms=600)
    assert isinstance(err.value.__cause__, ImportError)


def test_load_checks_the_folder_before_the_package(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="lacks model.bin"):
        WhisperProvider.load(_model_dir(tmp_path, skip=("model.bin",)), end_silence_ms=600)


def test_load_builds_whisper_model_offline_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default factory, against a stand-in ``faster_whisper`` module that records the constructor call."""
    built: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    class WhisperModel(FakeWhisper):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__([])
            built.append((args, kwargs))

    module = types.ModuleType("faster_whisper")
    module.WhisperModel = WhisperModel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "faster_whisper", module)
    folder = _model_dir(tmp_path)
    provider = WhisperProvider.load(folder, end_silence_ms=700, cpu_threads=2)
    assert isinstance(provider.model, WhisperModel)
    assert built == [
        (
            (str(folder.resolve()),),
            {
                "device": "cpu",
                "compute_type": "int8",
                "cpu_threads": 2,
                "num_workers": 1,
                "local_files_only": True,
            },
        )
    ]
    assert provider.endpointer_config.end_silence_ms == 700


def test_load_wraps_a_model_that_does_not_load(tmp_path: Path) -> None:
    def broken(folder: Path) -> FakeWhisper:
        raise RuntimeError(f"Unable to open file 'model.bin' in model '{folder}'")

    folder = _model_dir(tmp_path)
    with pytest.raises(ProviderError, match=r"STT_MODEL_PATH=.*could not load the model: RuntimeError: Unable"):
        WhisperProvider.load(folder, end_silence_ms=600, model_factory=broken)


def test_provider_shares_one_model(tmp_path: Path) -> None:
    fake = FakeWhisper([])
    seen: list[Path] = []

    def factory(folder: Path) -> FakeWhisper:
        seen.append(folder)
        return fake

    provider: SttProvider = WhisperProvider.load(_model_dir(tmp_path), end_silence_ms=600, model_factory=factory)
    a, b = provider.open_call("CAa"), provider.open_call("CAb", start_after="1-5", resume="ignored")
    assert isinstance(a, WhisperCallStt) and isinstance(b, WhisperCallStt)
    assert a.model is fake and b.model is fake and len(seen) == 1
    assert a.provider == provider.name == "whisper" and b.resume == ""


# --- one call, real caller speech ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def call_entries(speech: Speech, to_entries: ToEntries) -> Entries:
    """The three sentences one after the other, as one call's ``audio.in`` entries."""
    entries: Entries = []
    for text in SENTENCES:
        entries += to_entries(speech(text), first_chunk=len(entries) + 1)
    return entries


async def test_one_final_per_sentence_with_the_utterance_audio(call_entries: Entries) -> None:
    fake = FakeWhisper(
        [
            [FakeSegment(" Where is my order?", avg_logprob=-0.2)],
            [FakeSegment(" Do you have these sneakers", -0.1), FakeSegment(" in size 10?", -0.3)],
            [FakeSegment(" I want a refund for the red jacket.", avg_logprob=-0.05)],
        ]
    )
    stt = WhisperCallStt(fake, "CAw", start_after="0-0")
    _: CallStt = stt
    stt.listen("product", ["sneakers", " red  jacket ", ""])
    events = await _feed(stt, call_entries)

    starts = [e for e in events if isinstance(e, SpeechStart)]
    finals = [e for e in events if isinstance(e, Final)]
    assert [type(e) for e in events] == [SpeechStart, Final] * 3
    assert [f.text for f in finals] == [
        "where is my order",
        "do you have these sneakers in size 10",
        "i want a refund for the red jacket",
    ]
    assert [s.utterance_id for s in starts] == [f.utterance_id for f in finals]
    assert math.isclose(finals[0].confidence, math.exp(-0.2))
    assert math.isclose(finals[1].confidence, math.exp(-0.2))  # mean of the segments' avg_logprob
    by_id = {entry_id: (frame, arrived) for entry_id, frame, arrived in call_entries}
    for final, (audio, options) in zip(finals, fake.calls, strict=True):
        first_entry = final.utterance_id.removeprefix("CAw:")
        first, last = _chunk(first_entry), _chunk(final.last_entry_id)
        # the audio is exactly the utterance's frames (pre-roll included), at 16 kHz, float32 in [-1, 1]
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert len(audio) == 320 * (last - first + 1)
        assert float(np.max(np.abs(audio))) <= 1.0 and float(np.max(np.abs(audio))) > 0.05
        pcm = np.concatenate([ulaw_to_pcm16(by_id[f"1-{k}"][0]) for k in range(first, last + 1)]) / 32768.0
        assert np.corrcoef(audio[::2], pcm)[0, 1] > 0.95
        assert _chunk(final.checkpoint_entry) < last and final.resume == ""
        assert final.first_voiced_arrived <= final.last_voiced_arrived < by_id[final.last_entry_id][1]
        assert final.endpointed_at <= final.recognized_at
        assert options == {
            "language": "en",
            "beam_size": 2,
            "temperature": 0.0,
            "vad_filter": False,
            "without_timestamps": True,
            "condition_on_previous_text": False,
            "hotwords": "sneakers, red jacket",
        }
    assert stt.utterance_start_entry() is None


async def test_replay_after_a_checkpoint_gives_the_same_ids(call_entries: Entries) -> None:
    def replies() -> list[Reply]:
        return [[FakeSegment(text)] for text in SENTENCES]

    original = FakeWhisper(replies())
    first = await _feed(WhisperCallStt(original, "CAr", clock=lambda: 0.0), call_entries)
    finals = [e for e in first if isinstance(e, Final)]
    checkpoint = finals[0].checkpoint_entry
    replayed_model = FakeWhisper(replies()[1:])
    after = [e for e in call_entries if _chunk(e[0]) > _chunk(checkpoint)]
    replayed = await _feed(WhisperCallStt(replayed_model, "CAr", start_after=checkpoint, clock=lambda: 0.0), after)
    assert replayed == first[2:]  # same ids, texts, checkpoints and arrival times
    for (audio, options), (original_audio, _) in zip(replayed_model.calls, original.calls[1:], strict=True):
        assert np.array_equal(audio, original_audio) and options["hotwords"] is None


async def test_keyterms_apply_from_the_next_utterance(call_entries: Entries) -> None:
    fake = FakeWhisper([[FakeSegment(t)] for t in SENTENCES])
    stt = WhisperCallStt(fake, "CAk", beam_size=1)
    events: list[RecognizerEvent] = []
    for entry_id, frame, arrived in call_entries:
        events += await stt.feed(entry_id, frame, arrived)
        if stt.utterance_start_entry() is not None and len(events) == 1:
            stt.listen("yes_no", ["yes", "no"])  # said during the first utterance
    assert [options["hotwords"] for _, options in fake.calls] == [None, "yes, no", "yes, no"]
    assert fake.calls[0][1]["beam_size"] == 1


async def test_no_speech_and_empty_text_are_discarded(call_entries: Entries) -> None:
    fake = FakeWhisper(
        [
            [FakeSegment(" Thank you.", avg_logprob=-0.9, no_speech_prob=0.8)],
            [],
            [FakeSegment(" ...", avg_logprob=-0.5), FakeSegment(" Red jacket.", -0.2, no_speech_prob=0.7)],
        ]
    )
    events = await _feed(WhisperCallStt(fake, "CAn"), call_entries)
    discarded = [e for e in events if isinstance(e, Discarded)]
    assert [type(e) for e in events] == [SpeechStart, Discarded] * 3
    assert all(d.resume == "" and _chunk(d.checkpoint_entry) < _chunk(d.last_entry_id) for d in discarded)


async def test_a_segment_over_the_threshold_is_dropped_from_the_text(call_entries: Entries) -> None:
    fake = FakeWhisper([[FakeSegment(" Where is", -0.3), FakeSegment(" Thank you.", -0.1, no_speech_prob=0.61)]])
    stt = WhisperCallStt(fake, "CAt", no_speech_threshold=0.6)
    events = await _feed(stt, call_entries[: len(call_entries) // 3])
    final = events[-1]
    assert isinstance(final, Final) and final.text == "where is"
    assert math.isclose(final.confidence, math.exp(-0.3))


@pytest.mark.parametrize("lazy", [False, True])
async def test_model_failure_is_a_provider_error(call_entries: Entries, lazy: bool) -> None:
    def failing() -> Iterator[FakeSegment]:
        yield FakeSegment(" where")
        raise RuntimeError("out of memory")

    reply: Reply = failing if lazy else RuntimeError("out of memory")
    stt = WhisperCallStt(FakeWhisper([reply]), "CAf")
    with pytest.raises(ProviderError, match=r"whisper: call CAf, utterance CAf:1-\d+ .*RuntimeError: out of memory"):
        await _feed(stt, call_entries)


async def test_end_utterance_closes_the_open_one(speech: Speech, to_entries: ToEntries) -> None:
    entries = to_entries(speech(SENTENCES[0]))
    fake = FakeWhisper([[FakeSegment("Where is my order?")]])
    stt = WhisperCallStt(fake, "CAe")
    cut = entries[: len(entries) - 45]  # stop 900 ms before the end: 100 ms of tail silence, no end yet
    events = await _feed(stt, cut)
    assert [type(e) for e in events] == [SpeechStart]
    assert stt.checkpoint() is None and stt.utterance_start_entry() is not None
    closed = await stt.end_utterance()
    assert len(closed) == 1 and isinstance(closed[0], Final)
    assert closed[0].last_entry_id == cut[-1][0] and closed[0].text == "where is my order"
    assert len(fake.calls[0][0]) == 320 * (_chunk(cut[-1][0]) - _chunk(closed[0].utterance_id.split(":")[1]) + 1)
    assert await stt.end_utterance() == []
    assert stt.checkpoint() is not None
    await stt.aclose()
    await stt.aclose()


async def test_entries_of_two_frames(speech: Speech, to_entries: ToEntries) -> None:
    """An entry may hold 40 ms: both frames are endpointed; an utterance may start or end on either frame."""
    single = to_entries(speech(SENTENCES[0]))
    double = [
        (f"1-{k + 1}", a[1] + b[1], a[2]) for k, (a, b) in enumerate(zip(single[::2], single[1::2], strict=False))
    ]
    fake = FakeWhisper([[FakeSegment("Where is my order?")]])
    events = await _feed(WhisperCallStt(fake, "CAd"), double)
    assert [type(e) for e in events] == [SpeechStart, Final]
    final = events[1]
    assert isinstance(final, Final) and final.text == "where is my order"
    first, last = _chunk(final.utterance_id.split(":")[1]), _chunk(final.last_entry_id)
    assert 320 * 2 * (last - first) <= len(fake.calls[0][0]) <= 320 * 2 * (last - first + 1)


async def test_feed_rejects_a_partial_frame() -> None:
    stt = WhisperCallStt(FakeWhisper([]), "CAb")
    with pytest.raises(ValueError, match="entry 1-1 of call CAb: 100 bytes of μ-law"):
        await stt.feed("1-1", b"\xff" * 100, 0.0)


def test_normalize_text() -> None:
    assert normalize_text(" Yes, it’s order #12,345-B.") == "yes it's order 12345 b"
    assert normalize_text("My order number is 4, 8, 1, 5, 2.") == "my order number is 4 8 1 5 2"
    assert normalize_text("The T-shirt, the 2nd one & more!") == "the t-shirt the 2nd one and more"
    assert normalize_text(" ... ") == ""

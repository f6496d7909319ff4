"""``voxcart bench speech``: WER scoring, noise mixing at a given SNR, transcript parsing, and a real quick run."""

from __future__ import annotations

import gzip
import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from voxcart.brain.language import sample_utterances
from voxcart.brain.nlu import INTENTS
from voxcart.brain.store import SqliteStore, demo_seed_path
from voxcart.cli.bench.asterisk import (
    ISOLATED_NUMBERS,
    TranscriptError,
    find_prompts,
    missing_data,
    parse_transcripts,
    read_wav,
    spoken_text,
)
from voxcart.cli.bench.calls import compose_call
from voxcart.cli.bench.corpus import JOBS, in_domain_sentences, in_samples, quick_subset
from voxcart.cli.bench.decoding import assign_finals
from voxcart.cli.bench.noise import (
    BABBLE_WARPS,
    active_samples,
    babble,
    band_limit,
    colored_noise,
    measured_snr,
    mix_at_snr,
    noise_mix,
    warp_voice,
)
from voxcart.cli.bench.report import render, table
from voxcart.cli.bench.wer import WordErrors, align, canonical_tokens, word_errors
from voxcart.cli.main import main
from voxcart.common.audio import pcm16_to_ulaw, ulaw_to_pcm16
from voxcart.common.seed import load_seed

Int16Array = npt.NDArray[np.int16]

# -- WER -----------------------------------------------------------------------------------------------------


def test_align_counts_each_kind_of_error() -> None:
    assert align(["a", "b", "c"], ["a", "b", "c"]) == WordErrors(0, 0, 0, 3)
    assert align(["a", "b", "c"], ["a", "x", "c"]) == WordErrors(1, 0, 0, 3)
    assert align(["a", "b", "c"], ["a", "c"]) == WordErrors(0, 1, 0, 3)
    assert align(["a", "b", "c"], ["a", "b", "c", "d"]) == WordErrors(0, 0, 1, 3)
    assert align([], ["x", "y"]) == WordErrors(0, 0, 2, 0)
    assert align(["a", "b"], []) == WordErrors(0, 2, 0, 2)
    # kitten -> sitting, by letters: 2 substitutions and 1 insertion (the classic distance 3)
    assert align(list("kitten"), list("sitting")) == WordErrors(2, 0, 1, 6)


def test_align_prefers_substitutions_at_equal_cost() -> None:
    """ "a b" -> "x y": two substitutions, not two deletions plus two insertions (or a mix)."""
    errors = align(["a", "b"], ["x", "y"])
    assert (errors.substitutions, errors.deletions, errors.insertions) == (2, 0, 0)


def test_wer_adds_up_over_a_corpus() -> None:
    total = WordErrors()
    total += word_errors("where is my order", "where is order")
    total += word_errors("yes", "yes please")
    assert (total.errors, total.reference) == (2, 5)
    assert total.wer == pytest.approx(0.4)
    assert total.as_dict()["wer"] == 0.4
    assert WordErrors().wer == 0.0
    assert WordErrors(insertions=1).wer == float("inf")


@pytest.mark.parametrize(
    "spoken",
    [
        "order one zero zero two three",
        "order one oh oh two three",
        "Order #10023.",
        "order ten thousand twenty three",
        "order 1 0 0 2 3",
    ],
)
def test_digits_and_spelled_numbers_compare_equal(spoken: str) -> None:
    assert word_errors("order 10023", spoken).errors == 0
    assert word_errors("order one zero zero two three", spoken).errors == 0
    assert canonical_tokens(spoken) == ["order", "1", "0", "0", "2", "3"]


def test_number_errors_count_per_digit() -> None:
    assert word_errors("order 10023", "order one zero zero two eight") == WordErrors(1, 0, 0, 6)
    assert word_errors("order 10023", "order one zero two three") == WordErrors(0, 1, 0, 6)
    assert word_errors("size ten", "size 10").errors == 0
    assert word_errors("size ten point five", "size 10.5").errors == 0
    assert word_errors("one hundred and five", "105").errors == 0


def test_canonical_tokens_keep_words_and_drop_markup() -> None:
    assert canonical_tokens("<s> Where's my ORDER? [noise] read(2) </s>") == ["where", "is", "my", "order", "read"]
    assert canonical_tokens("oh i see") == ["oh", "i", "see"]  # "oh" is zero only next to a number
    assert canonical_tokens("uh zero um") == ["0"]  # hesitations are nobody's words
    assert canonical_tokens("double oh seven") == ["0", "0", "7"]
    assert canonical_tokens("Call-Forward on Busy.") == ["call", "forward", "on", "busy"]
    assert canonical_tokens("") == []


# -- noise and SNR -------------------------------------------------------------------------------------------


def _bursts(rng: np.random.Generator, n_bursts: int = 5) -> tuple[Int16Array, npt.NDArray[np.bool_]]:
    """Speech-like test audio: harmonic bursts of varying level between stretches of digital silence.

    Returns the audio and, independently of the code under test, which samples are the bursts.
    """
    pieces: list[npt.NDArray[np.float64]] = []
    truth: list[npt.NDArray[np.bool_]] = []
    for k in range(n_bursts):
        gap = np.zeros(160 * int(rng.integers(10, 40)))
        n = 160 * int(rng.integers(30, 80))
        t = np.arange(n) / 8000
        f0 = 110 + 40 * k
        burst = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 12))
        burst = burst * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2) * 2500 * (0.6 + 0.2 * k)
        pieces += [gap, burst]
        truth += [np.zeros(len(gap), dtype=np.bool_), np.ones(n, dtype=np.bool_)]
    pieces.append(np.zeros(160 * 20))
    truth.append(np.zeros(160 * 20, dtype=np.bool_))
    return np.round(np.concatenate(pieces)).astype(np.int16), np.concatenate(truth)


def _snr_on(mask: npt.NDArray[np.bool_], clean: Int16Array, noisy: Int16Array) -> float:
    s = clean.astype(np.float64)[mask]
    d = noisy.astype(np.float64)[mask] - s
    return float(10 * np.log10(np.mean(s * s) / np.mean(d * d)))


def test_active_part_is_the_speech() -> None:
    speech, truth = _bursts(np.random.default_rng(1))
    mask = active_samples(speech)
    assert np.array_equal(mask, truth)


@pytest.mark.parametrize("snr_db", [20.0, 10.0, 5.0, 0.0])
def test_mix_hits_the_snr_on_the_active_part(snr_db: float) -> None:
    rng = np.random.default_rng(int(snr_db) + 7)
    speech, truth = _bursts(rng)
    talkers = [_bursts(rng, 3)[0] for _ in range(3)]
    noisy = mix_at_snr(speech, noise_mix(len(speech), talkers, rng), snr_db)
    assert _snr_on(truth, speech, noisy) == pytest.approx(snr_db, abs=0.5)
    assert measured_snr(speech, noisy) == pytest.approx(snr_db, abs=0.5)
    # and still after the telephone codec
    assert _snr_on(truth, speech, ulaw_to_pcm16(pcm16_to_ulaw(noisy))) == pytest.approx(snr_db, abs=0.5)
    # the noise covers the pauses too, at the same level (it is a line, not a gate)
    pause = ~truth
    speech_part = noisy.astype(np.float64)[truth] - speech[truth]
    pause_part = noisy.astype(np.float64)[pause]
    assert np.sqrt(np.mean(pause_part**2)) == pytest.approx(np.sqrt(np.mean(speech_part**2)), rel=0.35)


def test_mix_rejects_bad_input() -> None:
    speech, _ = _bursts(np.random.default_rng(3))
    with pytest.raises(ValueError, match="noise samples for"):
        mix_at_snr(speech, np.ones(10), 10.0)
    with pytest.raises(ValueError, match="silent"):
        mix_at_snr(speech, np.zeros(len(speech)), 10.0)
    with pytest.raises(ValueError, match="no frame reaches"):
        mix_at_snr(np.zeros(1600, dtype=np.int16), np.ones(1600), 10.0)


def _band_power(x: npt.NDArray[np.float64], low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / 8000)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


@pytest.mark.parametrize(("exponent", "db_per_octave"), [(1.0, -3.0), (2.0, -6.0)])
def test_colored_noise_slope_and_band(exponent: float, db_per_octave: float) -> None:
    x = colored_noise(8000 * 8, exponent, np.random.default_rng(5))
    assert np.sqrt(np.mean(x * x)) == pytest.approx(1.0)
    # power per Hz halves (pink) or quarters (brown) per octave: compare 400-800 Hz with 1600-3200 Hz
    low, high = _band_power(x, 400, 800) / 400, _band_power(x, 1600, 3200) / 1600
    assert 10 * np.log10(high / low) / 2 == pytest.approx(db_per_octave, abs=0.6)
    total = _band_power(x, 0, 4001)
    assert _band_power(x, 0, 190) / total < 1e-9 and _band_power(x, 3810, 4001) / total < 1e-9


def test_babble_is_the_talkers_and_band_limited() -> None:
    rng = np.random.default_rng(9)
    talkers = [_bursts(rng, 2)[0] for _ in range(3)]
    x = babble(talkers, 8000 * 3, rng)
    assert len(x) == 8000 * 3 and np.sqrt(np.mean(x * x)) == pytest.approx(1.0)
    assert np.allclose(band_limit(x), x, atol=1e-9)
    with pytest.raises(ValueError, match="babble"):
        babble([np.zeros(800, dtype=np.int16)], 100, rng)


def _peak_hz(x: npt.NDArray[np.float64]) -> float:
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(len(x), 1 / 8000)[int(np.argmax(spectrum))])


def test_warp_voice_scales_every_frequency_and_the_rate() -> None:
    t = np.arange(8000) / 8000
    tone = np.sin(2 * np.pi * 500 * t)
    higher = warp_voice(tone, 1.25)
    assert len(higher) == pytest.approx(8000 / 1.25, abs=2)
    assert _peak_hz(higher) == pytest.approx(625, abs=3)
    assert _peak_hz(warp_voice(tone, 0.8)) == pytest.approx(400, abs=3)
    assert warp_voice(tone, 1.0) is tone
    with pytest.raises(ValueError, match="warp_voice"):
        warp_voice(tone, 3.0)


def test_babble_talkers_are_other_voices_than_the_callers() -> None:
    """Every babble talker is warped at least 10 % away from the caller's voice (no competing-speaker test)."""
    assert len(BABBLE_WARPS) >= 6 and all(abs(w - 1.0) >= 0.1 for w in BABBLE_WARPS)
    rng = np.random.default_rng(5)
    tone = np.round(3000 * np.sin(2 * np.pi * 500 * np.arange(4000) / 8000)).astype(np.int16)
    one = babble([tone], 8000 * 2, rng, voices=1, warps=(1.4,))
    assert _peak_hz(one) == pytest.approx(700, abs=5)
    same = babble([tone], 8000 * 2, np.random.default_rng(5), voices=1, warps=(1.0,))
    assert _peak_hz(same) == pytest.approx(500, abs=5)


def test_compose_call_spans_are_where_the_speech_is() -> None:
    rng = np.random.default_rng(11)
    a, b = _bursts(rng, 1)[0], _bursts(rng, 2)[0]
    call = compose_call([a, b], lead_s=1.0, gap_s=1.2, tail_s=1.2)
    assert len(call.pcm) % 160 == 0 and len(call.spans) == 2
    (a0, a1), (b0, b1) = call.spans
    assert a0 < a1 < b0 < b1
    active = np.flatnonzero(active_samples(call.pcm))
    assert a0 == 1_000_000.0 + 20 * (active[0] // 160)
    assert b1 == 1_000_000.0 + 20 * (active[-1] // 160)
    with pytest.raises(ValueError, match="whole 20 ms frames"):
        compose_call([a[:-1]])


def test_finals_go_to_the_sentences_they_overlap() -> None:
    spans = [(1000.0, 2000.0), (3000.0, 4000.0), (5000.0, 6000.0)]
    finals = [
        (1020.0, 1500.0),  # "where is"
        (1600.0, 1980.0),  # "my order": a pause split the first sentence
        (2500.0, 2700.0),  # noise between sentences
        (3100.0, 5200.0),  # the endpointer missed a pause: mostly the second sentence, some of the third
    ]
    by_sentence, spurious, merged = assign_finals(finals, spans)
    assert by_sentence == [[0, 1], [3], []]
    assert spurious == [2] and merged == 1


# -- the in-domain sentences --------------------------------------------------------------------------------


def test_corpus_labels_match_the_brain_and_the_store() -> None:
    seed = load_seed(demo_seed_path())
    orders = {o.number for o in seed.orders}
    samples = sample_utterances(SqliteStore(seed))
    sentences = in_domain_sentences(sorted(orders))
    assert {s.job for s in sentences} == set(JOBS)
    for s in sentences:
        assert s.intent is None or s.intent in INTENTS or s.intent in ("yes", "no"), s
        assert not any(ch.isdigit() for ch in s.text), s.text
        assert s.order is None or s.order in orders
        assert not s.verbatim or in_samples(s.text, samples), f"not a sample sentence (any more?): {s.text}"
    held_out = [s for s in sentences if not s.verbatim]
    assert len(held_out) > 2 * (len(sentences) - len(held_out))
    # the brain's samples grow; most held-out phrasings must stay out of them, or the bench measures little
    assert sum(not in_samples(s.text, samples) for s in held_out) >= 0.8 * len(held_out)
    assert sum(s.order is not None for s in sentences) >= 8
    quick = quick_subset(sentences)
    assert 3 <= len(quick) <= 6 and any(s.order for s in quick)
    with pytest.raises(ValueError, match="order numbers"):
        in_domain_sentences(["A12"])


# -- Asterisk transcripts -----------------------------------------------------------------------------------


def _write_wav(path: Path, seconds: float, rate: int = 8000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.sin(2 * np.pi * 300 * t) * 8000).astype("<i2").tobytes())


def test_transcripts_parse_and_match_wavs(tmp_path: Path) -> None:
    text = (
        "; Core Asterisk Sounds in English\n"
        "\n"
        "agent-pass: Please enter your password followed by the pound key.\n"
        "beep: [this is a simple beep tone]\n"
        "digits/5: five\n"
        "letters/dot: dot [.]\n"
        "silence/1: (1 second of silence)\n"
        "no-wav: This prompt has no recording.\n"
        "dir-multi2: ... for ...\n"
    )
    transcripts = tmp_path / "core-sounds-en.txt.gz"
    with gzip.open(transcripts, "wt", encoding="utf-8") as f:
        f.write(text)
    sounds = tmp_path / "sounds"
    for key in ("agent-pass", "beep", "digits/5", "letters/dot", "silence/1", "dir-multi2"):
        _write_wav(sounds / f"{key}.wav", 0.5)
    prompts = find_prompts(sounds, transcripts)
    assert [(p.key, p.text) for p in prompts] == [
        ("agent-pass", "Please enter your password followed by the pound key."),
        ("digits/5", "five"),
        ("dir-multi2", "... for ..."),
        ("letters/dot", "dot"),
    ]
    assert prompts[0].words == 9 and prompts[2].words == 1
    assert prompts[1].seconds == pytest.approx(0.5) and prompts[1].path == sounds / "digits/5.wav"
    assert missing_data(sounds, transcripts) is None


def test_transcript_errors_name_file_and_line() -> None:
    with pytest.raises(TranscriptError, match=r"t\.txt:2: expected 'key: text'"):
        parse_transcripts(["a: one", "no colon here"], "t.txt")
    with pytest.raises(TranscriptError, match=r"t\.txt:3: key 'a' appears twice"):
        parse_transcripts(["a: one", "; comment", "a: two"], "t.txt")
    assert spoken_text("at [@]") == "at" and spoken_text("[beep]") == ""


def test_missing_data_says_how_to_install(tmp_path: Path) -> None:
    reason = missing_data(tmp_path / "nope", tmp_path / "nope.txt.gz")
    assert reason is not None and "scripts/speech-data.sh" in reason and "asterisk-core-sounds-en-wav" in reason
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_prompts(tmp_path / "nope", tmp_path / "nope.txt.gz")
    assert len(ISOLATED_NUMBERS) == 28


def test_read_wav_resamples_to_8k(tmp_path: Path) -> None:
    _write_wav(tmp_path / "a.wav", 1.0, rate=16000)
    pcm = read_wav(tmp_path / "a.wav")
    assert pcm.dtype == np.int16 and abs(len(pcm) - 8000) <= 2


# -- the report ---------------------------------------------------------------------------------------------


def test_table_aligns_columns() -> None:
    lines = table(["name", "value"], [["a", "1"], ["longer", "22"]]).splitlines()
    assert lines == ["name    value", "------  -----", "a           1", "longer     22"]


# -- a real quick run, end to end ---------------------------------------------------------------------------


def _check_wer(part: dict[str, Any], low: float = 0.0, high: float = 3.0) -> None:
    assert part["reference_tokens"] > 0
    assert low <= part["wer"] <= high
    assert part["substitutions"] + part["deletions"] + part["insertions"] >= 0


def test_quick_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The real bench: piper caller, real recognizer, pool of worker processes, Asterisk data if installed."""
    out = tmp_path / "bench.json"
    assert main(["bench", "speech", "--quick", "--json", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    printed = capsys.readouterr().out
    assert "(a) In-domain callers" in printed and "(c) Performance" in printed

    assert report["meta"]["quick"] is True and report["meta"]["repeat"] == 1
    assert set(report) == {"meta", "in_domain", "asterisk", "performance"}

    part = report["in_domain"]
    assert [c["condition"] for c in part["conditions"]] == ["clean", "snr20", "snr10", "snr5"]
    clean, *noisy = part["conditions"]
    assert clean["utterances"] == part["utterances"] >= 3
    _check_wer(clean["wer"], high=0.6)  # clean piper speech on the domain LM: measured ~0.12
    assert clean["finals"] >= clean["utterances"] - 1 and clean["spurious"] == 0
    assert clean["intent_accuracy"] >= 0.5 and clean["order_total"] >= 1
    assert 0 < clean["rtf"] < 1.0
    for condition, snr in zip(noisy, (20, 10, 5), strict=True):
        _check_wer(condition["wer"])
        assert condition["snr_db_measured"] == pytest.approx(snr, abs=0.5)
        assert 0.0 <= condition["intent_accuracy"] <= 1.0
    assert noisy[-1]["wer"]["wer"] >= clean["wer"]["wer"]  # 5 dB is never better than clean
    assert part["intent_text_ceiling"] == 1.0

    asterisk = report["asterisk"]
    if asterisk["available"]:
        assert asterisk["prompts"] >= 1
        for setup in ("generic", "domain"):
            _check_wer(asterisk["setups"][setup], high=5.0)
        numbers = asterisk["isolated_numbers"]
        assert numbers["domain"]["total"] >= 1 and 0.0 <= numbers["domain"]["exact"] <= 1.0
        assert numbers["grammar"]["available"] or "grammar" in numbers["grammar"]["note"]
    else:
        assert "scripts/speech-data.sh" in asterisk["skipped"]

    perf = report["performance"]
    cpu = perf["cpu_per_frame_ms"]
    assert cpu["n"] > 100 and 0.0 < cpu["mean"] < 20.0 and cpu["mean"] <= cpu["p99"] <= cpu["max"]
    latency = perf["final_latency_ms"]
    assert latency["n"] >= 1 and 0.0 <= latency["median"] < 2000.0
    memory = perf["memory"]
    assert memory["calls"] == 3 and 0.0 < memory["per_speaking_call_mib"] < 80.0
    assert -1.0 < memory["per_call_mib"] <= memory["per_speaking_call_mib"] + 1.0
    espeak = perf["tts"]["espeak"]
    assert espeak["available"] and 0.0 < espeak["first_audio_ms"]["median"] < 500.0
    assert perf["tts"]["piper"]["available"] or perf["tts"]["piper"]["note"]

    assert render(report).splitlines()[0].startswith("voxcart bench speech: quick run")


def test_bad_repeat_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "speech", "--repeat", "0"]) == 2
    assert "--repeat 0: expected 1..10" in capsys.readouterr().err

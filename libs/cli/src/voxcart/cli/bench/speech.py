"""``voxcart bench speech``: how well, how fast and how cheaply voxcart hears and speaks on a phone line.

Three parts (see :mod:`voxcart.cli.bench` for what each number means):

(a) **in-domain callers**: :mod:`~voxcart.cli.bench.corpus` sentences spoken by the simulated caller's piper
    voice at varied speeds, through the 8 kHz μ-law path, grouped into calls, decoded by the production
    recognizer on the demo store's domain LM; clean, and with :mod:`~voxcart.cli.bench.noise` at 20, 10, 5 dB.
    WER, intent accuracy (the brain's classifier on the transcript), order-number exact match.
(b) **real recorded speech**: Debian's Asterisk prompts (:mod:`~voxcart.cli.bench.asterisk`) with the generic
    and the domain setup, plus isolated numbers; skipped with a message when the data is not installed.
(c) **performance**: CPU per 20 ms frame and end-of-speech to final latency (from the clean calls), memory
    per call (in a fresh worker process), TTS time to first audio.

Invariants: the clean calls and the TTS timing run first, alone, in this process (the bench's own work never
competes with them; other load on the machine is recorded as the load average); only then do the memory
measurement, the noisy calls and the recorded prompts run on a pool of ``workers`` spawned processes
(progress on stderr), the memory task first, so it gets a fresh process.
The result is a JSON-able dict (:func:`run_speech_bench`); the table is rendered from it
(:func:`voxcart.cli.bench.report.render`), so both always agree.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import platform
import sys
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import msgspec
import numpy as np
import numpy.typing as npt

from voxcart.brain.language import sample_utterances, vocabulary
from voxcart.brain.numbers import longest_digit_run
from voxcart.brain.store import DEMO_TODAY, FixedClock, SqliteStore, demo_seed_path
from voxcart.cli.caller_voice import synthesize_caller
from voxcart.common.audio import pcm16_to_ulaw, ulaw_to_pcm16
from voxcart.common.seed import load_seed
from voxcart.common.settings import Settings
from voxcart.stt.recognizer import RecognizerModel

from .asterisk import SOUNDS_DIR, TRANSCRIPTS, AsteriskPrompt, find_prompts, missing_data
from .calls import CallAudio, compose_call, noisy_call
from .corpus import BenchSentence, in_domain_sentences, in_samples, quick_subset
from .decoding import (
    CallResult,
    CallTask,
    PromptResult,
    PromptTask,
    decode_call,
    init_worker,
    numbers_grammar,
    recognizer_min_confidence,
    run_call_task,
    run_memory_task,
    run_prompt_task,
)
from .intent import IntentJudge
from .noise import BABBLE_TALKERS, BABBLE_WARPS, NOISE_MIX, measured_snr
from .perf import AGENT_PROMPTS, piper_first_audio, summary, tts_first_audio
from .recorded import asterisk_report, asterisk_sets, prompt_tasks
from .report import render
from .wer import WordErrors, canonical_tokens, word_errors

__all__ = ["SNRS_DB", "SpeechBenchOptions", "main", "run_speech_bench"]

Int16Array = npt.NDArray[np.int16]

SNRS_DB: Final = (20, 10, 5)
SPEEDS: Final = (1.0, 0.9, 1.15, 1.05, 0.85, 1.25)
"""Caller speaking rates, cycled over the sentences (and shifted by one for each ``--repeat``)."""
VARIATION: Final = 0.8
"""Piper's randomness for renditions after the first (the first is deterministic)."""
CALL_SENTENCES: Final = 8


def _default_end_silence_ms() -> int:
    """The stt worker's default end-of-speech silence (``STT_END_SILENCE_MS``)."""
    for f in msgspec.structs.fields(Settings):
        if f.name == "stt_end_silence_ms" and isinstance(f.default, int):
            return f.default
    return 600


@dataclass
class SpeechBenchOptions:
    """What to run.

    Attributes:
        quick: a small subset of everything (a few sentences, prompts and calls), for tests.
        repeat: renditions of each in-domain sentence (at other speeds, with piper's variation after the first).
        json_path: also write the result here.
        sounds_dir: the Asterisk prompts.
        transcripts: the Asterisk transcript file.
        workers: processes for the noisy calls and the recorded prompts.
        progress: where progress lines go (None: nowhere).
    """

    quick: bool = False
    repeat: int = 1
    json_path: Path | None = None
    sounds_dir: Path = SOUNDS_DIR
    transcripts: Path = TRANSCRIPTS
    workers: int = field(default_factory=lambda: max(1, min(2, os.cpu_count() or 1)))
    progress: TextIO | None = field(default_factory=lambda: sys.stderr)

    def __post_init__(self) -> None:
        if not 1 <= self.repeat <= 10:
            raise ValueError(f"--repeat {self.repeat}: expected 1..10")
        if self.workers < 1:
            raise ValueError(f"workers {self.workers}: expected at least 1")


@dataclass(frozen=True)
class _Rendition:
    sentence: BenchSentence
    speed: float
    pcm: Int16Array


class _Progress:
    def __init__(self, out: TextIO | None) -> None:
        self.out = out
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.out is not None:
            print(f"[{time.perf_counter() - self.started:6.1f} s] {message}", file=self.out, flush=True)


# -- (a) in-domain ------------------------------------------------------------------------------------------


def _synthesize(sentences: Sequence[BenchSentence], repeat: int, say: _Progress) -> list[_Rendition]:
    out: list[_Rendition] = []
    for r in range(repeat):
        for i, sentence in enumerate(sentences):
            speed = SPEEDS[(i + r) % len(SPEEDS)]
            ulaw = synthesize_caller(sentence.text, speed=speed, variation=0.0 if r == 0 else VARIATION)
            out.append(_Rendition(sentence, speed, ulaw_to_pcm16(ulaw)))
        say(f"synthesized {len(out)}/{len(sentences) * repeat} caller sentences (piper)")
    return out


def _calls(renditions: Sequence[_Rendition], size: int) -> list[tuple[list[_Rendition], CallAudio]]:
    groups = [list(renditions[i : i + size]) for i in range(0, len(renditions), size)]
    return [(group, compose_call([r.pcm for r in group])) for group in groups]


def _condition_report(
    name: str,
    results: Sequence[CallResult],
    calls: Sequence[tuple[list[_Rendition], CallAudio]],
    judge: IntentJudge,
    verbatim_texts: set[str],
    snr_measured: Sequence[float],
    min_confidence: float | None,
) -> dict[str, Any]:
    total, held_out, verbatim = WordErrors(), WordErrors(), WordErrors()
    by_job: dict[str, WordErrors] = {}
    intents = [0, 0, 0]  # right intent, labelled, right intent with confidence >= min_confidence
    confidences: list[float] = []
    orders = [0, 0]
    missed = merged = spurious = finals = 0
    cpu = audio = 0.0
    details: list[dict[str, Any]] = []
    for result in sorted(results, key=lambda r: r.call):
        group, _ = calls[result.call]
        finals += result.finals
        merged += result.merged
        spurious += len(result.spurious)
        cpu += result.cpu_s
        audio += result.audio_s
        for text in result.spurious:  # noise taken for speech: every word is an insertion
            total += WordErrors(insertions=len(canonical_tokens(text)))
        for k, (rendition, hyp) in enumerate(zip(group, result.texts, strict=True)):
            confidence = result.confidences[k] if k < len(result.confidences) else None
            accepted = confidence is not None and (min_confidence is None or confidence >= min_confidence)
            if confidence is not None:
                confidences.append(confidence)
            sentence = rendition.sentence
            errors = word_errors(sentence.text, hyp)
            total += errors
            phrasing = verbatim if sentence.text in verbatim_texts else held_out
            phrasing += errors
            job = by_job.setdefault(sentence.job, WordErrors())
            job += errors
            missed += not hyp
            understood = judge.understood(sentence, hyp)
            if understood is not None:
                intents[0] += understood
                intents[1] += 1
                intents[2] += understood and accepted
            order_ok = None
            if sentence.order is not None:
                order_ok = longest_digit_run(hyp, min_len=3, homophones=True) == sentence.order
                orders[0] += order_ok
                orders[1] += 1
            details.append(
                {
                    "ref": sentence.text,
                    "hyp": hyp,
                    "job": sentence.job,
                    "speed": rendition.speed,
                    "errors": errors.errors,
                    "intent_ok": understood,
                    "confidence": None if confidence is None else round(confidence, 3),
                    "order_ok": order_ok,
                }
            )
    return {
        "condition": name,
        "snr_db_measured": round(float(np.mean(snr_measured)), 2) if snr_measured else None,
        "wer": total.as_dict(),
        "wer_held_out": held_out.as_dict(),
        "wer_verbatim": verbatim.as_dict(),
        "wer_by_job": {job: e.as_dict() for job, e in sorted(by_job.items())},
        "intent_accuracy": round(intents[0] / intents[1], 4) if intents[1] else None,
        "intent_correct": intents[0],
        "intent_labelled": intents[1],
        "intent_accuracy_confident": round(intents[2] / intents[1], 4) if intents[1] else None,
        "intent_correct_confident": intents[2],
        "min_confidence": min_confidence,
        "confidence_mean": round(float(np.mean(confidences)), 4) if confidences else None,
        "order_exact": round(orders[0] / orders[1], 4) if orders[1] else None,
        "order_correct": orders[0],
        "order_total": orders[1],
        "utterances": sum(len(g) for g, _ in calls),
        "finals": finals,
        "missed": missed,
        "merged": merged,
        "spurious": spurious,
        "rtf": round(cpu / audio, 4) if audio else None,
        "sentences": details,
    }


# -- the run ------------------------------------------------------------------------------------------------


def run_speech_bench(options: SpeechBenchOptions) -> dict[str, Any]:
    """Run the bench; returns the JSON-able result (also written to ``options.json_path`` if set)."""
    say = _Progress(options.progress)
    started = time.perf_counter()
    load_start = os.getloadavg()[0]  # wall-clock numbers (latency, TTS) suffer on a busy machine; CPU ones do not
    end_silence = _default_end_silence_ms()

    seed = load_seed(demo_seed_path())
    store = SqliteStore(seed, clock=FixedClock.on(DEMO_TODAY, seed.store.timezone))
    samples, words = sample_utterances(store), vocabulary(store)
    model = RecognizerModel.build(samples, words)
    judge = IntentJudge(store)
    corpus = in_domain_sentences([o.number for o in seed.orders])
    sentences = quick_subset(corpus) if options.quick else corpus
    say(f"domain model: {len(samples)} sample sentences, {len(words)} words; {len(sentences)} test sentences")

    renditions = _synthesize(sentences, options.repeat, say)
    calls = _calls(renditions, len(renditions) if options.quick else CALL_SENTENCES)
    talkers_extra: list[Int16Array] = []
    if options.quick:  # too few sentences to make babble of others: speak a few that are not tested
        spare = [s for s in corpus if s not in sentences][:2]
        talkers_extra = [ulaw_to_pcm16(synthesize_caller(s.text)) for s in spare]

    # (a) clean + (c) CPU and latency: alone, in this process, after a warm-up call (lazy loads: VAD model)
    single = compose_call([renditions[0].pcm])
    decode_call(model, CallTask("warmup", 0, pcm16_to_ulaw(single.pcm), single.spans, end_silence))
    clean = [
        decode_call(model, CallTask("clean", n, pcm16_to_ulaw(call.pcm), call.spans, end_silence), timed=True)
        for n, (_, call) in enumerate(calls)
    ]
    say(f"clean: decoded {len(clean)} calls")
    frame_ms = [1000 * t for r in clean for t in r.frame_cpu_s]
    latency = [x for r in clean for x in r.latencies_ms]
    texts = AGENT_PROMPTS[:2] if options.quick else AGENT_PROMPTS
    tts = {"espeak": tts_first_audio(texts), "piper": piper_first_audio(texts)}
    say("tts: timed")

    # noisy calls and recorded prompts on the pool
    call_tasks: list[CallTask] = []
    snr_measured: dict[str, list[float]] = {f"snr{snr}": [] for snr in SNRS_DB}
    for n, (group, call) in enumerate(calls):
        inside = {id(r) for r in group}
        talkers = [r.pcm for r in renditions if id(r) not in inside] + talkers_extra
        for snr in SNRS_DB:
            noisy = pcm16_to_ulaw(noisy_call(call, snr, talkers, zlib.crc32(f"{n}:{snr}".encode())))
            snr_measured[f"snr{snr}"].append(measured_snr(call.pcm, ulaw_to_pcm16(noisy)))
            call_tasks.append(CallTask(f"snr{snr}", n, noisy, call.spans, end_silence))

    reason = missing_data(options.sounds_dir, options.transcripts)
    asterisk_sentences: list[AsteriskPrompt] = []
    asterisk_numbers: list[AsteriskPrompt] = []
    grammar = numbers_grammar()
    tasks: list[PromptTask] = []
    if reason is None:
        asterisk_sentences, asterisk_numbers = asterisk_sets(
            find_prompts(options.sounds_dir, options.transcripts), options.quick
        )
        tasks = prompt_tasks(asterisk_sentences, asterisk_numbers, end_silence)
    else:
        say(f"skipping recorded speech: {reason}")

    noisy_results: list[CallResult] = []
    prompt_results: dict[str, PromptResult] = {}
    total_prompts = sum(len(t.prompts) for t in tasks)
    say(f"pool of {options.workers}: {len(call_tasks)} noisy calls, {total_prompts} recorded prompts")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(options.workers, context, init_worker, (samples, words)) as pool:
        memory_calls = 3 if options.quick else 10
        memory_future = pool.submit(run_memory_task, pcm16_to_ulaw(single.pcm), memory_calls, end_silence)
        futures: dict[Future[Any], str] = {pool.submit(run_call_task, t): "call" for t in call_tasks}
        futures.update({pool.submit(run_prompt_task, t): "prompts" for t in tasks})
        for future in as_completed(futures):
            if futures[future] == "call":
                noisy_results.append(future.result())
            else:
                prompt_results.update({r.key: r for r in future.result()})
            say(
                f"noisy calls {len(noisy_results)}/{len(call_tasks)}, "
                f"recorded prompts {len(prompt_results)}/{total_prompts}"
            )
        memory = memory_future.result()
    say(f"memory: {memory['per_call_mib']:.1f} MiB per call")

    verbatim_texts = {s.text for s in sentences if in_samples(s.text, samples)}
    min_confidence = recognizer_min_confidence()
    conditions = [_condition_report("clean", clean, calls, judge, verbatim_texts, [], min_confidence)]
    for snr in SNRS_DB:
        name = f"snr{snr}"
        results = [r for r in noisy_results if r.condition == name]
        conditions.append(
            _condition_report(name, results, calls, judge, verbatim_texts, snr_measured[name], min_confidence)
        )
    labelled = [r.sentence for r in renditions if r.sentence.intent is not None]
    ceiling = sum(bool(judge.understood(s, s.text)) for s in labelled)

    report: dict[str, Any] = {
        "meta": {
            "command": "voxcart bench speech",
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "quick": options.quick,
            "repeat": options.repeat,
            "workers": options.workers,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "end_silence_ms": end_silence,
            "elapsed_s": 0.0,
            "load_start": load_start,
            "load_end": os.getloadavg()[0],
        },
        "in_domain": {
            "voice": "piper en_US-joe-medium (the simulated caller), 8 kHz μ-law",
            "language_model": f"domain LM from the demo store: {len(samples)} sample sentences, {len(words)} words",
            "sentences": len(sentences),
            "utterances": len(renditions),
            "held_out": len(sentences) - len(verbatim_texts),
            "verbatim": len(verbatim_texts),
            "speeds": sorted({r.speed for r in renditions}),
            "noise": {
                "mix": NOISE_MIX,
                "snr_db": list(SNRS_DB),
                "band_hz": [200, 3800],
                "babble_talkers": BABBLE_TALKERS,
                "babble_warps": list(BABBLE_WARPS),
            },
            "intent_text_ceiling": round(ceiling / len(labelled), 4) if labelled else None,
            "min_confidence": min_confidence,
            "conditions": conditions,
        },
        "asterisk": (
            asterisk_report(asterisk_sentences, asterisk_numbers, prompt_results, grammar)
            if reason is None
            else {"available": False, "skipped": reason}
        ),
        "performance": {
            "cpu_per_frame_ms": summary(frame_ms, over=20.0),
            "final_latency_ms": summary(latency),
            "memory": memory,
            "tts": tts,
        },
    }
    report["meta"]["elapsed_s"] = round(time.perf_counter() - started, 1)
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def main(json_path: str | None, *, quick: bool, repeat: int, out: TextIO = sys.stdout) -> int:
    """The CLI entry (``voxcart bench speech``): run, print the table, write the JSON; returns the exit code."""
    try:
        options = SpeechBenchOptions(quick=quick, repeat=repeat, json_path=Path(json_path) if json_path else None)
    except ValueError as exc:
        print(f"voxcart bench speech: {exc}", file=sys.stderr)
        return 2
    report = run_speech_bench(options)
    print(render(report), file=out)
    if options.json_path is not None:
        print(f"JSON written to {options.json_path}", file=out)
    return 0

"""Part (b) of ``voxcart bench speech``: Debian's Asterisk prompts, decoded with the generic and the domain setup,
and the isolated numbers (see :mod:`voxcart.cli.bench.speech`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from .asterisk import ISOLATED_NUMBERS, AsteriskPrompt
from .decoding import PromptResult, PromptTask
from .wer import WordErrors, canonical_tokens, word_errors

__all__ = ["PROMPTS_PER_TASK", "asterisk_report", "asterisk_sets", "prompt_tasks"]

PROMPTS_PER_TASK: Final = 12


def asterisk_sets(prompts: Sequence[AsteriskPrompt], quick: bool) -> tuple[list[AsteriskPrompt], list[AsteriskPrompt]]:
    sentences = [p for p in prompts if p.words >= 2 and not p.key.startswith(("letters/", "digits/"))]
    numbers = [p for p in prompts if p.key in ISOLATED_NUMBERS]
    if quick:
        sentences = sorted((p for p in sentences if p.words >= 3), key=lambda p: (p.seconds, p.key))[:2]
        numbers = [p for p in numbers if p.key in ("digits/7", "digits/40")]
    return sentences, numbers


def prompt_tasks(
    sentences: Sequence[AsteriskPrompt], numbers: Sequence[AsteriskPrompt], end_silence_ms: int
) -> list[PromptTask]:
    tasks: list[PromptTask] = []
    for group, setups in ((sentences, ("generic", "domain")), (numbers, ("generic", "domain", "grammar"))):
        for i in range(0, len(group), PROMPTS_PER_TASK):
            chunk = tuple((p.key, str(p.path)) for p in group[i : i + PROMPTS_PER_TASK])
            tasks.append(PromptTask(len(tasks), chunk, setups, end_silence_ms))
    return tasks


def asterisk_report(
    sentences: Sequence[AsteriskPrompt],
    numbers: Sequence[AsteriskPrompt],
    results: dict[str, PromptResult],
    grammar: str | None,
) -> dict[str, Any]:
    setups: dict[str, dict[str, Any]] = {}
    for setup in ("generic", "domain"):
        errors = WordErrors()
        cpu = audio = 0.0
        for p in sentences:
            r = results[p.key]
            errors += word_errors(p.text, r.texts[setup])
            cpu += r.cpu_s[setup]
            audio += r.seconds
        setups[setup] = {**errors.as_dict(), "rtf": round(cpu / audio, 4) if audio else None}
    exact: dict[str, Any] = {}
    # listen("digits") exists either way: without a grammar behind it, it changes nothing
    changed = any(results[p.key].texts["grammar"] != results[p.key].texts["domain"] for p in numbers)
    for setup in ("generic", "domain", "grammar"):
        if setup == "grammar" and grammar is None and not changed:
            exact[setup] = {
                "available": False,
                "note": "the recognizer exposes no numbers grammar: listen('digits') changed no transcript",
            }
            continue
        hits = [canonical_tokens(results[p.key].texts[setup]) == canonical_tokens(p.text) for p in numbers]
        exact[setup] = {
            "available": True,
            "exact": round(sum(hits) / len(hits), 4) if hits else None,
            "correct": sum(hits),
            "total": len(hits),
        }
    if exact["grammar"]["available"]:
        exact["grammar"]["via"] = grammar or "listen('digits')"
    return {
        "available": True,
        "prompts": len(sentences),
        "minutes": round(sum(p.seconds for p in sentences) / 60, 2),
        "words": sum(p.words for p in sentences),
        "setups": setups,
        "isolated_numbers": exact,
        "prompts_detail": [
            {"key": p.key, "ref": p.text, **{s: results[p.key].texts[s] for s in ("generic", "domain")}}
            for p in sentences
        ],
        "numbers_detail": [{"key": p.key, "ref": p.text, **results[p.key].texts} for p in numbers],
    }

"""The bench's result as aligned text tables (the JSON is the result itself).

Invariants: :func:`render` reads only the result dict (what ``--json`` writes), so the table and the JSON
never disagree; a missing or unavailable part is rendered as a line saying why, never as zeros.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["render", "table"]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _ms(stats: Mapping[str, Any], key: str) -> str:
    return f"{stats[key]:.2f}" if key in stats else "-"


def _ratio(correct: int, total: int, value: float | None) -> str:
    return f"{_pct(value)} ({correct}/{total})" if total else "-"


def _in_domain(part: Mapping[str, Any]) -> list[str]:
    rows = []
    for c in part["conditions"]:
        snr = c["snr_db_measured"]
        rows.append(
            [
                c["condition"],
                "-" if snr is None else f"{snr:.1f} dB",
                _pct(c["wer"]["wer"]),
                _pct(c["wer_held_out"]["wer"]),
                _pct(c["wer_verbatim"]["wer"]),
                _ratio(c["intent_correct"], c["intent_labelled"], c["intent_accuracy"]),
                _pct(c.get("intent_accuracy_confident")),
                _ratio(c["order_correct"], c["order_total"], c["order_exact"]),
                f"{c['finals']}/{c['utterances']}",
                str(c["missed"]),
                str(c["merged"]),
                str(c["spurious"]),
                "-" if c["rtf"] is None else f"{c['rtf']:.3f}",
            ]
        )
    headers = ["condition", "SNR", "WER", "held-out", "verbatim", "intent", "confident", "order no.", "finals"]
    headers += ["missed"]
    headers += ["merged", "spurious", "RTF"]
    return [
        f"(a) In-domain callers: {part['voice']}; {part['language_model']}",
        f"    {part['utterances']} utterances of {part['sentences']} sentences ({part['held_out']} held-out phrasings, "
        f"{part['verbatim']} verbatim), speeds {', '.join(f'{s:g}' for s in part['speeds'])}; noise "
        + ", ".join(f"{k} {100 * v:.0f} %" for k, v in part["noise"]["mix"].items())
        + _babble(part["noise"])
        + f"; intent on the reference text itself: {_pct(part['intent_text_ceiling'])}",
        "    intent: the brain's classifier on the transcript; confident: right intent and the final's confidence "
        f"at least the recognizer's MIN_CONFIDENCE ({part.get('min_confidence')})",
        "",
        table(headers, rows),
    ]


def _babble(noise: Mapping[str, Any]) -> str:
    """How the babble was made (older reports have no warps: the caller's own voice)."""
    talkers = noise.get("babble_talkers")
    if not talkers:
        return ""
    warps = noise.get("babble_warps")
    voices = (
        f"the caller's voice warped to other speakers (x{min(warps):g}-{max(warps):g})"
        if warps
        else "the caller's voice"
    )
    return f" (babble: {talkers} talkers, {voices})"


def _asterisk(part: Mapping[str, Any]) -> list[str]:
    if not part.get("available"):
        return [f"(b) Real recorded speech: skipped: {part.get('skipped', 'not available')}"]
    rows = [
        [name, _pct(s["wer"]), str(s["reference_tokens"]), "-" if s["rtf"] is None else f"{s['rtf']:.3f}"]
        for name, s in (
            ("generic (en-us LM + full dictionary)", part["setups"]["generic"]),
            ("domain (demo store LM)", part["setups"]["domain"]),
        )
    ]
    numbers: list[list[str]] = []
    notes: list[str] = []
    for name, key in (("generic", "generic"), ("domain", "domain"), ("numbers grammar", "grammar")):
        n = part["isolated_numbers"][key]
        if n["available"]:
            numbers.append([name, _ratio(n["correct"], n["total"], n["exact"])])
        else:
            notes.append(f"isolated numbers, {name}: not measured: {n['note']}")
    return [
        f"(b) Real recorded speech: Asterisk core sounds, {part['prompts']} prompts of 2+ words, "
        f"{part['minutes']:.1f} min, {part['words']} words",
        "",
        table(["setup", "WER", "ref tokens", "RTF"], rows),
        "",
        table(["isolated numbers (0-20, 30..90)", "exact"], numbers),
        *notes,
    ]


def _performance(part: Mapping[str, Any]) -> list[str]:
    cpu, lat, mem = part["cpu_per_frame_ms"], part["final_latency_ms"], part["memory"]
    rows = [
        ["CPU per 20 ms frame (domain decoder)", f"mean {_ms(cpu, 'mean')} ms", f"p99 {_ms(cpu, 'p99')} ms",
         f"max {_ms(cpu, 'max')} ms, {cpu.get('over', 0)}/{cpu['n']} over 20 ms"],
        ["end of speech -> final transcript", f"median {_ms(lat, 'median')} ms", f"p95 {_ms(lat, 'p95')} ms",
         f"n={lat['n']}"],
        ["memory per open call, between utterances", f"{mem['per_call_mib']:.1f} MiB",
         f"first call {mem['first_call_mib']:.1f} MiB", f"N={mem['calls']}"],
        ["memory per call, all speaking at once", f"{mem['per_speaking_call_mib']:.1f} MiB", "",
         f"N={mem['calls']}"],
    ]  # fmt: skip
    notes: list[str] = []
    for engine in ("espeak", "piper"):
        t = part["tts"][engine]
        if t.get("available"):
            first = t["first_audio_ms"]
            rows.append(
                [f"TTS time to first audio ({t['engine']})", f"median {_ms(first, 'median')} ms",
                 f"p95 {_ms(first, 'p95')} ms", f"RTF {t['rtf']['median']:.3f}"]
            )  # fmt: skip
        else:
            notes.append(f"TTS time to first audio ({t['engine']}): not measured: {t['note']}")
    return ["(c) Performance", "", table(["measure", "", "", ""], rows), *notes]


def render(report: Mapping[str, Any]) -> str:
    """The whole result as text: a header line, then parts (a), (b), (c)."""
    meta = report["meta"]
    head = (
        f"voxcart bench speech: {'quick' if meta['quick'] else 'full'} run, repeat {meta['repeat']}, "
        f"{meta['workers']} workers on {meta['cpus']} CPUs, {meta['elapsed_s']:.0f} s; "
        f"load average {meta['load_start']:.1f} at start, {meta['load_end']:.1f} at end"
    )
    lines = [head, ""]
    lines += _in_domain(report["in_domain"])
    lines += [""] + _asterisk(report["asterisk"])
    lines += [""] + _performance(report["performance"])
    return "\n".join(lines)

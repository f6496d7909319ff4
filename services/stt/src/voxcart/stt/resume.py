"""The ``resume`` string: the recognizer state a checkpoint is saved with.

A :class:`~voxcart.stt.recognizer.CallRecognizer` replaying the entries after a checkpoint needs, besides the
entry, the state its next utterance starts from: the cepstral mean (CMN) carried from the call's previous final,
and the expectation in force (with its keyterms). :func:`encode_resume` writes them as one string,
:func:`decode_resume` reads it back.

Invariants:
- :attr:`CallRecognizer.resume <voxcart.stt.recognizer.CallRecognizer.resume>` encodes the CMN and the
  expectation (with its keyterms) that the next utterance will start with (:func:`encode_resume`); every
  :class:`~voxcart.stt.results.Final`/:class:`~voxcart.stt.results.Discarded` carries it as ``resume``. Hence
  ``CallRecognizer(start_after=checkpoint_entry, resume=resume)`` fed the entries after a checkpoint emits the
  same utterance ids and finals as the recognizer that produced it, provided ``resume`` was read at the same
  moment as the checkpoint (a final's own ``resume``, or ``resume`` right after ``checkpoint()``) and any
  ``listen`` the original applied after that moment is applied again in the same place (the worker stores the
  latest ``listen`` with each checkpoint and re-applies it on takeover). Without ``resume`` the ids still match.
- ``decode_resume(encode_resume(cmn, expect, keyterms)) == (cmn, expect, tuple(keyterms))``; a bare cepstral
  mean (what earlier versions saved) decodes as ``(cmn, "free", ())``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final as Constant
from typing import get_args

from voxcart.common.events import Expect

__all__ = ["EXPECTS", "decode_resume", "encode_resume"]

EXPECTS: Constant = frozenset(get_args(Expect))
"""Every expectation a recognizer can listen with (``"free"``, ``"digits"``, ``"yes_no"``, ``"product"``)."""


def encode_resume(cmn: str, expect: Expect = "free", keyterms: Sequence[str] = ()) -> str:
    """The ``resume`` string saved with a checkpoint: CMN, and the expectation the next utterance starts with.

    It is JSON (``{"v":1,"cmn":"48.06,...","expect":"digits","keyterms":[]}``); :func:`decode_resume` also
    accepts a bare cepstral mean (what earlier versions saved).
    """
    return json.dumps({"v": 1, "cmn": cmn, "expect": expect, "keyterms": list(keyterms)}, separators=(",", ":"))


def decode_resume(resume: str) -> tuple[str, Expect, tuple[str, ...]]:
    """``(cmn, expect, keyterms)`` from :func:`encode_resume`'s string (or a bare cepstral mean).

    Raises:
        ValueError: the string is neither, or names an unknown expectation.
    """
    if not resume.lstrip().startswith("{"):
        if not resume.strip():
            raise ValueError("resume: empty string")
        return resume.strip(), "free", ()
    try:
        state = json.loads(resume)
        cmn, expect, keyterms = str(state["cmn"]), state.get("expect", "free"), state.get("keyterms", [])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"resume: not a recognizer state ({exc}): {resume[:80]!r}") from None
    if expect not in EXPECTS:
        raise ValueError(f"resume: unknown expectation {expect!r}, expected one of {sorted(EXPECTS)}")
    return cmn, expect, tuple(str(k) for k in keyterms)

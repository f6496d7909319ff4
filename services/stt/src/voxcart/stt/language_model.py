"""The domain language model and pronunciation dictionary, built at worker start from sample caller sentences.

PocketSphinx's generic trigram LM and full 134k-word dictionary cost ~95 MB per decoder and recognize telephone
speech poorly (speech.md: 25 % WER against 4.5 % with a domain LM). This module turns the caller sentences the
brain expects into a small trigram LM (``pocketsphinx.lm.ArpaBoLM``) and a dictionary holding only their words
(plus dictionary-only words: the grammars'). :class:`ArpaScorer` scores word sequences under that LM, for the
recognizer's confidence.

Built from the brain's store language (464 samples for the demo store: templated requests, phrasings,
contracted forms), piper caller speech through the 8 kHz μ-law path: 10.1 % WER on 70 tuning sentences,
9.6 % on the other test store, 16.7 % / 7.8 % on 40 fresh sentences of the two stores (words outside the
store's language, "because", "never showed up", are replaced by in-domain ones); intent right 98 %.
With the brain's combinatorial phrasings and conversation backbone (1176 samples, 1726 corpus sentences,
507 dictionary words, 6,973 ARPA lines / 166 KB against 3,917 / 94 KB; built in ~0.1 s), ``voxcart bench
speech`` clean: 12.3 % WER on held-out phrasings (was 21.2 %), 3.3 % on verbatim ones (4.3 %). The back-off
discount (``ArpaBoLM``'s ``discount_mass``, 0.5) was swept over 0.2-0.8: no value was better beyond noise.

Invariants:
- Text is normalized the same way for the LM corpus and for anything compared with the recognizer's output
  (:func:`normalize_words`): lower case, digits spelled out, punctuation dropped.
- Every word in the LM has a pronunciation in the dictionary: from the caller's ``pronunciations``,
  :data:`EXTRA_PRONUNCIATIONS`, the wheel's cmudict, or else espeak-ng's letter-to-sound rules
  (:mod:`voxcart.stt.g2p`: "zorbex" -> ``Z AO R B EH K S``); words of up to 4 letters also get their letters
  (``xl``, ``eta``: said as acronyms). Words with none are dropped from the corpus with one log line.
- The corpus holds each sample as given plus, where it has one, its contracted form ("where is my order" and
  "where's my order"): callers contract, the brain's samples are written out, and cmudict has the contracted
  words as words of their own.
- Digit strings cover every ordered run of three digits (:data:`DIGIT_ORDER`), with zero said both "zero" and
  "oh".
- Building is deterministic: the same sentences give byte-identical LM and dictionary text.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pocketsphinx
from pocketsphinx.lm import ArpaBoLM

from voxcart.stt.g2p import G2PError, espeak_pronunciations

__all__ = [
    "CONTRACTIONS",
    "DIGIT_WORDS",
    "EXTRA_PRONUNCIATIONS",
    "ArpaScorer",
    "DomainLanguageModel",
    "build_domain_lm",
    "contracted",
    "normalize_words",
]

log = logging.getLogger("voxcart.stt.language_model")

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
"""Spoken digits, indexed by value."""

_TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")

EXTRA_PRONUNCIATIONS: Mapping[str, tuple[str, ...]] = {
    "hoodie": ("HH UH D IY",),
    "hoodies": ("HH UH D IY Z",),
    "beanie": ("B IY N IY",),
    "beanies": ("B IY N IY Z",),
    "chinos": ("CH IY N OW Z",),
    "onesie": ("W AH N Z IY",),
    "crewneck": ("K R UW N EH K",),
    "voxcart": ("V AA K S K AA R T",),
    "forty": ("F AO R T IY", "F AO R D IY"),
    "eighty": ("EY T IY", "EY D IY"),
}
"""Shop words missing from the wheel's cmudict (ARPAbet, as the en-us acoustic model expects), and the flapped
American "t" of "forty" and "eighty" ("fordy", "eidy"; cmudict has it for "thirty" only): without it a recorded
"forty" and "eighty" decode as "fourteen" and "eighteen"."""

_LETTERS = dict(
    zip(
        "abcdefghijklmnopqrstuvwxyz",
        "EY|B IY|S IY|D IY|IY|EH F|JH IY|EY CH|AY|JH EY|K EY|EH L|EH M|EH N|OW|P IY|K Y UW|AA R|EH S|T IY|Y UW|V IY|"
        "D AH B AH L Y UW|EH K S|W AY|Z IY".split("|"),
        strict=True,
    )
)
"""Letter names, for spelling out short unknown words (``xl``, ``xxl``, ``eta``) as the acronyms they are."""

CONTRACTIONS: Mapping[tuple[str, str], str] = {
    ("where", "is"): "where's", ("what", "is"): "what's", ("that", "is"): "that's", ("it", "is"): "it's",
    ("there", "is"): "there's", ("i", "am"): "i'm", ("i", "would"): "i'd", ("i", "will"): "i'll",
    ("i", "have"): "i've", ("you", "are"): "you're", ("do", "not"): "don't", ("does", "not"): "doesn't",
    ("did", "not"): "didn't", ("have", "not"): "haven't", ("has", "not"): "hasn't", ("can", "not"): "can't",
    ("is", "not"): "isn't", ("let", "us"): "let's",
}  # fmt: skip
"""Written-out word pairs and the contraction callers say instead (all of them cmudict words)."""

_TOKEN = re.compile(r"[a-z]+(?:['-][a-z]+)*|\d+")


def _number_words(digits: str) -> list[str]:
    """Speak a digit run the way callers do: 0-99 as a number, longer runs (order numbers) digit by digit."""
    if len(digits) > 2 or (len(digits) == 2 and digits[0] == "0"):
        return [DIGIT_WORDS[int(d)] for d in digits]
    n = int(digits)
    if n < 10:
        return [DIGIT_WORDS[n]]
    if n < 19:
        return [_TEENS[n - 10]]
    if n == 19:
        return ["nineteen"]
    tens, ones = divmod(n, 10)
    return [_TENS[tens]] + ([DIGIT_WORDS[ones]] if ones else [])


def normalize_words(text: str) -> list[str]:
    """Lower-case words of ``text`` as the recognizer spells them: digits spelled out, punctuation dropped.

    ``"Order #12345, size 10!"`` gives ``["order", "one", "two", "three", "four", "five", "size", "ten"]``.
    """
    words: list[str] = []
    for token in _TOKEN.findall(text.lower().replace("&", " and ")):
        if token.isdigit():
            words.extend(_number_words(token))
        else:
            words.append(token)
    return words


def contracted(words: list[str]) -> list[str]:
    """``words`` with every pair of :data:`CONTRACTIONS` contracted ("where is my order" -> "where's my order")."""
    out: list[str] = []
    i = 0
    while i < len(words):
        pair = CONTRACTIONS.get((words[i], words[i + 1])) if i + 1 < len(words) else None
        out.append(pair or words[i])
        i += 2 if pair else 1
    return out


DIGIT_ORDER = 3
"""Digit strings in the LM hold every ordered run of this many digits (a trigram LM needs 3 to have seen every
digit after every pair of digits)."""


def _de_bruijn(alphabet: int, order: int) -> list[int]:
    """A cyclic sequence over ``range(alphabet)`` holding every run of ``order`` symbols once (Ruskey's
    generator), with its first ``order - 1`` symbols repeated at the end so that the runs do not wrap."""
    sequence: list[int] = []
    a = [0] * (alphabet * order + 1)

    def db(t: int, p: int) -> None:
        if t > order:
            if order % p == 0:
                sequence.extend(a[1 : p + 1])
            return
        a[t] = a[t - p]
        db(t + 1, p)
        for j in range(a[t - p] + 1, alphabet):
            a[t] = j
            db(t + 1, t)

    db(1, 1)
    return sequence + sequence[: order - 1]


def _digit_sentences(length: int = 6, order: int = DIGIT_ORDER) -> list[list[str]]:
    """Digit strings that together hold every ordered run of ``order`` digits (a de Bruijn sequence cut in
    pieces), with zero said "zero" and, in a copy of the pieces that have one, "oh".

    Order numbers, phone numbers and zip codes are any digits in any order. Without these the LM knows only the
    digit runs that happen to occur in the samples, and a digit after a digit is not much likelier than any
    word: "three one" decoded as "three want", and "order one zero zero two three" as "order wondering if you
    repeat three" (with every pair of digits the LM scored it 0.2 above the right sentence, with every triple
    0.9 below). Every pair (order 2: 25 strings of 5 digits plus their "oh" forms) against every triple
    (order 3: 250 strings of 6 digits plus 69 "oh" forms; the demo store's LM 2066 sentences, 8,286 ARPA lines
    / 190 KB instead of 1778, 7,230 / 167 KB): measured with a telephone-band folding front end since dropped,
    ``voxcart bench speech`` clean in-domain WER 10.2 % -> 9.8 %, order numbers exactly right 3 of 9 either way;
    a separate tuning set of 48 caller sentences 26.2 % -> 24.8 %.
    """
    sequence = _de_bruijn(10, order)
    step = length - (order - 1)  # consecutive pieces share order - 1 digits, so no run is lost at a cut
    pieces = [[DIGIT_WORDS[d] for d in sequence[i : i + length]] for i in range(0, len(sequence) - order + 1, step)]
    return pieces + [["oh" if w == "zero" else w for w in p] for p in pieces if "zero" in p]


def _read_cmudict(path: Path, wanted: set[str]) -> dict[str, list[str]]:
    """The pronunciations of ``wanted`` words in a cmudict file (``word`` and ``word(2)`` variants)."""
    found: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            head, _, phones = line.partition(" ")
            word = head.split("(", 1)[0]
            if word in wanted:
                found.setdefault(word, []).append(phones.strip())
    return found


def _pronounce(vocab: set[str], given: Mapping[str, Iterable[str]], cmudict_path: Path | None) -> dict[str, list[str]]:
    """Pronunciations for ``vocab``: given, :data:`EXTRA_PRONUNCIATIONS`, cmudict, then espeak-ng (+ letters)."""
    prons: dict[str, list[str]] = {w: list(p) for w, p in EXTRA_PRONUNCIATIONS.items() if w in vocab}
    for word, phones in given.items():
        key = word.lower()
        if key in vocab:
            prons[key] = [" ".join(p.upper().split()) for p in phones]
    path = cmudict_path or Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    prons.update(_read_cmudict(path, vocab - prons.keys()))
    unknown = sorted(vocab - prons.keys())
    if not unknown:
        return prons
    try:
        rules = espeak_pronunciations(unknown)
    except G2PError as exc:
        log.warning("no letter-to-sound rules (%s): words missing from cmudict get no pronunciation", exc)
        rules = {}
    for word in unknown:
        found = [rules[word]] if word in rules else []
        if len(word) <= 4 and word.isalpha() and word.isascii():
            letters = " ".join(_LETTERS[c] for c in word)  # "xl", "eta": callers spell short words out
            found += [letters] if letters not in found else []
        if found:
            prons[word] = found
            log.info("no dictionary pronunciation for %r: %s", word, " | ".join(found))
    return prons


@dataclass(frozen=True)
class DomainLanguageModel:
    """An ARPA trigram LM and the dictionary covering exactly its words.

    Attributes:
        arpa: the LM in ARPA text format.
        pronunciations: word -> its pronunciations (ARPAbet strings), for every LM word and every
            dictionary-only word (the grammars' words).
        skipped: words dropped because no pronunciation was found.
        sentences: how many corpus sentences went into the LM.
    """

    arpa: str
    pronunciations: Mapping[str, tuple[str, ...]]
    skipped: tuple[str, ...]
    sentences: int

    @property
    def words(self) -> frozenset[str]:
        """The dictionary's words (the LM's and the dictionary-only ones)."""
        return frozenset(self.pronunciations)

    def dictionary_text(self) -> str:
        """The dictionary in cmudict format (``word PHONES``, variants as ``word(2) PHONES``)."""
        lines: list[str] = []
        for word in sorted(self.pronunciations):
            for i, phones in enumerate(self.pronunciations[word]):
                lines.append(f"{word} {phones}" if i == 0 else f"{word}({i + 1}) {phones}")
        return "\n".join(lines) + "\n"

    def write(self, directory: Path) -> tuple[Path, Path]:
        """Write ``domain.lm`` (ARPA) and ``domain.dict`` into ``directory``; returns their paths."""
        lm_path, dict_path = directory / "domain.lm", directory / "domain.dict"
        lm_path.write_text(self.arpa, encoding="utf-8")
        dict_path.write_text(self.dictionary_text(), encoding="utf-8")
        return lm_path, dict_path


def build_domain_lm(
    sample_utterances: Iterable[str],
    extra_words: Iterable[str] = (),
    *,
    pronunciations: Mapping[str, Iterable[str]] | None = None,
    cmudict_path: Path | None = None,
    digit_strings: bool = True,
    dictionary_words: Iterable[str] = (),
) -> DomainLanguageModel:
    """Build the domain trigram LM and its dictionary.

    Args:
        sample_utterances: caller sentences the dialog expects ("where is my order", "size 10"); each one is
            normalized with :func:`normalize_words`.
        extra_words: words the recognizer must know even if no sample uses them (product names, colours);
            each becomes a one-word sentence of the corpus.
        pronunciations: word -> ARPAbet pronunciations overriding/adding to cmudict and
            :data:`EXTRA_PRONUNCIATIONS`.
        cmudict_path: the dictionary to look words up in; defaults to the one in the pocketsphinx wheel.
        digit_strings: add digit strings covering every run of three digits (zero as "zero" and "oh"), so
            that any order number, phone number or zip code can be recognized.
        dictionary_words: words to put in the dictionary but not in the LM (the grammars' words).

    Returns:
        The LM and dictionary.

    Raises:
        ValueError: no sample sentence contains a word with a known pronunciation.
    """
    sentences: list[list[str]] = []
    for sample in sample_utterances:
        words = normalize_words(sample)
        sentences.append(words)
        short = contracted(words)
        if short != words:
            sentences.append(short)
    sentences += [normalize_words(w) for w in extra_words]
    if digit_strings:
        sentences += _digit_sentences()
    sentences = [s for s in sentences if s]
    vocab = {w for s in sentences for w in s}
    extra = {w for phrase in dictionary_words for w in normalize_words(phrase)}
    prons = _pronounce(vocab | extra, pronunciations or {}, cmudict_path)
    skipped = tuple(sorted((vocab | extra) - prons.keys()))
    if skipped:
        log.warning("no pronunciation for %d word(s), left out of the language model: %s", len(skipped), skipped)
    known = [[w for w in s if w in prons] for s in sentences]
    known = [s for s in known if s]
    if not any(w not in DIGIT_WORDS and w != "oh" for s in known for w in s):
        raise ValueError("sample_utterances: no sentence has a word with a known pronunciation")

    lm = ArpaBoLM(text="\n".join(" ".join(s) for s in known), add_start=True)
    lm.compute()
    out = io.StringIO()
    lm.write(out)
    used = {w for s in known for w in s} | (extra & prons.keys())
    return DomainLanguageModel(
        arpa=out.getvalue(),
        pronunciations={w: tuple(prons[w]) for w in sorted(used)},
        skipped=skipped,
        sentences=len(known),
    )


class ArpaScorer:
    """Log10 probabilities of word sequences under an ARPA back-off LM (what the decoder's LM computes).

    The recognizer uses it to tell in-domain sentences from out-of-domain speech forced into in-domain words:
    "where's my order" averages about -1 per word under a store's LM, while "the weather in paris is lovely"
    decodes to "what the person what with time of your" at about -3.

    Args:
        arpa: the LM in ARPA text format.
    """

    UNKNOWN = -7.0
    """Log10 probability given to a word the LM does not have."""

    def __init__(self, arpa: str) -> None:
        self._prob: dict[tuple[str, ...], float] = {}
        self._backoff: dict[tuple[str, ...], float] = {}
        order = 0
        for line in arpa.splitlines():
            line = line.strip()
            if line.startswith("\\") and line.endswith("-grams:"):
                order = int(line[1:-7])
                continue
            parts = line.split()
            if order == 0 or len(parts) < order + 1 or line.startswith("\\"):
                continue
            gram = tuple(parts[1 : order + 1])
            self._prob[gram] = float(parts[0])
            if len(parts) > order + 1:
                self._backoff[gram] = float(parts[order + 1])
        self.order = order

    def _log10(self, context: tuple[str, ...], word: str) -> float:
        backoff = 0.0
        while True:
            probability = self._prob.get((*context, word))
            if probability is not None:
                return backoff + probability
            if not context:
                return backoff + self.UNKNOWN
            backoff += self._backoff.get(context, 0.0)
            context = context[1:]

    def log10_probs(self, words: Sequence[str]) -> list[float]:
        """The log10 probability of each word of ``words`` and of the sentence end, in its context."""
        sequence = ["<s>", *words, "</s>"]
        return [
            self._log10(tuple(sequence[max(0, i - self.order + 1) : i]), sequence[i]) for i in range(1, len(sequence))
        ]

    def seen_ending(self, words: Sequence[str]) -> bool:
        """Whether a sentence the LM was built from ended with the last ``order - 1`` words of ``words`` (``<s>``
        standing in front of a shorter ``words``): the LM holds that n-gram followed by ``</s>`` itself, not as
        a back-off estimate ("... in stock </s>" yes, "... the </s>" no)."""
        context = ("<s>", *words)[-(self.order - 1) :] if self.order > 1 else ()
        return (*context, "</s>") in self._prob

"""The narrow-expectation grammars: their text, their words, and that PocketSphinx loads and decodes with them."""

from __future__ import annotations

from pathlib import Path

import pocketsphinx
import pytest

from voxcart.stt.grammars import (
    DIGITS,
    GRAMMAR_PHRASES,
    PRODUCT,
    YES_NO,
    Catalogue,
    digits_grammar,
    grammar_words,
    jsgf_words,
    product_grammar,
    yes_no_grammar,
)
from voxcart.stt.recognizer import RecognizerModel

_CATALOGUE = Catalogue(names=("trail hoodie", "hoodie", "zorbex lantern"), colors=("blue", "sage green"),
                       sizes=("medium", "ten and a half"))  # fmt: skip
_KNOWN = frozenset("trail hoodie blue sage green medium ten and a half".split())


def test_grammar_phrases_are_dictionary_words() -> None:
    """Every fixed word of the grammars has a cmudict pronunciation (the model adds them to its dictionary)."""
    words = set(grammar_words())
    cmudict = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    with cmudict.open(encoding="utf-8") as f:
        known = {line.split(" ", 1)[0] for line in f}
    assert words - known == set()
    assert {"oh", "double", "yep", "nope", "that's", "it's", "size"} <= words


def test_digits_grammar_words() -> None:
    words = jsgf_words(digits_grammar())
    assert {"zero", "oh", "nine", "double", "triple", "ten", "ninety", "thousand", "it's", "order"} <= words
    assert not {"digits", "grammar", "public", "lead", "sequence", "carrier", "jsgf"} & words  # rule names, keywords
    assert digits_grammar().startswith(f"#JSGF V1.0;\ngrammar {DIGITS};\npublic <answer> = ")


def test_yes_no_grammar_words() -> None:
    words = jsgf_words(yes_no_grammar())
    assert {"yes", "yeah", "yep", "no", "nope", "right", "wrong", "ahead", "please"} <= words
    assert f"grammar {YES_NO};" in yes_no_grammar()


def test_product_grammar_keeps_known_phrases_only() -> None:
    jsgf = product_grammar(_CATALOGUE, _KNOWN)
    assert jsgf is not None and f"grammar {PRODUCT};" in jsgf
    assert "<name> = hoodie | trail hoodie;" in jsgf  # "zorbex lantern" has words the dictionary lacks
    assert "<color> = blue | sage green;" in jsgf and "<size> = medium | ten and a half;" in jsgf
    assert jsgf.count("<color>") == 4  # each list referenced as few times as possible: memory per decoder
    assert product_grammar(_CATALOGUE, _KNOWN) == jsgf  # deterministic
    with_keyterm = product_grammar(_CATALOGUE, _KNOWN | {"zorbex", "lantern"}, ["zorbex lantern"])
    assert with_keyterm is not None and "zorbex lantern" in with_keyterm


def test_product_grammar_without_some_lists() -> None:
    colours_only = product_grammar(Catalogue(colors=("blue",)), _KNOWN)
    assert colours_only is not None and "<name>" not in colours_only and "<size>" not in colours_only
    assert product_grammar(Catalogue(), _KNOWN) is None
    assert product_grammar(Catalogue(names=("zorbex",)), _KNOWN) is None
    assert not Catalogue() and Catalogue(sizes=("medium",))


def test_catalogue_from_mapping() -> None:
    catalogue = Catalogue.from_mapping({"names": ["hoodie"], "colors": ["blue"], "sizes": []})
    assert catalogue == Catalogue(names=("hoodie",), colors=("blue",))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['prices'\]"):
        Catalogue.from_mapping({"prices": ["1"]})
    with pytest.raises(ValueError, match="colors must be a list of strings"):
        Catalogue.from_mapping({"colors": "blue"})


def test_decoders_load_every_grammar() -> None:
    model = RecognizerModel.build(
        ["is the trail hoodie in stock", "in blue", "size medium", "size ten and a half", "where is my order"],
        catalogue=_CATALOGUE,
    )
    product = model.search_for(PRODUCT)
    assert product is not None and product.startswith(f"{PRODUCT}:")
    assert model.search_for(PRODUCT) == product and model.search_for("free") is None
    assert model.search_for(DIGITS) == DIGITS and model.search_for(YES_NO) == YES_NO
    for search in (DIGITS, YES_NO, product):
        decoder = model.new_decoder(search)
        assert decoder.current_search() == search
        assert {"please", "thanks"} <= model.vocabulary(search)
    assert {"trail", "zorbex", "lantern"} <= model.vocabulary(product)  # catalogue words join the dictionary
    with pytest.raises(KeyError):
        model.new_decoder("no such search")
    model.close()


def test_phrases_tuple_has_no_duplicates() -> None:
    assert len(GRAMMAR_PHRASES) == len(set(GRAMMAR_PHRASES))

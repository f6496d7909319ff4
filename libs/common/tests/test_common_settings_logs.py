"""Settings (environment over ``.env``, errors naming the variable) and log masking (phones, emails)."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxcart.common.logs import JsonFormatter, mask
from voxcart.common.settings import Settings, SettingsError, load_settings, read_env_file


def test_common_settings_defaults_without_env_file() -> None:
    settings = load_settings({}, env_file=None)
    assert settings.env == "development"
    assert settings.max_calls == 50
    assert settings.redis_dsn == "redis://localhost:6379/0"
    assert settings.replica_id  # generated per process


def test_common_settings_parses_strings_to_types() -> None:
    settings = load_settings({"MAX_CALLS": "7", "LEASE_TTL_MS": "900", "BRAIN_MODE": "llm"}, env_file=None)
    assert settings.max_calls == 7
    assert settings.lease_ttl_ms == 900
    assert settings.brain_mode == "llm"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_CALLS", "0"),
        ("MAX_CALLS", "many"),
        ("LEASE_TTL_MS", "10"),
        ("PORT", "70000"),
        ("LOG_LEVEL", "LOUD"),
        ("ENV", "staging"),
    ],
)
def test_common_settings_bad_value_names_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({name: value}, env_file=None)
    message = str(info.value)
    assert message.startswith(f"{name}={value!r}"), message


def test_common_settings_empty_value_means_default() -> None:
    assert load_settings({"MAX_CALLS": ""}, env_file=None).max_calls == 50


def test_common_settings_env_file_read_and_environment_wins(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(
        "# local settings\n\nexport MAX_CALLS=3\nTTS_VOICE='en-gb'\nAPI_TOKEN=\"from-file\"\nPUBLIC_URL=https://a.example\n"
    )
    settings = load_settings({"API_TOKEN": "from-env"}, env_file=env)
    assert settings.max_calls == 3
    assert settings.tts_voice == "en-gb"
    assert settings.public_url == "https://a.example"
    assert settings.api_token == "from-env"


def test_common_settings_missing_env_file_is_fine(tmp_path: Path) -> None:
    assert load_settings({}, env_file=tmp_path / "nope.env").max_calls == 50


def test_common_settings_bad_value_in_env_file_names_variable(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("MAX_CALLS=0\n")
    with pytest.raises(SettingsError, match=r"^MAX_CALLS='0'"):
        load_settings({}, env_file=env)


def test_common_settings_production_requires_twilio_token() -> None:
    with pytest.raises(SettingsError, match="TWILIO_AUTH_TOKEN"):
        load_settings({"ENV": "production"}, env_file=None)
    settings = load_settings({"ENV": "production", "TWILIO_AUTH_TOKEN": "t0k"}, env_file=None)
    assert settings.env == "production"
    assert settings.twilio_auth_token == "t0k"


def test_common_settings_production_token_from_env_file(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("TWILIO_AUTH_TOKEN=abc\n")
    assert load_settings({"ENV": "production"}, env_file=env).twilio_auth_token == "abc"


@pytest.mark.parametrize("line", ["JUST_A_WORD", "1BAD=x", "BAD KEY=x", "=value"])
def test_common_read_env_file_error_names_file_and_line(tmp_path: Path, line: str) -> None:
    env = tmp_path / "x.env"
    env.write_text(f"# comment\nGOOD=1\n{line}\n")
    with pytest.raises(SettingsError) as info:
        read_env_file(env)
    assert str(info.value).startswith(f"{env}:3:"), str(info.value)
    assert repr(line) in str(info.value)


def test_common_read_env_file_values(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("A=1\nB = 'two words'\nC=\"x=y\"\nD=\nexport E=5\n  # indented comment\n")
    assert read_env_file(env) == {"A": "1", "B": "two words", "C": "x=y", "D": "", "E": "5"}


# -- masking -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("caller +15555550123 rang", "+15555550123"),
        ("uk +44 20 7946 0958 called", "+44 20 7946 0958"),
        ("us (555) 555-0123 called", "(555) 555-0123"),
    ],
)
def test_common_mask_phone_numbers(text: str, secret: str) -> None:
    masked = mask(text)
    assert secret not in masked
    digits = "".join(c for c in secret if c.isdigit())
    assert digits[-2:] in masked  # last two digits kept
    assert digits[:-2] not in masked.replace(" ", "")
    assert masked.startswith(text.split()[0] + " ")


def test_common_mask_e164_keeps_plus_and_length() -> None:
    assert mask("+15555550123") == "+" + "*" * 9 + "23"


def test_common_mask_email() -> None:
    masked = mask("write to jane.doe@example.com please")
    assert "jane.doe" not in masked
    assert masked == "write to j***@example.com please"


@pytest.mark.parametrize(
    "text",
    ["placed 2024-11-20", "order 10023", "order #100234", "at 12:30 on 20/11/2024", "turn 3 of call CA1234567890"],
)
def test_common_mask_leaves_dates_and_order_numbers(text: str) -> None:
    assert mask(text) == text


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("voxcart.test", logging.INFO, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_common_json_formatter_masks_message_and_extras() -> None:
    record = _record("call from %s", "+15555550123", caller="+15555550124", email="bob@shop.example", turn=3)
    out = json.loads(JsonFormatter().format(record))
    assert out["level"] == "info"
    assert out["logger"] == "voxcart.test"
    assert out["msg"] == "call from +" + "*" * 9 + "23"
    assert out["caller"] == "+" + "*" * 9 + "24"
    assert out["email"] == "b***@shop.example"
    assert out["turn"] == 3
    assert "5555550124" not in json.dumps(out)


def test_common_json_formatter_masks_exception_text() -> None:
    try:
        raise ValueError("no customer for +15555550125")
    except ValueError:
        record = logging.LogRecord("voxcart.test", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    out = json.loads(JsonFormatter().format(record))
    assert "ValueError" in out["exc"]
    assert "5555550125" not in out["exc"]


# -- generated bad values ------------------------------------------------------------------------------------

_INFO = msgspec.inspect.type_info(Settings)
assert isinstance(_INFO, msgspec.inspect.StructType)
_CHECKED = [f for f in _INFO.fields if not isinstance(f.type, msgspec.inspect.StrType)]
"""Every setting whose value is more than a string: a Literal, a bool, or a bounded number."""


def _bad_values(field: msgspec.inspect.Field) -> st.SearchStrategy[str]:
    junk = st.one_of(
        st.text(st.sampled_from(list("abz -+.,_/xé²\t")), min_size=1, max_size=12).filter(lambda v: v.strip() != ""),
        st.sampled_from(["nan", "inf", "-inf", "1e400", "0x10", "1_0", "true", "[]", "{}", "null", "9" * 5000]),
    )
    kind = field.type
    if isinstance(kind, msgspec.inspect.LiteralType):
        return junk.filter(lambda v: v not in kind.values)
    if isinstance(kind, msgspec.inspect.BoolType):  # msgspec reads true/false/1/0, in any case
        return junk.filter(lambda v: v.lower() not in ("true", "false", "1", "0"))
    if isinstance(kind, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        out_of_range: list[st.SearchStrategy[str]] = []
        low = kind.ge if kind.ge is not None else kind.gt
        high = kind.le if kind.le is not None else kind.lt
        if low is not None:
            out_of_range.append(st.integers(-(10**12), int(low) - 1).map(str))
        if high is not None:
            out_of_range.append(st.integers(int(high) + 1, 10**12).map(str))
        bad = st.one_of(junk.filter(lambda v: not _is_number(v)), *out_of_range)
        return bad
    raise AssertionError(f"a setting of an unexpected type: {field.encode_name}: {kind}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("field", _CHECKED, ids=[f.encode_name for f in _CHECKED])
def test_common_settings_every_bad_value_names_its_variable(field: msgspec.inspect.Field) -> None:
    @settings(derandomize=True, database=None, deadline=None, max_examples=60)
    @given(value=_bad_values(field))
    def check(value: str) -> None:
        with pytest.raises(SettingsError) as info:
            load_settings({field.encode_name: value}, env_file=None)
        assert str(info.value).startswith(f"{field.encode_name}={value!r}: "), str(info.value)

    check()


@pytest.mark.parametrize(
    "url", ["gw.example.com", "ftp://gw.example.com", "https://gw.example.com/?a=1", "https://:80"]
)
def test_common_settings_malformed_public_url_is_refused(url: str) -> None:
    with pytest.raises(SettingsError, match=rf"^PUBLIC_URL={re.escape(repr(url))}: expected https://host"):
        load_settings({"PUBLIC_URL": url}, env_file=None)
    assert load_settings({"PUBLIC_URL": "https://gw.example.com/voice"}, env_file=None).public_url

"""Media tokens: bound to one CallSid, the same on every replica sharing the secret, never the auth token itself."""

from __future__ import annotations

import logging

import pytest

from voxcart.common.settings import load_settings
from voxcart.gateway.media_token import MediaTokens

SID, OTHER = "CA" + "1" * 32, "CA" + "2" * 32


def tokens(**env: str) -> MediaTokens:
    return MediaTokens.from_settings(load_settings(env, env_file=None))


def test_gw_media_token_binds_the_call() -> None:
    t = tokens(MEDIA_TOKEN_SECRET="s3cret")
    token = t.issue(SID)
    assert len(token) == 32 and token != t.issue(OTHER)
    assert t.refusal(SID, token) is None
    assert t.refusal(OTHER, token) == "mismatch"
    assert t.refusal(SID, None) == t.refusal(SID, "") == "missing"
    assert t.refusal(SID, token.upper()) == "mismatch"
    assert t.refusal(SID, "é" * 32) == "mismatch"


def test_gw_media_token_secrets() -> None:
    same_secret = tokens(MEDIA_TOKEN_SECRET="s3cret", TWILIO_AUTH_TOKEN="a").issue(SID)
    assert same_secret == tokens(MEDIA_TOKEN_SECRET="s3cret").issue(SID)  # every replica agrees
    derived = tokens(TWILIO_AUTH_TOKEN="auth-token").issue(SID)
    assert derived == tokens(TWILIO_AUTH_TOKEN="auth-token").issue(SID) != same_secret
    assert derived != tokens(MEDIA_TOKEN_SECRET="auth-token").issue(SID)  # derived, not the auth token itself
    with pytest.raises(ValueError, match="at least 16 bytes"):
        MediaTokens(b"short")


def test_gw_media_token_without_any_secret_is_per_process(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="voxcart.gateway.media_token"):
        first, second = tokens(), tokens()
    assert first.issue(SID) != second.issue(SID)
    assert "secret of this process only" in caplog.text

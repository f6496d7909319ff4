"""X-Twilio-Signature: twilio-python's own test vectors, hand-computed HMACs, and a real Starlette request."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlencode

import httpx
import pytest
from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from voxcart.gateway.twilio.signature import (
    SignatureError,
    body_sha256,
    compute_signature,
    parse_form,
    public_url,
    public_ws_url,
    validate_signature,
    verify_signature,
)

# Vectors from twilio-python tests/unit/test_request_validator.py (auth token "12345").
TOKEN = "12345"
URI = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}
EXPECTED = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
BODY = '{"property": "value", "boolean": true}'
BODY_HASH = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"


def hand_signature(token: str, data: str) -> str:
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def test_gw_sdk_vector_compute_and_validate() -> None:
    assert compute_signature(TOKEN, URI, PARAMS) == EXPECTED
    assert validate_signature(TOKEN, URI, PARAMS, EXPECTED)
    assert not validate_signature("54321", URI, PARAMS, EXPECTED)
    assert not validate_signature(TOKEN, URI, {**PARAMS, "Digits": "1235"}, EXPECTED)
    assert not validate_signature(TOKEN, URI.replace("foo=1&bar=2", "bar=2&foo=1"), PARAMS, EXPECTED)


def test_gw_sdk_vector_repeated_params_any_container() -> None:
    pairs = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    expected = "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    assert compute_signature(TOKEN, URI, pairs) == expected
    assert compute_signature(TOKEN, URI, {"Sid": "CA123", "SidAccount": "AC123", "Digits": ["5678", "1234"]}) == (
        expected
    )
    # values of one name are sorted: 1234 before 5678
    assert expected == hand_signature(TOKEN, URI + "Digits1234Digits5678SidCA123SidAccountAC123")


@pytest.mark.parametrize(
    ("uri", "signature"),
    [
        (URI.replace(".com", ".com:1234"), EXPECTED),  # https with a port: signed without it
        (URI.replace(".com", ".com:1234").replace("https", "http"), "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),  # kept
        (URI, "kvajT1Ptam85bY51eRf/AJRuM3w="),  # signed with :443, request without
        (URI.replace("https", "http"), "0ZXoZLH/DfblKGATFgpif+LLRf4="),  # signed with :80
    ],
)
def test_gw_sdk_vectors_with_and_without_port(uri: str, signature: str) -> None:
    assert validate_signature(TOKEN, uri, PARAMS, signature)


def test_gw_port_variants_by_hand() -> None:
    url = "wss://gw.example.com/twilio/media"
    assert validate_signature("tok", url, None, hand_signature("tok", "wss://gw.example.com:443/twilio/media"))
    assert validate_signature("tok", "wss://gw.example.com:443/twilio/media", None, hand_signature("tok", url))
    assert not validate_signature("tok", url, None, hand_signature("tok", "wss://gw.example.com:80/twilio/media"))
    v6 = "https://[::1]:8443/x"
    assert validate_signature("tok", v6, {}, hand_signature("tok", "https://[::1]/x"))


def test_gw_json_body_variant() -> None:
    assert body_sha256(BODY) == BODY_HASH == body_sha256(BODY.encode())
    uri = URI + "&bodySHA256=" + BODY_HASH
    assert validate_signature(TOKEN, uri, None, "a9nBmqA0ju/hNViExpshrM61xv4=", body=BODY)
    with pytest.raises(SignatureError, match="does not match the body"):
        verify_signature(TOKEN, uri, None, "a9nBmqA0ju/hNViExpshrM61xv4=", body=BODY + " ")
    with pytest.raises(SignatureError, match="no bodySHA256"):
        verify_signature(TOKEN, URI, None, "a9nBmqA0ju/hNViExpshrM61xv4=", body=BODY)


def test_gw_verify_names_the_failure() -> None:
    with pytest.raises(SignatureError, match="missing X-Twilio-Signature"):
        verify_signature(TOKEN, URI, PARAMS, None)
    with pytest.raises(SignatureError, match="does not match https://mycompany.com/myapp.php.* with 5 params"):
        verify_signature(TOKEN, URI, PARAMS, "x" * 28)
    assert not validate_signature(TOKEN, URI, PARAMS, "ünïcode")  # no TypeError from compare_digest
    assert not validate_signature(TOKEN, URI, PARAMS, "")
    with pytest.raises(TypeError, match="param 'n' has a int value"):
        compute_signature(TOKEN, URI, {"n": [1]})  # type: ignore[arg-type]


def test_gw_public_url_keeps_raw_query_and_path() -> None:
    base = "https://gw.example.com/"
    raw_q = b"b=2&a=%20x&a=1&e=caf%C3%A9"
    assert public_url(base, b"/twilio/voice", raw_q) == "https://gw.example.com/twilio/voice?" + raw_q.decode()
    assert public_url("https://gw.example.com", "/twilio/voice") == "https://gw.example.com/twilio/voice"
    assert public_url("https://h/prefix", b"/a%2Fb", "") == "https://h/prefix/a%2Fb"
    assert public_ws_url("https://gw.example.com", "/twilio/media") == "wss://gw.example.com/twilio/media"
    assert public_ws_url("http://localhost:8080", "/twilio/media") == "ws://localhost:8080/twilio/media"
    for bad in ["gw.example.com", "ftp://x", "https://x/?a=1"]:
        with pytest.raises(ValueError, match="PUBLIC_URL must look like"):
            public_url(bad, "/x")


async def test_gw_signature_through_a_real_starlette_request() -> None:
    """Form params from Starlette's FormData (repeated keys) + the raw query, behind a proxy on another host."""
    public = "https://voice.shop.example"
    seen: list[str] = []

    async def voice(request: Request) -> PlainTextResponse:
        pairs: list[tuple[str, str | UploadFile]] = list(parse_form(await request.body()))
        form = FormData(pairs)  # what request.form() gives, without python-multipart
        url = public_url(public, request.scope.get("raw_path") or request.scope["path"], request.scope["query_string"])
        seen.append(url)
        ok = validate_signature(TOKEN, url, form, request.headers.get("x-twilio-signature"))
        return PlainTextResponse("ok" if ok else "forbidden", status_code=200 if ok else 403)

    app = Starlette(routes=[Route("/twilio/voice", voice, methods=["POST"])])
    form = [("CallSid", "CA" + "a" * 32), ("CallerName", ""), ("Digits", "9"), ("Digits", "1"), ("Body", "a&b c+")]
    query = "z=1&a=%7E2"
    signed = compute_signature(TOKEN, f"{public}/twilio/voice?{query}", form)
    headers = {"X-Twilio-Signature": signed, "Content-Type": "application/x-www-form-urlencoded"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://10.0.0.7:8080") as client:
        ok = await client.post(f"/twilio/voice?{query}", content=urlencode(form), headers=headers)
        bad = await client.post(f"/twilio/voice?{query}", content=urlencode(form[:-1]), headers=headers)
    assert ok.status_code == 200, ok.text
    assert bad.status_code == 403
    assert seen[0] == f"{public}/twilio/voice?{query}"


def test_gw_parse_form_keeps_blanks_and_repeats() -> None:
    assert parse_form(b"A=1&B=&A=%2B2+x&C") == [("A", "1"), ("B", ""), ("A", "+2 x"), ("C", "")]
    with pytest.raises(ValueError, match="not UTF-8"):
        parse_form(b"A=\xff")

"""Fuzzing the gateway's HTTP API from its own OpenAPI document (issue 6, "bad input").

For every path and method of ``app.openapi()``, hypothesis generates requests from the operation's parameters
(path, query, header), valid values and invalid ones alike (wrong types, control characters, huge, missing,
unknown extra parameters), and for the Twilio webhooks form bodies of Twilio's parameters plus junk (bad
percent-encoding, non-UTF-8, repeated names). Each operation gets >= 10,000 requests. Properties:

- No request gets a 5xx.
- With ``API_TOKEN`` set, an operation that takes ``Authorization`` answers nothing but 401 (or a 4xx about the
  request's shape) without the right bearer token, and never 401 with it.
- With ``TWILIO_AUTH_TOKEN`` set, a ``/twilio/*`` webhook without a valid signature is refused (403, or 400 for
  a body that is not a form) and leaves the bus untouched; the same request signed is never refused as unsigned.

Written on hypothesis alone rather than schemathesis: adding schemathesis needs ``uv add``, and the lock file
had uncommitted changes of other work at the time. The generation here reads the same document.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxcart.common.bus import MemoryBus
from voxcart.common.settings import load_settings
from voxcart.gateway.app import create_app
from voxcart.gateway.records_sqlite import SqliteRecordStore
from voxcart.gateway.twilio.signature import compute_signature, parse_form, public_url

TOKEN = "twilio-secret"
API_TOKEN = "api-secret"
PUBLIC = "https://gw.example.com"
REQUESTS_PER_OPERATION = 10_000
BATCH = 25
"""Requests per hypothesis example: the engine's own cost per example is larger than a request's."""
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    max_examples=REQUESTS_PER_OPERATION // BATCH,
    # a batch of 25 requests with bodies is "large" to hypothesis; that is the point of batching
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TWILIO_PARAMS = [
    "CallSid", "AccountSid", "From", "To", "CallStatus", "ApiVersion", "Direction", "ForwardedFrom", "CallerName",
    "ParentCallSid", "SequenceNumber", "Timestamp", "StreamSid", "StreamEvent", "StreamError", "DialCallStatus",
]  # fmt: skip

# -- the operations --------------------------------------------------------------------------------------


def _app() -> Any:
    env = {"TWILIO_AUTH_TOKEN": TOKEN, "PUBLIC_URL": PUBLIC, "API_TOKEN": API_TOKEN}
    return create_app(load_settings(env, env_file=None), bus=MemoryBus(), records=SqliteRecordStore(":memory:"))


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    parameters: tuple[dict[str, Any], ...]

    @property
    def name(self) -> str:
        return f"{self.method.upper()} {self.path}"

    def params_in(self, where: str) -> list[dict[str, Any]]:
        return [p for p in self.parameters if p["in"] == where]

    @property
    def needs_bearer(self) -> bool:
        return any(p["name"].lower() == "authorization" for p in self.params_in("header"))

    @property
    def webhook(self) -> bool:
        return self.path.startswith("/twilio/")


def _operations() -> list[Operation]:
    spec = _app().openapi()
    return [
        Operation(method, path, tuple(op.get("parameters", ())))
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


OPERATIONS = _operations()

# -- values from schemas ---------------------------------------------------------------------------------

# Characters are drawn from fixed lists: hypothesis's own text() filters out surrogates one by one, which made
# generation 4x the cost of the request itself.
_PRINTABLE = st.sampled_from([chr(c) for c in range(0x20, 0x7F)])
HEADER_TEXT = st.text(_PRINTABLE, max_size=40)
"""What a header can carry (latin-1; a server never sees anything else)."""
_ANY_CHAR = st.one_of(_PRINTABLE, st.sampled_from(list("\x00\t\n\r\x7f\x85é²١€\u202e\ufeff😀")))
TEXT = st.text(_ANY_CHAR, max_size=20)
ANY_TEXT = st.one_of(
    TEXT,
    st.sampled_from(["", " ", "-1", "0", "1", "500", "501", "1e3", "²", "١٢", "null", "%", "%zz", "\x00", "a/b", ".."]),
    st.sampled_from([300, 5000]).map(lambda n: "9" * n),
)
"""Any query or path value, valid or not (all of them are strings on the wire)."""


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    """A value that satisfies ``schema`` (the subset FastAPI emits for parameters), as the wire string."""
    if "anyOf" in schema:
        return st.one_of([from_schema(s) for s in schema["anyOf"] if s.get("type") != "null"] or [st.just("")])
    if "enum" in schema:
        return st.sampled_from([str(v) for v in schema["enum"]])
    kind = schema.get("type")
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**40)), schema.get("maximum", 2**40)).map(str)
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False).map(str)
    if kind == "boolean":
        return st.sampled_from(["true", "false"])
    return st.text(max_size=20)


def parameter_value(param: dict[str, Any]) -> st.SearchStrategy[str | None]:
    """Valid by the schema, anything, or absent (None)."""
    return st.one_of(st.none(), from_schema(param.get("schema", {})), ANY_TEXT)


# -- requests --------------------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    raw_path: str
    query: str
    headers: dict[str, str]
    body: bytes
    bearer: bool
    """The right ``Authorization`` header is among the headers."""
    signed: bool
    """The right ``X-Twilio-Signature`` is among the headers."""


FORM_NAME = st.one_of(st.sampled_from(TWILIO_PARAMS), TEXT)
FORM_VALUE = st.one_of(
    TEXT,
    st.sampled_from(["CA" + "a" * 32, "CA", "CA{x}", "completed", "in-progress", "+15555550123", ""]),
)
JUNK_BODY = st.one_of(
    st.binary(max_size=60),
    st.sampled_from([b"%", b"%zz=1", b"a=%ff", b"\xff\xfe", b"=&=&", b"CallSid", b"CallSid=CA1&CallSid=CA2"]),
)
CALL_FORM = {"CallSid": "CA" + "a" * 32, "AccountSid": "AC" + "b" * 32, "From": "+15555550123", "To": "+15555550999"}


@st.composite
def webhook_body(draw: st.DrawFn) -> bytes:
    """A call's form with one value changed and up to 3 more pairs (any name, Twilio's or not), or junk."""
    if draw(st.integers(0, 4)) == 0:
        return draw(JUNK_BODY)
    pairs = list(CALL_FORM.items())
    changed = draw(st.integers(-1, len(pairs) - 1))
    if changed >= 0:
        pairs[changed] = (pairs[changed][0], draw(FORM_VALUE))
    pairs += draw(st.lists(st.tuples(FORM_NAME, FORM_VALUE), max_size=3))
    return urlencode(pairs).encode()


def requests_for(op: Operation) -> st.SearchStrategy[Request]:
    path_params = {p["name"]: parameter_value(p).map(lambda v: v or "x") for p in op.params_in("path")}
    query_params = {p["name"]: parameter_value(p) for p in op.params_in("query")}
    header_params = {p["name"]: st.one_of(st.none(), HEADER_TEXT) for p in op.params_in("header")}

    @st.composite
    def build(draw: st.DrawFn) -> Request:
        path = op.path
        for name, strategy in path_params.items():
            path = path.replace("{" + name + "}", quote(draw(strategy), safe=""))
        query_pairs = [(k, v) for k, s in query_params.items() if (v := draw(s)) is not None]
        query_pairs += draw(st.lists(st.tuples(st.text(max_size=6), ANY_TEXT), max_size=2))  # unknown ones
        query = urlencode(query_pairs)
        headers = {k: v for k, s in header_params.items() if (v := draw(s)) is not None}
        bearer = False
        if op.needs_bearer:
            auth = draw(st.sampled_from(["right", "wrong", "none", "bare", "basic"]))
            headers.pop("authorization", None)
            if auth != "none":
                headers["Authorization"] = {
                    "right": f"Bearer {API_TOKEN}",
                    "wrong": f"Bearer {draw(HEADER_TEXT)}",
                    "bare": API_TOKEN,
                    "basic": "Basic YTpi",
                }[auth]
            bearer = auth == "right"
        body = b""
        signed = False
        if op.webhook:
            body = draw(webhook_body())
            headers["Content-Type"] = draw(
                st.sampled_from(["application/x-www-form-urlencoded", "text/plain", "application/json"])
            )
            how = draw(st.sampled_from(["signed", "unsigned", "wrong key", "garbage"]))
            if how != "unsigned":
                try:
                    pairs = parse_form(body)
                except ValueError:
                    pairs = []
                url = public_url(PUBLIC, path, query.encode())
                key = TOKEN if how == "signed" else "not-the-token"
                signature = compute_signature(key, url, pairs) if how != "garbage" else draw(HEADER_TEXT)
                headers["X-Twilio-Signature"] = signature
            signed = how == "signed"
        return Request(op.method.upper(), path, query, headers, body, bearer, signed)

    return build()


# -- the app ---------------------------------------------------------------------------------------------


@dataclass
class Answer:
    status_code: int
    text: str


@dataclass
class Client:
    """Calls the ASGI app directly as uvicorn would (3x cheaper than httpx, whose URL parsing dominates)."""

    loop: asyncio.AbstractEventLoop
    app: Any
    bus: MemoryBus

    def send(self, request: Request) -> Answer:
        return self.loop.run_until_complete(self._send(request))

    async def _send(self, request: Request) -> Answer:
        headers = [(b"host", b"gw.internal"), (b"content-length", str(len(request.body)).encode())]
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": "http",
            "path": unquote(request.raw_path),
            "raw_path": request.raw_path.encode("ascii"),
            "query_string": request.query.encode("ascii"),
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50_000),
            "server": ("gw.internal", 80),
        }
        messages = [{"type": "http.request", "body": request.body, "more_body": False}]
        status = 0
        body = bytearray()

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))

        await self.app(scope, receive, send)
        return Answer(status, body.decode("utf-8", "replace"))

    def bus_state(self) -> tuple[int, int]:
        return (sum(len(s.entries) for s in self.bus.streams.values()), len(self.bus.values))


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    app = _app()
    loop = asyncio.new_event_loop()
    lifespan = app.router.lifespan_context(app)
    loop.run_until_complete(lifespan.__aenter__())
    try:
        yield Client(loop, app, app.state.registry.bus)
    finally:
        loop.run_until_complete(lifespan.__aexit__(None, None, None))
        loop.close()


def test_gw_fuzz_http_spec_lists_every_operation() -> None:
    names = {op.name for op in OPERATIONS}
    assert {"POST /twilio/voice", "POST /twilio/status", "POST /twilio/after-stream", "GET /healthz"} <= names
    assert any(op.needs_bearer for op in OPERATIONS)


@pytest.mark.parametrize("op", OPERATIONS, ids=[op.name for op in OPERATIONS])
def test_gw_fuzz_http_operation(client: Client, op: Operation) -> None:
    sent = 0
    statuses: dict[int, int] = {}

    @FUZZ
    @given(batch=st.lists(requests_for(op), min_size=BATCH, max_size=BATCH))
    def check(batch: list[Request]) -> None:
        nonlocal sent
        for request in batch:
            before = client.bus_state()
            response = client.send(request)
            sent += 1
            status = response.status_code
            statuses[status] = statuses.get(status, 0) + 1
            where = f"{request.method} {request.raw_path}?{request.query[:80]} -> {status}: {response.text[:200]}"
            assert status < 500, where
            if op.needs_bearer:
                if request.bearer:
                    assert status != 401, where
                else:  # a path parameter with a "/" in it matches no route (404) or another one's slash (307)
                    assert status in ((401, 422, 404, 307) if "{" in op.path else (401, 422)), where
            if op.webhook and not request.signed:
                assert status in (400, 403), where
                assert client.bus_state() == before, f"an unsigned webhook changed the bus: {where}"
            if op.webhook and request.signed:
                assert status != 403, where

    check()
    assert sent >= REQUESTS_PER_OPERATION, sent
    assert len(statuses) > 1 or op.path in ("/healthz", "/metrics"), statuses  # not one answer to everything

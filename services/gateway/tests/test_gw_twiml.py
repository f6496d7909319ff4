"""TwiML builder: structure (parsed back with ElementTree) and escaping of hostile strings."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from voxcart.gateway.twilio.twiml import VoiceResponse, connect_stream, dial, hangup, say


def test_gw_connect_stream_with_parameters() -> None:
    xml = connect_stream(
        "wss://gw.example.com/twilio/media",
        parameters={"session": "s&1", "store": 'shop "eu" <1>'},
        action="https://gw.example.com/twilio/after-stream?x=1&y=2",
    )
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?><Response>')
    root = ET.fromstring(xml)
    connect = root.find("Connect")
    assert connect is not None
    assert connect.attrib == {"action": "https://gw.example.com/twilio/after-stream?x=1&y=2", "method": "POST"}
    stream = connect.find("Stream")
    assert stream is not None and stream.attrib["url"] == "wss://gw.example.com/twilio/media"
    params = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    assert params == {"session": "s&1", "store": 'shop "eu" <1>'}
    assert "&amp;" in xml and "&quot;eu&quot;" in xml


def test_gw_stream_url_rules() -> None:
    with pytest.raises(ValueError, match="31922"):
        connect_stream("https://gw.example.com/twilio/media")
    with pytest.raises(ValueError, match="31922"):
        connect_stream("ws://localhost:8080/twilio/media")
    local = ET.fromstring(connect_stream("ws://localhost:8080/twilio/media", allow_insecure=True))
    assert local.find("Connect/Stream").attrib["url"] == "ws://localhost:8080/twilio/media"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="31922"):
        connect_stream("wss://")
    with pytest.raises(ValueError, match="query string"):
        connect_stream("wss://gw.example.com/twilio/media?call=1")
    with pytest.raises(ValueError, match="non-empty"):
        connect_stream("wss://gw/x", parameters={"": "v"})


def test_gw_say_dial_hangup_and_escaping() -> None:
    xml = (
        VoiceResponse()
        .say("Tom & Jerry's <shop>\nline two", voice="Polly.Joanna", language="en-US")
        .pause(2)
        .dial("+15552223333", caller_id="+15550001111", timeout=25, action="/twilio/dial-result", answer_on_bridge=True)
        .hangup()
        .to_xml(declaration=False)
    )
    root = ET.fromstring(xml)
    assert [el.tag for el in root] == ["Say", "Pause", "Dial", "Hangup"]
    assert root[0].text == "Tom & Jerry's <shop>\nline two"
    assert root[0].attrib == {"voice": "Polly.Joanna", "language": "en-US"}
    assert root[1].attrib == {"length": "2"}
    assert root[2].text == "+15552223333"
    assert root[2].attrib == {
        "callerId": "+15550001111",
        "timeout": "25",
        "action": "/twilio/dial-result",
        "answerOnBridge": "true",
    }
    # an attribute with a newline survives attribute-value normalisation
    attr_xml = VoiceResponse().say("x", voice="a\nb").to_xml()
    assert ET.fromstring(attr_xml)[0].attrib["voice"] == "a\nb"


def test_gw_whole_document_helpers() -> None:
    assert hangup() == '<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>'
    root = ET.fromstring(dial("+15552223333", say_first="Connecting you."))
    assert [el.tag for el in root] == ["Say", "Dial"]
    assert [el.tag for el in ET.fromstring(say("Bye."))] == ["Say", "Hangup"]
    assert [el.tag for el in ET.fromstring(say("Hold on.", then_hangup=False))] == ["Say"]


def test_gw_refuses_characters_xml_cannot_carry() -> None:
    with pytest.raises(ValueError, match=r"Say text contains a character XML cannot carry: '\\x07'"):
        say("ring\x07")
    with pytest.raises(ValueError, match="Parameter@value"):
        connect_stream("wss://gw/x", parameters={"k": "\x00"})
    with pytest.raises(ValueError, match="needs a number"):
        dial("  ")

"""The hold and refusal TwiML documents, and ``<Gather>`` building: well-formed, escaped, nesting only what Twilio
allows inside ``<Gather>``."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from voxcart.gateway import hold_twiml
from voxcart.gateway.twilio.twiml import VoiceResponse

URL = "https://gw.example.com/twilio/hold?n=3&t=1700000000000"


def test_gw_hold_twiml_gather_nests_prompts_and_escapes() -> None:
    doc = VoiceResponse().gather(action=URL, num_digits=1, timeout=4, nested=VoiceResponse().say("a < b").pause(2))
    xml = doc.to_xml()
    assert "n=3&amp;t=" in xml
    gather = ET.fromstring(xml)[0]
    assert gather.attrib == {"input": "dtmf", "action": URL, "method": "POST", "numDigits": "1", "timeout": "4"}
    assert [(c.tag, c.text) for c in gather] == [("Say", "a < b"), ("Pause", None)]
    with pytest.raises(ValueError, match="can nest only"):
        VoiceResponse().gather(action=URL, nested=VoiceResponse().dial("+15555550100"))


def test_gw_hold_twiml_later_rounds_are_quiet_unless_reminding() -> None:
    quiet = ET.fromstring(hold_twiml.busy(URL, 5, ahead=2, callback=True, first=False, remind=False))
    assert [c.tag for c in quiet] == ["Gather", "Redirect"] and list(quiet[0]) == []
    remind = ET.fromstring(hold_twiml.busy(URL, 5, ahead=2, callback=True, first=False, remind=True))
    assert remind[0][0].text == "Thanks for holding. There are 2 callers ahead of you. " + hold_twiml.OFFER
    withheld = ET.fromstring(hold_twiml.busy(URL, 5, ahead=0, callback=False, first=False, remind=False))
    assert [c.tag for c in withheld] == ["Pause", "Redirect"] and withheld[1].text == URL


def test_gw_hold_twiml_endings() -> None:
    confirmed = ET.fromstring(hold_twiml.callback_confirmed("+1 (555) 555-0123"))
    assert "ending in 0 1 2 3" in (confirmed[0].text or "") and confirmed[1].tag == "Hangup"
    assert "ending in" not in (ET.fromstring(hold_twiml.callback_confirmed("client:al"))[0].text or "")
    assert "withheld numbers" in (ET.fromstring(hold_twiml.rate_limited(True))[0].text or "")
    assert "your number" in (ET.fromstring(hold_twiml.rate_limited(False))[0].text or "")
    last = ET.fromstring(hold_twiml.last_offer(URL))
    assert [c.tag for c in last] == ["Gather", "Say", "Hangup"] and last[0].attrib["action"] == URL

"""What a caller hears before the agent answers, when it cannot answer: lines busy (hold, call back), the longest
wait reached, too many calls from one number. Each function returns a whole TwiML document (protocols.md 1.5).

Invariants:
- A caller is offered a call back (``<Gather numDigits="1">``: press 1) only when their number is known.
- Every hold document ends with a ``<Redirect>`` back to the hold URL, so Twilio asks again after ``hold_s``;
  nothing else ends a hold but admission, a call-back request or the longest wait.
- Documents that end the call say goodbye and ``<Hangup/>``.
"""

from __future__ import annotations

from .twilio.twiml import VoiceResponse

__all__ = [
    "busy",
    "callback_confirmed",
    "callback_failed",
    "last_offer",
    "lines_still_busy",
    "position",
    "rate_limited",
    "unavailable",
]

BUSY = (
    "Thanks for calling. All of our lines are busy right now. "
    "Please stay on the line, and we'll answer as soon as one is free."
)
HOLDING = "Thanks for holding."
OFFER = "Or press 1, and we'll call you back as soon as we can."
STILL_BUSY = "We're sorry, all of our lines are still busy."
LAST_OFFER = "Press 1, and we'll call you back as soon as we can."
CALL_LATER = "Please try again a little later. Goodbye."
UNAVAILABLE = "Sorry, we cannot take your call right now. Please try again."


def position(ahead: int) -> str:
    """The caller's place in line, said."""
    if ahead <= 0:
        return "You're next in line."
    if ahead == 1:
        return "There is one caller ahead of you."
    return f"There are {ahead} callers ahead of you."


def busy(hold_url: str, hold_s: int, *, ahead: int, callback: bool, first: bool, remind: bool) -> str:
    """Hold for ``hold_s`` seconds then ask again at ``hold_url``.

    Args:
        ahead: callers waiting before this one.
        callback: offer a call back (the number is known).
        first: the first hold of the call: say that the lines are busy.
        remind: a later hold that says "thanks for holding" (every half minute or so); else silence.
    """
    text = " ".join([BUSY if first else HOLDING, position(ahead), OFFER if callback else ""]).strip()
    prompt = VoiceResponse()
    if first or remind:
        prompt.say(text)
    response = VoiceResponse()
    if callback:
        response.gather(action=hold_url, num_digits=1, timeout=hold_s, nested=prompt)
    else:
        if first or remind:
            response.say(text)
        response.pause(hold_s)
    return response.redirect(hold_url).to_xml()


def last_offer(hold_url: str) -> str:
    """The longest wait reached, number known: one more chance to ask for a call back, then goodbye."""
    prompt = VoiceResponse().say(f"{STILL_BUSY} {LAST_OFFER}")
    response = VoiceResponse().gather(action=hold_url, num_digits=1, timeout=6, nested=prompt)
    return response.say(CALL_LATER).hangup().to_xml()


def lines_still_busy() -> str:
    """The longest wait reached, number withheld: goodbye."""
    return VoiceResponse().say(f"{STILL_BUSY} {CALL_LATER}").hangup().to_xml()


def callback_confirmed(number: str) -> str:
    """The call-back request is saved: say to which number (its last four digits, one by one)."""
    digits = [c for c in number if c.isdigit()][-4:]
    where = f" at the number ending in {' '.join(digits)}" if len(digits) == 4 else ""
    text = f"Thank you. We'll call you back{where} as soon as a line is free. Goodbye."
    return VoiceResponse().say(text).hangup().to_xml()


def callback_failed() -> str:
    """The call-back request could not be saved: do not promise one."""
    text = "Sorry, we couldn't save your request. Please try again a little later. Goodbye."
    return VoiceResponse().say(text).hangup().to_xml()


def rate_limited(withheld: bool) -> str:
    """Too many calls from this number (or from withheld numbers) lately."""
    if withheld:
        text = "Thanks for calling. We're getting a lot of calls from withheld numbers right now."
    else:
        text = "Thanks for calling. We've had several calls from your number in the last few minutes."
    return VoiceResponse().say(f"{text} {CALL_LATER}").hangup().to_xml()


def unavailable() -> str:
    """The gateway cannot reach its shared state (Redis): apologize."""
    return VoiceResponse().say(UNAVAILABLE).to_xml()

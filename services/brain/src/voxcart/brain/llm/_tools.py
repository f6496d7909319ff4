"""The tools an LLM may call, and their executor over the store and the call's dialog state.

The guardrails live here, not in the prompt, so a model cannot talk its way around them:
- Nothing about an order (status, items, dates, carrier, tracking, returns) is returned, and nothing is done
  to it, unless its customer is verified for this call: the calling number matched, or ``verify_identity``
  matched the ZIP code or email on file (``DialogState.verified``, shared with the rules dialog). An
  unverified caller learns only whether the order number exists.
- ``verify_identity`` accepts a ZIP code or email only if the caller actually said it (it occurs in the
  caller's own words in this call), and refuses after :data:`MAX_FAILED_VERIFICATIONS` mismatches per call.
  Customer ZIP codes and emails are never returned.
- Cancelling and returning follow the store's rules (``cancel_order`` refuses what is not processing;
  eligibility is :func:`~voxcart.brain.store.check_return`, the rule the store enforces) and need the caller's
  yes: the first call only proposes the action; it is done when the tool is called again for the same order
  (and item, or address) in a later turn, unless the caller's latest words are a "no". Return and address-change
  idempotency keys are the rules dialog's, so one return or change is never made twice for a call.
- Changing a shipping address is the rules dialog's job with the same rules: a verified caller's order, an
  address as the dialog takes it down (:func:`~voxcart.brain.dialog._address.written_address`: a number and at
  least three words), refused as the store refuses it (``not_processing`` once shipped, ``cancelled``).
- A message for the team carries the calling number, or a callback number only if the caller said it; the
  order under discussion only when the caller is verified for it. Its idempotency key is the call's, the LLM
  turn's and its place in the turn, so a replayed turn stores nothing twice.
- A transfer happens only when the rules dialog would transfer (:meth:`Turn.team_available
  <voxcart.brain.dialog._turn.Turn.team_available>`: a handoff number, inside opening hours); otherwise the
  result tells the model to offer to take a message.
- A store failure (:class:`~voxcart.brain.store.StoreError` other than a refusal) is raised, not returned: the
  turn then falls back to the rules dialog, which apologises and offers a person (one place for both modes).
- Results are JSON objects; a refusal has ``"ok": false`` and a stable ``"reason"``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Callable
from typing import Any, Final

from voxcart.brain.dialog import DialogState
from voxcart.brain.dialog._address import address_key, say_address, written_address
from voxcart.brain.dialog._turn import Turn
from voxcart.brain.llm._memory import LlmMemory, PendingAction
from voxcart.brain.llm._schemas import TOOLS
from voxcart.brain.nlu import extract_email, faq_match, yes_or_no
from voxcart.brain.numbers import digit_runs
from voxcart.brain.phrasing import say_order_number, say_phone
from voxcart.brain.store import ActionRefused, OrderNotFound, Store, check_return
from voxcart.brain.store._requests import address_change
from voxcart.common.seed import Order

__all__ = ["MAX_FAILED_VERIFICATIONS", "TOOLS", "ToolBox"]

MAX_FAILED_VERIFICATIONS: Final = 3


Result = dict[str, Any]


class ToolBox:
    """Runs tool calls for one LLM turn.

    Args:
        store: the shop.
        state: the call's dialog state (``verified`` grows on a match; ``order_number`` follows the order).
        memory: the call's LLM memory (failed checks, the proposed action).
        today: today's date in the store's timezone.
        caller_lines: what the caller said in this call, oldest first, the current utterance last.
        now: the current time in the store's timezone, for opening hours (None: unknown, taken as open).
    """

    def __init__(
        self,
        store: Store,
        state: DialogState,
        memory: LlmMemory,
        today: dt.date,
        caller_lines: list[str],
        now: dt.datetime | None = None,
    ) -> None:
        self.store = store
        self.state = state
        self.memory = memory
        self.today = today
        self.now = now
        self.caller_lines = caller_lines
        self._messages = itertools.count()
        self.transfer_to: str | None = None
        self.end_call = False
        self.done: list[str] = []
        """Spoken facts of actions done this turn (said if the model cannot speak afterwards)."""
        self.called: list[str] = []
        self._handlers: dict[str, Callable[[dict[str, Any]], Result]] = {
            "order_status": self._order_status,
            "my_orders": self._my_orders,
            "verify_identity": self._verify_identity,
            "return_options": self._return_options,
            "create_return": self._create_return,
            "cancel_order": self._cancel_order,
            "change_address": self._change_address,
            "leave_message": self._leave_message,
            "check_availability": self._check_availability,
            "store_policies": self._store_policies,
            "transfer_to_human": self._transfer,
            "end_call": self._end_call,
        }

    def run(self, name: str, arguments: str) -> str:
        """Run one tool call; returns its result as JSON text (refusals and bad arguments included).

        Raises:
            StoreError: the store failed (down, or a query error); see the module invariants.
        """
        self.called.append(name)
        handler = self._handlers.get(name)
        if handler is None:
            return _dump({"ok": False, "reason": "unknown_tool", "message": f"there is no tool named {name!r}"})
        try:
            args = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            return _dump({"ok": False, "reason": "bad_arguments", "message": f"arguments are not JSON: {exc.msg}"})
        if not isinstance(args, dict):
            return _dump({"ok": False, "reason": "bad_arguments", "message": "arguments must be a JSON object"})
        return _dump(handler(args))

    # -- orders ------------------------------------------------------------------------------------------------
    def _verified(self, order: Order) -> bool:
        st = self.state
        return order.customer == st.caller_customer or order.customer in st.verified

    def _order(self, args: dict[str, Any]) -> tuple[Order | None, Result | None]:
        """The verified order named by ``args``, or the refusal to return instead."""
        number = "".join(ch for ch in str(args.get("order_number", "")) if ch.isdigit())
        if not number:
            return None, {"ok": False, "reason": "bad_arguments", "message": "order_number needs digits"}
        order = self.store.get_order(number)
        if order is None:
            return None, {"ok": False, "reason": "not_found", "order_number": number}
        self.state.order_number = number
        if not self._verified(order):
            return None, {
                "ok": False,
                "reason": "identity_required",
                "order_number": number,
                "message": "The order exists. Ask the caller for the ZIP code or the email address on the order, "
                "then call verify_identity. Share nothing about the order before that.",
            }
        return order, None

    def _order_status(self, args: dict[str, Any]) -> Result:
        order, refusal = self._order(args)
        if order is None:
            return refusal or {}
        returns = self.store.returns_for_order(order.number)
        return {
            "ok": True,
            "order_number": order.number,
            "status": order.status,
            "placed": order.placed.isoformat(),
            "items": [self._item(i.sku, i.qty, i.price) for i in order.items],
            "carrier": order.carrier,
            "tracking": order.tracking,
            "eta": order.eta.isoformat() if order.eta else None,
            "delivered": order.delivered.isoformat() if order.delivered else None,
            "returns": [
                {"sku": r.sku, "status": r.status, "refund_amount": r.refund_amount, "updated": r.updated.isoformat()}
                for r in returns
            ],
        }

    def _item(self, sku: str, qty: int, price: float) -> Result:
        product = self.store.product_for_sku(sku)
        variant = next((v for v in product.variants if v.sku == sku), None) if product else None
        return {
            "sku": sku,
            "product": product.name if product else None,
            "color": variant.color if variant else None,
            "size": variant.size if variant else None,
            "qty": qty,
            "price": price,
        }

    def _my_orders(self, args: dict[str, Any]) -> Result:
        customer = self.state.caller_customer
        if not customer:
            return {"ok": False, "reason": "caller_unknown", "message": "Ask the caller for their order number."}
        orders = self.store.orders_for_customer(customer)
        return {
            "ok": True,
            "orders": [{"order_number": o.number, "placed": o.placed.isoformat(), "status": o.status} for o in orders],
        }

    def _verify_identity(self, args: dict[str, Any]) -> Result:
        number = "".join(ch for ch in str(args.get("order_number", "")) if ch.isdigit())
        order = self.store.get_order(number) if number else None
        if order is None:
            return {"ok": False, "reason": "not_found", "order_number": number}
        self.state.order_number = number
        if self._verified(order):
            return {"ok": True, "verified": True, "order_number": number}
        if self.memory.failed_verifications >= MAX_FAILED_VERIFICATIONS:
            return {
                "ok": False,
                "reason": "too_many_attempts",
                "message": "Identity cannot be checked again on this call; offer to transfer to a person.",
            }
        zip_code = "".join(ch for ch in str(args.get("zip_code") or "") if ch.isdigit())
        email = str(args.get("email") or "").strip().lower()
        if not zip_code and not email:
            return {"ok": False, "reason": "bad_arguments", "message": "give the zip_code or the email the caller said"}
        if not self._caller_said(zip_code, email):
            return {
                "ok": False,
                "reason": "not_said_by_caller",
                "message": "Only a ZIP code or email the caller said can be checked. Ask the caller for it.",
            }
        customer = self.store.get_customer(order.customer)
        on_file_zip = "".join(ch for ch in (customer.zip or "") if ch.isdigit()) if customer else ""
        zip_ok = bool(zip_code and on_file_zip and zip_code in (on_file_zip, on_file_zip[:5]))
        email_ok = bool(email and customer and customer.email and email == customer.email.lower())
        if zip_ok or email_ok:
            self.state.verified.append(order.customer)
            return {"ok": True, "verified": True, "order_number": number}
        self.memory.failed_verifications += 1
        left = MAX_FAILED_VERIFICATIONS - self.memory.failed_verifications
        return {"ok": False, "reason": "no_match", "attempts_left": left}

    def _caller_said(self, zip_code: str, email: str) -> bool:
        for line in self.caller_lines:
            if zip_code and any(zip_code in run for run in digit_runs(line, homophones=True)):
                return True
            if email and extract_email(line) == email:
                return True
        return False

    def _return_options(self, args: dict[str, Any]) -> Result:
        order, refusal = self._order(args)
        if order is None:
            return refusal or {}
        returns = self.store.returns_for_order(order.number)
        items = []
        for item in order.items:
            check = check_return(
                order, item.sku, self.store.product_for_sku(item.sku), self.store.policies, self.today, returns
            )
            items.append(
                {
                    **self._item(item.sku, item.qty, item.price),
                    "returnable": check.eligible,
                    "verdict": check.verdict,
                    "deadline": check.deadline.isoformat() if check.deadline else None,
                }
            )
        return {"ok": True, "order_number": order.number, "status": order.status, "items": items}

    def _confirmed(self, action: PendingAction) -> bool:
        """The same action was proposed in an earlier turn and the caller did not just say no."""
        pending = self.memory.pending
        if pending is None or (pending.kind, pending.order, pending.sku, pending.address) != (
            action.kind,
            action.order,
            action.sku,
            action.address,
        ):
            return False
        said = self.caller_lines[-1] if self.caller_lines else ""
        return pending.turn < action.turn and yes_or_no(said) is not False

    def _propose(self, action: PendingAction, what: str) -> Result:
        self.memory.pending = action
        return {
            "ok": False,
            "reason": "needs_confirmation",
            "message": f"Ask the caller whether to {what}. If they say yes, call this tool again.",
        }

    def _create_return(self, args: dict[str, Any]) -> Result:
        order, refusal = self._order(args)
        if order is None:
            return refusal or {}
        sku = str(args.get("sku", "")).strip()
        if sku not in {i.sku for i in order.items}:
            return {"ok": False, "reason": "not_in_order", "skus": [i.sku for i in order.items]}
        returns = self.store.returns_for_order(order.number)
        check = check_return(order, sku, self.store.product_for_sku(sku), self.store.policies, self.today, returns)
        if not check.eligible:
            return {
                "ok": False,
                "reason": check.verdict,
                "deadline": check.deadline.isoformat() if check.deadline else None,
            }
        action = PendingAction(kind="return", order=order.number, sku=sku, turn=self.memory.turn_count)
        if not self._confirmed(action):
            return self._propose(action, "start this return")
        key = f"{self.state.call_id or 'call'}:return:{order.number}:{sku}"
        try:
            ret = self.store.create_return(order.number, sku, key=key)
        except ActionRefused as exc:
            return {"ok": False, "reason": exc.reason, "message": str(exc)}
        except OrderNotFound:
            return {"ok": False, "reason": "not_found", "order_number": order.number}
        self.memory.pending = None
        product = self.store.product_for_sku(sku)
        self.done.append(f"I've started a return for the {product.name if product else 'item'}.")
        return {"ok": True, "return_id": ret.id, "status": ret.status, "refund_amount": ret.refund_amount}

    def _cancel_order(self, args: dict[str, Any]) -> Result:
        order, refusal = self._order(args)
        if order is None:
            return refusal or {}
        if order.status == "cancelled":
            return {"ok": True, "status": "cancelled", "message": "The order was already cancelled."}
        if order.status != "processing":
            return {
                "ok": False,
                "reason": "not_processing",
                "status": order.status,
                "message": f"An order that is {order.status} cannot be cancelled; it can be returned after delivery.",
            }
        action = PendingAction(kind="cancel", order=order.number, turn=self.memory.turn_count)
        if not self._confirmed(action):
            return self._propose(action, f"cancel order {order.number}")
        try:
            cancelled = self.store.cancel_order(order.number)
        except ActionRefused as exc:
            return {"ok": False, "reason": exc.reason, "message": str(exc)}
        except OrderNotFound:
            return {"ok": False, "reason": "not_found", "order_number": order.number}
        self.memory.pending = None
        self.done.append(f"Order {say_order_number(order.number)} is cancelled.")
        return {"ok": True, "status": cancelled.status, "refund_days": self.store.policies.refund_days}

    def _change_address(self, args: dict[str, Any]) -> Result:
        order, refusal = self._order(args)
        if order is None:
            return refusal or {}
        address = written_address(str(args.get("address") or ""))
        if address is None:
            return {
                "ok": False,
                "reason": "bad_address",
                "message": "Ask the caller for the whole new address: the street address with its number, the city "
                "and the ZIP code.",
            }
        try:
            address_change(order, order.number, address, self.today)  # the store's rule, checked before proposing
        except ActionRefused as exc:
            return {
                "ok": False,
                "reason": exc.reason,
                "status": order.status,
                "message": f"An order that is {order.status} cannot be sent to another address.",
            }
        action = PendingAction(kind="address", order=order.number, address=address, turn=self.memory.turn_count)
        if not self._confirmed(action):
            result = self._propose(action, f"ship order {order.number} to {say_address(address)}")
            return {**result, "address": say_address(address)}
        try:
            change = self.store.change_address(
                order.number, address, key=address_key(self.state.call_id, order.number, address)
            )
        except ActionRefused as exc:
            return {"ok": False, "reason": exc.reason, "message": str(exc)}
        except OrderNotFound:
            return {"ok": False, "reason": "not_found", "order_number": order.number}
        self.memory.pending = None
        self.done.append(f"Done. Order {say_order_number(order.number)} will ship to {say_address(change.address)}.")
        return {"ok": True, "order_number": order.number, "address": change.address, "changed": str(change.changed)}

    def _leave_message(self, args: dict[str, Any]) -> Result:
        st = self.state
        text = " ".join(str(args.get("message") or "").split())
        name = " ".join(str(args.get("name") or "").split())
        if not text:
            return {"ok": False, "reason": "empty", "message": "Ask the caller for their name and their message."}
        given = "".join(ch for ch in str(args.get("callback_number") or "") if ch.isdigit())
        if given and (len(given) < 7 or not self._caller_said(given, "")):
            return {
                "ok": False,
                "reason": "not_said_by_caller",
                "message": "Only a phone number the caller said (7 digits or more) can be used. Ask them for it, "
                "or leave callback_number out to use the number they are calling from.",
            }
        number = given or st.caller_number
        if not number and not args.get("no_callback_number"):
            return {
                "ok": False,
                "reason": "callback_number_needed",
                "message": "The calling number is withheld. Ask for a number to call back; if the caller has none, "
                "call again with no_callback_number set to true.",
            }
        order = self.store.get_order(st.order_number) if st.order_number else None
        about = order.number if order is not None and self._verified(order) else None
        key = f"{st.call_id or 'call'}:llm-message:{self.memory.turn_count}:{next(self._messages)}"
        try:
            message = self.store.leave_message(number, f"{name}: {text}" if name else text, key=key, order_number=about)
        except ActionRefused as exc:
            return {"ok": False, "reason": exc.reason, "message": str(exc)}
        st.messages_left += 1
        if given:
            back = f"Someone from our team will call you back at {say_phone(given)}."
        elif number:
            back = "Someone from our team will call you back at the number you're calling from."
        else:
            back = "Our team will read it as soon as they're in."
        self.done += ["Thank you, I've passed your message on to our team.", back]
        callback = "given" if given else "calling_number" if number else "none"
        return {"ok": True, "message_id": message.id, "callback": callback}

    # -- shop --------------------------------------------------------------------------------------------------
    def _check_availability(self, args: dict[str, Any]) -> Result:
        matches = self.store.find_products(str(args.get("product", "")))
        if not matches:
            return {"ok": False, "reason": "no_such_product", "products": [p.name for p in self.store.products()]}
        product = matches[0].product
        color = str(args.get("color") or "").strip() or None
        size = str(args.get("size") or "").strip() or None
        variants = self.store.variants(product.id, color=color, size=size)
        return {
            "ok": True,
            "product": product.name,
            "price": product.price,
            "variants": [
                {
                    "color": v.color,
                    "size": v.size,
                    "in_stock": v.stock,
                    "restock_date": v.restock_date.isoformat() if v.restock_date else None,
                }
                for v in variants
            ],
            "all_colors": sorted({v.color for v in product.variants if v.color}),
            "all_sizes": sorted({v.size for v in product.variants if v.size}),
        }

    def _store_policies(self, args: dict[str, Any]) -> Result:
        info, policies = self.store.info, self.store.policies
        result: Result = {
            "ok": True,
            "hours": info.hours,
            "return_window_days": policies.return_window_days,
            "returnable_conditions": policies.returnable_conditions,
            "non_returnable_categories": policies.non_returnable_categories,
            "refund_days": policies.refund_days,
            "shipping": [{"method": s.method, "days": s.days, "price": s.price} for s in policies.shipping],
            "ships_to": policies.ships_to,
        }
        question = str(args.get("question") or "")
        index, _ = faq_match(question, policies.faq) if question else (None, 0)
        if index is not None:
            result["faq_answer"] = policies.faq[index].answer
        return result

    def _transfer(self, args: dict[str, Any]) -> Result:
        info = self.store.info
        if not Turn(self.store, self.state, self.today, self.now).team_available():
            return {
                "ok": False,
                "reason": "closed" if info.handoff_number else "no_one_available",
                "hours": info.hours,
                "message": "No one from the team can take the call now. Say so (and the opening hours, if any), "
                "and offer to take a message so someone calls back: if the caller wants to, ask for their name "
                "and message and call leave_message. Do not promise a transfer.",
            }
        self.transfer_to = info.handoff_number
        return {"ok": True, "message": "The call will be transferred after your reply."}

    def _end_call(self, args: dict[str, Any]) -> Result:
        self.end_call = True
        return {"ok": True, "message": "The call will end after your reply."}


def _dump(result: Result) -> str:
    return json.dumps(result, separators=(",", ":"))

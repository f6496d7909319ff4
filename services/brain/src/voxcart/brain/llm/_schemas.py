"""The tool definitions (JSON schemas) offered to the model; :class:`~voxcart.brain.llm.ToolBox` runs them.

Invariant: every name here has a handler in the tool box, and the descriptions explain the guardrails the tools
enforce (identity first, the caller's yes before an action) so a model can follow them, not so they hold.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["TOOLS"]


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": schema}}


_ORDER = {"order_number": {"type": "string", "description": "The order number, digits only."}}
TOOLS: Final[list[dict[str, Any]]] = [
    _tool(
        "order_status",
        "Look up an order by number. Returns its details only once the caller's identity is verified for it; "
        "otherwise says whether it exists and that verify_identity is needed.",
        _ORDER,
        ["order_number"],
    ),
    _tool(
        "my_orders",
        "List the orders of the customer whose phone number is calling (only when the calling number is known).",
        {},
        [],
    ),
    _tool(
        "verify_identity",
        "Check the ZIP code or email address the caller just said against the order's customer.",
        {
            **_ORDER,
            "zip_code": {"type": "string", "description": "The ZIP code exactly as the caller said it."},
            "email": {"type": "string", "description": "The email address exactly as the caller said it."},
        },
        ["order_number"],
    ),
    _tool(
        "return_options",
        "Which items of a verified caller's order can be returned today, and until when.",
        _ORDER,
        ["order_number"],
    ),
    _tool(
        "create_return",
        "Start a return of one item. Call once to check and propose it; ask the caller to confirm; when they "
        "say yes, call again with the same arguments to start it.",
        {**_ORDER, "sku": {"type": "string", "description": "The item's SKU from order_status."}},
        ["order_number", "sku"],
    ),
    _tool(
        "cancel_order",
        "Cancel an order that has not shipped. Call once to check and propose it; ask the caller to confirm; when "
        "they say yes, call again to cancel.",
        _ORDER,
        ["order_number"],
    ),
    _tool(
        "change_address",
        "Change where an order that has not shipped yet will be delivered. Call once with the new address to check "
        "and propose it; read the address back to the caller and ask them to confirm; when they say yes, call again "
        "with the same arguments to change it.",
        {
            **_ORDER,
            "address": {
                "type": "string",
                "description": "The new address as the caller said it: street number and name, city, ZIP code.",
            },
        },
        ["order_number", "address"],
    ),
    _tool(
        "leave_message",
        "Take a message for the team to call the caller back (when no one can take the call, or the caller asks). "
        "The callback number is the calling number unless the caller gives another one.",
        {
            "name": {"type": "string", "description": "The caller's name, as they said it."},
            "message": {"type": "string", "description": "The caller's message, in their words."},
            "callback_number": {
                "type": "string",
                "description": "A number to call back, only if the caller said one; leave out to use the calling "
                "number.",
            },
            "no_callback_number": {
                "type": "boolean",
                "description": "True only when the calling number is withheld and the caller has no number to give.",
            },
        },
        ["message"],
    ),
    _tool(
        "check_availability",
        "Stock of a product, optionally in one colour and/or size, with restock dates when out of stock.",
        {
            "product": {"type": "string", "description": "The product as the caller named it."},
            "color": {"type": "string"},
            "size": {"type": "string"},
        },
        ["product"],
    ),
    _tool(
        "store_policies",
        "The shop's hours, shipping, return and refund policies, and answers to common questions.",
        {"question": {"type": "string", "description": "The caller's question, to pick the matching FAQ answer."}},
        [],
    ),
    _tool(
        "transfer_to_human",
        "Transfer the call to a person on the shop's team. Outside opening hours (or with no one to take calls) it "
        "does not transfer and says so: then offer to take a message with leave_message.",
        {},
        [],
    ),
    _tool("end_call", "Hang up after your reply (say goodbye in it). Only when the caller is done.", {}, []),
]

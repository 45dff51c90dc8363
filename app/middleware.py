"""Per-request context: the request id, echoed or generated, on every response."""

from __future__ import annotations

import re
import uuid
from typing import Any

from litestar.datastructures import MutableScopeHeaders

REQUEST_ID_HEADER = "X-Request-Id"
_VALID_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def request_id(scope: Any) -> str:
    """The request's id: a well-formed incoming ``X-Request-Id`` or a new one, cached in scope."""
    state = scope.setdefault("state", {})
    rid = state.get("request_id")
    if rid is None:
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id":
                candidate = value.decode("latin-1")
                if _VALID_ID.fullmatch(candidate):
                    rid = candidate
                break
        rid = rid or uuid.uuid4().hex
        state["request_id"] = rid
    return rid


async def add_request_id(message: Any, scope: Any) -> None:
    """A Litestar ``before_send`` hook: runs for every response, unknown routes included."""
    if message["type"] == "http.response.start" and scope.get("type") == "http":
        MutableScopeHeaders.from_message(message)[REQUEST_ID_HEADER] = request_id(scope)

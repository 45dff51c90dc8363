"""Headers on every response: the request id (echoed or generated) and the deployed model id."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.datastructures import MutableScopeHeaders

REQUEST_ID_HEADER = "X-Request-Id"
DEPLOYED_MODEL_HEADER = "X-Deployed-Model-Id"
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


def identify(deployed_model_id: str) -> Callable[[Any, Any], Awaitable[None]]:
    """A Litestar ``before_send`` hook: runs for every response, unknown routes and errors included.

    Vertex does not say which deployed model answered an ``/invoke`` call, so the server does.
    """

    async def before_send(message: Any, scope: Any) -> None:
        if message["type"] == "http.response.start" and scope.get("type") == "http":
            headers = MutableScopeHeaders.from_message(message)
            headers[REQUEST_ID_HEADER] = request_id(scope)
            headers[DEPLOYED_MODEL_HEADER] = deployed_model_id

    return before_send

"""Headers on every response (the request id, echoed or generated, the deployed model id and
the replica's), and one log line per request."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.datastructures import MutableScopeHeaders
from litestar.types import ASGIApp, Receive, Scope, Send

from app.logs import REQUEST_ID
from client.schema import parse_server_timing

REQUEST_ID_HEADER = "X-Request-Id"
DEPLOYED_MODEL_HEADER = "X-Deployed-Model-Id"
REPLICA_HEADER = "X-Replica-Id"
_VALID_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
access_log = logging.getLogger("app.access")


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


def identify(deployed_model_id: str, replica: str) -> Callable[[Any, Any], Awaitable[None]]:
    """A Litestar ``before_send`` hook: runs for every response, unknown routes and errors included.

    Vertex does not say which deployed model (nor which of its replicas) answered an ``/invoke``
    call, so the server does.
    """

    async def before_send(message: Any, scope: Any) -> None:
        if message["type"] == "http.response.start" and scope.get("type") == "http":
            headers = MutableScopeHeaders.from_message(message)
            headers[REQUEST_ID_HEADER] = request_id(scope)
            headers[DEPLOYED_MODEL_HEADER] = deployed_model_id
            headers[REPLICA_HEADER] = replica

    return before_send


# Routes polled by machines (Vertex's health checks, a Prometheus scraper) are logged at DEBUG,
# so they do not drown the request lines.
_QUIET_PATHS = frozenset({"/metrics"})


def log_requests(app: ASGIApp, health_route: str, deployed_model_id: str) -> ASGIApp:
    """Wrap the whole ASGI app (unknown routes included): one log line per HTTP request.

    The line is written when the response is done (for ``/stream``, when the stream ends),
    with Cloud Logging's ``httpRequest`` fields, the request id (also set in
    :data:`app.logs.REQUEST_ID` while the request runs, so every line it logs carries it), the
    model and version that answered, the deployed model id and the ``Server-Timing`` figures.
    A response that never finished (the client went away) is marked ``"completed": false``.
    """
    quiet = _QUIET_PATHS | {health_route}

    async def logged(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = request_id(scope)
        token = REQUEST_ID.set(rid)
        seen: dict[str, Any] = {"status": 0, "size": 0, "done": False, "headers": {}}

        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                seen["headers"] = {
                    k.decode("latin-1").lower(): v.decode("latin-1")
                    for k, v in message.get("headers", ())
                }
            elif message["type"] == "http.response.body":
                seen["size"] += len(message.get("body", b""))
                seen["done"] = not message.get("more_body", False)
            await send(message)

        try:
            await app(scope, receive, watch)
        except BaseException:
            seen["status"] = seen["status"] or 500
            raise
        finally:
            _log_request(scope, seen, time.perf_counter() - started, quiet, deployed_model_id)
            REQUEST_ID.reset(token)

    return logged


def _log_request(
    scope: Any, seen: dict[str, Any], seconds: float, quiet: frozenset[str], deployed: str
) -> None:
    status, headers, path = seen["status"], seen["headers"], scope.get("path", "")
    request_headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", ())}
    http: dict[str, Any] = {
        "requestMethod": scope.get("method", ""),
        "requestUrl": path,
        "status": status,
        "responseSize": str(seen["size"]),
        "latency": f"{seconds:.6f}s",
        "protocol": f"HTTP/{scope.get('http_version', '1.1')}",
    }
    if size := request_headers.get("content-length"):
        http["requestSize"] = size.decode("latin-1")
    if agent := request_headers.get("user-agent"):
        http["userAgent"] = agent.decode("latin-1", "replace")
    if client := scope.get("client"):
        http["remoteIp"] = client[0]
    fields: dict[str, Any] = {"httpRequest": http, "deployed_model_id": deployed}
    if model := headers.get("x-model-name"):
        fields["model"] = model
        fields["model_version"] = headers.get("x-model-version")
    if timing := headers.get("server-timing"):
        fields["timings_ms"] = parse_server_timing(timing)
    if not seen["done"]:
        fields["completed"] = False
    if path in quiet:
        level = logging.DEBUG  # 503 while loading included: the registry logs its own failures
    elif status >= 500:
        level = logging.ERROR
    elif status >= 400 or not seen["done"]:
        level = logging.WARNING
    else:
        level = logging.INFO
    access_log.log(
        level,
        "%s %s %s %.1f ms",
        http["requestMethod"],
        path,
        status or "-",
        seconds * 1000,
        extra=fields,
    )

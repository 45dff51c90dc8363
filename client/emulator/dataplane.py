"""The dedicated endpoint's HTTPS data plane: ``/invoke/{path}`` proxied to a deployed model.

A raw ASGI app rather than a framework route, because a proxy needs what frameworks hide: the
undecoded path and query, the body read with a hard size limit, the response relayed chunk by
chunk as it arrives (SSE), and the client's disconnect noticed while streaming so that the
upstream request is closed and the server stops its work.

Paths (as ``Endpoint.invoke`` builds them)::

    POST /v1/projects/P/locations/L/endpoints/E/invoke/{path}                    (traffic split)
    POST /v1/projects/P/locations/L/endpoints/E/deployedModels/D/invoke/{path}   (pinned)

The deployed model receives ``POST /{path}?{query}`` with the caller's headers, minus ``Host``,
``Authorization``, ``Content-Length`` and hop-by-hop ones.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import httpx

from client.emulator.processes import Fleet, ModelServer
from client.emulator.resources import ApiError, Store

log = logging.getLogger("client.emulator")

# Vertex's payload limit for dedicated endpoints is 10 MB; the emulator reads it as 10 MiB.
MAX_BODY_BYTES = 10 * 1024 * 1024
INVOKE = re.compile(
    r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/endpoints/(?P<endpoint>[^/:]+)"
    r"(?:/deployedModels/(?P<deployed>[^/:]+))?(?P<rest>.*)"
)
# Verbs Vertex serves on endpoints; a model with invokeRoutePrefix disables them.
PREDICT_VERBS = {
    "predict",
    "rawPredict",
    "streamRawPredict",
    "directPredict",
    "directRawPredict",
    "streamDirectPredict",
    "streamDirectRawPredict",
    "serverStreamingPredict",
    "streamingPredict",
    "explain",
    "generateContent",
    "streamGenerateContent",
}
HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
}
DROP_REQUEST = HOP_BY_HOP | {b"host", b"authorization", b"content-length", b"expect"}
DROP_RESPONSE = HOP_BY_HOP | {b"date", b"server"}  # uvicorn writes its own


class DataPlane:
    """The ASGI app. ``client`` is shared by all requests (its pool reaches every server)."""

    def __init__(
        self,
        store: Store,
        fleet: Fleet,
        client: httpx.AsyncClient,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.store, self.fleet, self.client = store, fleet, client
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            server, path = self._route(scope)
            body = await self._read_body(scope, receive)
            if body is None:
                return  # the client went away while sending
            await self._forward(scope, receive, send, server, path, body)
        except ApiError as exc:
            await _send_error(send, exc)

    def _route(self, scope: dict[str, Any]) -> tuple[ModelServer, str]:
        """The target server and the path (with query) to send it, or an :class:`ApiError`."""
        raw = scope.get("raw_path") or scope["path"].encode()
        raw_path = raw.decode("latin-1").partition("?")[0]
        match = INVOKE.fullmatch(raw_path)
        if match is None:
            raise ApiError.not_found(
                f"{raw_path} is not a data-plane path: use POST /v1/projects/P/locations/L/"
                "endpoints/E[/deployedModels/D]/invoke/<path>"
            )
        self.store.check_parent(match["project"], match["location"])
        endpoint_id, rest = match["endpoint"], match["rest"]
        endpoint = self.store.endpoint(endpoint_id)
        if rest.startswith(":"):
            verb = rest[1:]
            if verb in PREDICT_VERBS:
                raise ApiError.precondition(
                    f"{verb} is not available: this endpoint serves a model with "
                    "invokeRoutePrefix; use /invoke/<path> (e.g. POST "
                    f"/v1/{endpoint.name}/invoke/detect)"
                )
            raise ApiError.not_found(f"unknown method :{verb} on {endpoint.name}")
        if rest in ("/invoke", "/invoke/"):
            raise ApiError.not_found(
                "the container root is not exposed through invoke: call /invoke/<path>, "
                "e.g. /invoke/detect"
            )
        if not rest.startswith("/invoke/"):
            raise ApiError.not_found(f"{raw_path} is not an invoke path: use .../invoke/<path>")
        if scope["method"] != "POST":
            raise ApiError.not_found(f"invoke serves POST only, not {scope['method']}")
        if match["deployed"] is not None:
            deployed = self.store.deployed_model(endpoint_id, match["deployed"])
        else:
            deployed = self.store.pick(endpoint_id)
        server = self.fleet.get(deployed.id)
        if server is None or not server.running:
            code = server.returncode if server else None
            raise ApiError.unavailable(
                f"deployed model {deployed.display_name} ({deployed.id}) is not running"
                + (f": its server exited with code {code}" if code is not None else "")
            )
        path = rest[len("/invoke") :]
        query = scope.get("query_string", b"").decode("latin-1")
        return server, path + (f"?{query}" if query else "")

    async def _read_body(self, scope: dict[str, Any], receive: Any) -> bytes | None:
        """The whole body, refusing more than ``max_body_bytes`` before reading past the limit."""
        limit = self.max_body_bytes
        too_large = ApiError(
            413,
            "INVALID_ARGUMENT",
            f"request body larger than {limit} bytes: dedicated endpoints accept at most 10 MB "
            f"({limit} bytes here)",
        )
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise ApiError.invalid(f"bad Content-Length {value!r}") from None
                if declared > limit:
                    raise too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _forward(
        self,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        server: ModelServer,
        path: str,
        body: bytes,
    ) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k not in DROP_REQUEST]
        request = self.client.build_request(
            "POST", server.url + path, headers=headers, content=body
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise ApiError(
                504, "DEADLINE_EXCEEDED", f"deployed model {server.name} did not answer: {exc!r}"
            ) from None
        except httpx.TransportError as exc:
            raise ApiError.unavailable(
                f"deployed model {server.name} ({server.deployed_model_id}) is not reachable: "
                f"{exc!r}"
            ) from None
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k.lower(), v)
                        for k, v in response.headers.raw
                        if k.lower() not in DROP_RESPONSE
                    ],
                }
            )
            await _relay(response, receive, send, server.name)
        finally:
            await response.aclose()


async def _relay(response: httpx.Response, receive: Any, send: Any, name: str) -> None:
    """Send the upstream body as it arrives; stop (closing upstream) if the client disconnects."""

    async def pump() -> None:
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError as exc:
            # Too late for an error status: end without completing, so the client sees a cut.
            log.warning("the answer from %s broke off: %r", name, exc)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    pumping = asyncio.ensure_future(pump())
    watching = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({pumping, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        client_gone = not pumping.done()
        for task in (pumping, watching):
            task.cancel()
        outcome, _ = await asyncio.gather(pumping, watching, return_exceptions=True)
    if isinstance(outcome, Exception):
        raise outcome
    if client_gone:
        log.info("client disconnected while %s was answering: upstream request closed", name)


async def _send_error(send: Any, error: ApiError) -> None:
    body = error.body()
    await send(
        {
            "type": "http.response.start",
            "status": error.code,
            "headers": [
                (b"content-type", b"application/json; charset=UTF-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})

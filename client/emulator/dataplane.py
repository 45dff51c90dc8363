"""The dedicated endpoint's HTTPS data plane: ``/invoke/{path}`` proxied to a deployed model.

A raw ASGI app rather than a framework route, because a proxy needs what frameworks hide: the
undecoded path and query, the body read with a hard size limit, the response relayed chunk by
chunk as it arrives (SSE), and the client's disconnect noticed while streaming so that the
upstream request is closed and the server stops its work.

Paths (as ``Endpoint.invoke`` builds them)::

    POST /v1/projects/P/locations/L/endpoints/E/invoke/{path}                    (traffic split)
    POST /v1/projects/P/locations/L/endpoints/E/deployedModels/D/invoke/{path}   (pinned)

The deployed model receives ``POST /{path}?{query}`` with the caller's headers, minus
``Host``, ``Content-Length``, the credentials (``Authorization``, ``X-Goog-Api-Key``: Vertex
consumes them), ``Cookie`` (not documented to reach a container: the emulator chooses not to
forward it), hop-by-hop headers and those a ``Connection`` header names. Paths with ``.`` or
``..`` segments (``%2e`` too) are refused: an HTTP client would resolve them, and
``/invoke/x/..`` would reach the container root, which invoke never exposes.

Each request has the endpoint's ``inference_timeout`` in all (as on Vertex): 504 if no answer
has started by then; a streamed answer still running then is cut.

The request goes to one replica of the chosen deployed model (:meth:`ReplicaSet.pick`: the ready
one with the fewest requests in flight). One that cannot be reached is taken out of rotation
and the request goes to another (its body is buffered); a replica that goes away after it took
the request (the process died mid-way) is 503 ``UNAVAILABLE``, which the client retries. With no
ready replica the answer is 503; with every ready replica at ``replica_capacity`` requests, 429
``RESOURCE_EXHAUSTED`` (the words Vertex answers a saturated endpoint with).

Errors are Google's JSON shape. A body over the limit is 400 ``INVALID_ARGUMENT`` "Request
payload size exceeds the limit: N bytes.": the answer Google's API front end gives (seen in
public reports for Vertex AI's online prediction and for other Google APIs; Vertex does not
document the dedicated endpoint's).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, NamedTuple
from urllib.parse import unquote

import httpx

from client.emulator.fleet import Fleet, Replica, ReplicaSet
from client.emulator.resources import ApiError, Store

log = logging.getLogger("client.emulator")

# Vertex documents 10 MB for a dedicated endpoint's payload, not 10 MiB: the emulator takes
# 10,000,000 bytes, so it is never laxer than the service (the server's own default limit,
# SERVE_MAX_BODY_BYTES, is 10 MiB: a body the emulator passes, the server accepts).
MAX_BODY_BYTES = 10_000_000
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
DROP_REQUEST = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"expect",
    b"authorization",
    b"x-goog-api-key",
    b"cookie",
}
DROP_RESPONSE = HOP_BY_HOP | {b"date", b"server"}  # uvicorn writes its own


class Target(NamedTuple):
    """Where a request goes: a deployed model's replicas, the path (with query) it gets, and the
    endpoint's inference timeout."""

    replicas: ReplicaSet
    path: str
    timeout: float


class DataPlane:
    """The ASGI app. ``client`` is shared by all requests (its pool reaches every server)."""

    def __init__(self, store: Store, fleet: Fleet, client: httpx.AsyncClient) -> None:
        self.store, self.fleet, self.client = store, fleet, client

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        answered = False

        async def sending(message: dict[str, Any]) -> None:
            nonlocal answered
            answered = True
            await send(message)

        try:
            await self._handle(scope, receive, sending)
        except Exception as exc:  # a bug here: still Google's error shape, and a log
            log.exception("the data plane failed on %s", scope.get("path"))
            if not answered:
                await _send_error(send, ApiError.internal(f"the emulator failed: {exc!r}"))

    async def _handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = asyncio.get_running_loop().time()
        try:
            target = self._route(scope)
            deadline = started + target.timeout
            try:
                async with asyncio.timeout_at(deadline):
                    body = await _read_body(scope, receive)
            except TimeoutError:
                raise _deadline_exceeded("the request body did not arrive", target) from None
            if body is None:
                return  # the client went away while sending
            await self._forward(scope, receive, send, target, body, deadline)
        except ApiError as exc:
            await _send_error(send, exc)

    def _route(self, scope: dict[str, Any]) -> Target:
        """Where the request goes, or an :class:`ApiError`."""
        raw = scope.get("raw_path") or scope["path"].encode()
        raw_path = raw.decode("latin-1").partition("?")[0]
        if _has_dot_segment(raw_path):
            raise ApiError.not_found(
                f"{raw_path} has a '.' or '..' segment: give the path without them"
            )
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
        path = rest[len("/invoke") :]
        if not rest.startswith("/invoke") or (path and not path.startswith("/")):
            raise ApiError.not_found(f"{raw_path} is not an invoke path: use .../invoke/<path>")
        if not path.strip("/"):  # /invoke, /invoke/, /invoke//...
            raise ApiError.not_found(
                "the container root is not exposed through invoke: call /invoke/<path>, "
                "e.g. /invoke/detect"
            )
        if scope["method"] != "POST":
            raise ApiError.not_found(f"invoke serves POST only, not {scope['method']}")
        if match["deployed"] is not None:
            deployed = self.store.deployed_model(endpoint_id, match["deployed"])
        else:
            deployed = self.store.pick(endpoint_id)
        model = self.store.models.get(deployed.model.rsplit("/", 1)[-1].partition("@")[0])
        if model is not None and model.container_spec.invoke_route_prefix != "/*":
            raise ApiError.invalid(
                f"deployed model {deployed.display_name} ({deployed.id}) serves {model.name}, "
                'which was uploaded without invokeRoutePrefix "/*": invoke does not reach it '
                "(upload the model with serving_container_invoke_route_prefix='/*')"
            )
        replicas = self.fleet.get(deployed.id)
        if replicas is None:
            raise ApiError.unavailable(
                f"deployed model {deployed.display_name} ({deployed.id}) has no replicas"
            )
        query = scope.get("query_string", b"").decode("latin-1")
        return Target(replicas, path + (f"?{query}" if query else ""), endpoint.inference_timeout_s)

    async def _forward(
        self,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        target: Target,
        body: bytes,
        deadline: float,
    ) -> None:
        """Send upstream and relay the answer as it arrives, racing the caller's disconnect
        (from the start: a caller that hangs up before any answer closes the upstream request
        too, and the server can stop its work) and the deadline."""
        upstream_headers = _headers(scope["headers"], DROP_REQUEST)
        started = finished = False
        name = target.replicas.name

        async def exchange() -> None:
            nonlocal started, finished
            replica, response = await self._send(target, upstream_headers, body)
            try:
                headers = _headers(response.headers.raw, DROP_RESPONSE)
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status_code,
                        "headers": headers,
                    }
                )
                started = True
                try:
                    async for chunk in response.aiter_raw():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except httpx.HTTPError as exc:
                    # Too late for an error status: end without completing, the client sees a cut.
                    log.warning("the answer from %s broke off: %r", replica.id, exc)
                    return
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                finished = True
            finally:
                await response.aclose()
                target.replicas.end(replica)

        loop = asyncio.get_running_loop()
        exchanging = asyncio.ensure_future(exchange())
        watching = asyncio.ensure_future(_disconnected(receive))
        try:
            done, _ = await asyncio.wait(
                {exchanging, watching},
                timeout=max(0.0, deadline - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for task in (exchanging, watching):
                task.cancel()
            await asyncio.gather(exchanging, watching, return_exceptions=True)
        if exchanging in done:
            exchanging.result()  # raises the ApiError of a request that got no answer
        elif finished:
            pass  # answered; the "disconnect" was the end of the exchange
        elif watching in done:
            log.info("the caller left before %s finished: upstream request closed", name)
        elif not started:
            raise _deadline_exceeded(f"deployed model {name} did not answer", target)
        else:
            log.warning("cut the answer of %s at the endpoint's inference timeout", name)

    async def _send(
        self, target: Target, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[Replica, httpx.Response]:
        """A replica and its response (headers read, body not; the request counted on it until
        :meth:`ReplicaSet.end`), or an :class:`ApiError`.

        A replica that refuses the connection is out of rotation and the next one is tried. A
        connection that fails before any answer (closed, reset) on a live replica (a pooled
        keep-alive connection the server closed just then) is tried once more on a fresh one; on
        a replica whose process is gone it is a 503: it may have started the work.
        """
        replicas = target.replicas
        tried: list[Replica] = []
        while (replica := replicas.pick(tried)) is not None:
            tried.append(replica)
            request = self.client.build_request(
                "POST", replica.process.url + target.path, headers=headers, content=body
            )
            replicas.begin(replica)
            try:
                for attempt in (1, 2):
                    try:
                        return replica, await self.client.send(request, stream=True)
                    except (httpx.ConnectError, httpx.ConnectTimeout):
                        raise
                    except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                        if attempt == 2 or not replica.alive:
                            raise ApiError.unavailable(
                                f"{replica.id} of deployed model {replicas.name} went away "
                                f"before it answered: {exc!r}"
                            ) from None
                        log.info("retrying the request to %s once: %r", replica.id, exc)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                log.warning("%s cannot be reached (%r): trying another replica", replica.id, exc)
                replicas.end(replica)
                replicas.unreachable(replica)
            except httpx.TimeoutException as exc:
                replicas.end(replica)
                raise ApiError(
                    504,
                    "DEADLINE_EXCEEDED",
                    f"{replica.id} of {replicas.name} did not answer: {exc!r}",
                ) from None
            except BaseException:
                replicas.end(replica)
                raise
        if replicas.saturated():
            raise ApiError(
                429,
                "RESOURCE_EXHAUSTED",
                f"Rate of traffic exceeds capacity. Ramp your traffic up more slowly. (deployed "
                f"model {replicas.name}: every ready replica has {replicas.policy.replica_capacity} "
                "requests in flight)",
            )
        states = ", ".join(f"{r.id} {r.state}" for r in replicas.replicas) or "none"
        raise ApiError.unavailable(
            f"no replica of deployed model {replicas.name} ({replicas.deployed_model_id}) can "
            f"take the request now (replicas: {states}); retry shortly"
        )


def _has_dot_segment(raw_path: str) -> bool:
    """Whether a segment is ``.`` or ``..``, percent-encoded (``%2e``, ``%2F``) or not."""
    return any(
        part in (".", "..")
        for segment in raw_path.split("/")
        for part in unquote(segment).split("/")
    )


def _headers(raw: Any, drop: set[bytes]) -> list[tuple[bytes, bytes]]:
    """``raw`` (name, value) pairs, lower-cased, without ``drop`` and without the headers a
    ``Connection`` header names (hop-by-hop by declaration, RFC 9110 7.6.1)."""
    named = {
        token.strip().lower()
        for name, value in raw
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    return [(k.lower(), v) for k, v in raw if k.lower() not in drop and k.lower() not in named]


async def _read_body(scope: dict[str, Any], receive: Any) -> bytes | None:
    """The whole body, refusing more than :data:`MAX_BODY_BYTES` before reading past the limit."""
    limit = MAX_BODY_BYTES
    too_large = ApiError.invalid(
        f"Request payload size exceeds the limit: {limit} bytes. (Dedicated endpoints accept at "
        "most 10 MB a request.)"
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


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _deadline_exceeded(what: str, target: Target) -> ApiError:
    return ApiError(
        504,
        "DEADLINE_EXCEEDED",
        f"{what} within the endpoint's inference timeout ({target.timeout:g} s)",
    )


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

"""A tiny stand-in model server for the emulator tests: starts in a second, no YOLO.

Run as a deployed model's command (``python tests/emulator_child.py``); it reads the Vertex
environment like the real server. Routes (all answer ``X-Deployed-Model-Id``):

- ``GET {AIP_HEALTH_ROUTE}``: 200.
- ``POST /``: ``{"root": true}`` (invoke must never reach it).
- ``POST /echo``: what it received (method, path, query, headers, body size, and the
  ``AIP_*``/``CHILD_*``/``SERVE_*`` env).
- ``POST /status/{code}``: that status, with ``Retry-After`` and ``Server-Timing`` headers.
- ``POST /hop``: 200 with ``Connection: x-hop-back`` and ``X-Hop-Back`` (a proxy drops both).
- ``POST /slow?delay=S``: answers after S seconds; a client that leaves before appends
  ``slow-closed`` to ``CHILD_EVENTS``.
- ``POST /sse?n=N&delay=S``: N SSE events, S seconds apart (LF separators); with ``gate=PATH``,
  event ``i`` (after the first) waits for the file ``PATH.i`` to exist instead: the test lets
  each event go once it has received the one before.
- ``POST /forever``: an event every 0.1 s until the client goes away; then appends ``closed`` to
  the file named by ``CHILD_EVENTS``.

``CHILD_FAIL=1`` makes it exit at once with status 3 (a server that cannot start).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs

import uvicorn

DEPLOYED = os.environ.get("AIP_DEPLOYED_MODEL_ID", "unknown").encode()
HEALTH = os.environ.get("AIP_HEALTH_ROUTE", "/health")


def headers(content_type: bytes, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", content_type), (b"x-deployed-model-id", DEPLOYED), *extra]


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    path, query = scope["path"], parse_qs(scope["query_string"].decode())
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)

    async def answer(status: int, payload: object, *extra: tuple[bytes, bytes]) -> None:
        data = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": headers(b"application/json", *extra),
            }
        )
        await send({"type": "http.response.body", "body": data})

    if path == HEALTH:
        await answer(200, {"status": "ok"})
    elif path == "/":
        await answer(200, {"root": True})
    elif path == "/echo":
        env = {k: v for k, v in os.environ.items() if k.startswith(("AIP_", "CHILD_", "SERVE_"))}
        await answer(
            200,
            {
                "method": scope["method"],
                "path": path,
                "raw_path": scope["raw_path"].decode(),
                "query": scope["query_string"].decode(),
                "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
                "body_size": len(body),
                "env": env,
            },
            (b"x-request-id", dict(scope["headers"]).get(b"x-request-id", b"none")),
        )
    elif path.startswith("/status/"):
        await answer(
            int(path.rsplit("/", 1)[1]),
            {"status": path},
            (b"retry-after", b"7"),
            (b"server-timing", b"inference;dur=1.5"),
        )
    elif path == "/hop":
        await answer(200, {"hop": True}, (b"connection", b"x-hop-back"), (b"x-hop-back", b"1"))
    elif path == "/slow":
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait_for(asyncio.shield(gone), float(query["delay"][0]))
        except TimeoutError:
            await answer(200, {"slow": True})
        else:
            with Path(os.environ["CHILD_EVENTS"]).open("a") as out:
                out.write("slow-closed\n")
        finally:
            gone.cancel()
    elif path in ("/sse", "/forever"):
        await stream(path, query, receive, send)
    else:
        await answer(404, {"detail": f"no route {path}"})


async def stream(path: str, query: dict, receive, send) -> None:
    n = int(query.get("n", ["5"])[0]) if path == "/sse" else None
    delay = float(query.get("delay", ["0.1"])[0])
    gate = query.get("gate", [None])[0]
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": headers(b"text/event-stream", (b"cache-control", b"no-cache")),
        }
    )
    gone = asyncio.ensure_future(_disconnected(receive))
    i = 0
    try:
        while n is None or i < n:
            if i and gate:
                while not Path(f"{gate}.{i}").exists() and not gone.done():
                    await asyncio.sleep(0.01)
            elif i:
                await asyncio.sleep(delay)
            if gone.done():
                with Path(os.environ["CHILD_EVENTS"]).open("a") as out:
                    out.write("closed\n")
                return
            event = json.dumps({"i": i, "t": time.time()})
            await send(
                {
                    "type": "http.response.body",
                    "body": f"event: tick\ndata: {event}\n\n".encode(),
                    "more_body": True,
                }
            )
            i += 1
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        gone.cancel()


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


if __name__ == "__main__":
    if os.environ.get("CHILD_FAIL") == "1":
        print("boom: CHILD_FAIL=1 asked this server not to start", file=sys.stderr)
        raise SystemExit(3)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(os.environ["AIP_HTTP_PORT"]),
        log_level="warning",
        lifespan="off",
    )

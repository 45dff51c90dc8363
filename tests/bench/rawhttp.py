"""A minimal HTTP/1.1 keep-alive client for the load benchmarks (what ``wrk`` does).

The benchmarks measure servers, not clients: on the project's 2 cores, httpx's own work for a
request (about 1.3 ms of CPU, measured with ``resource.getrusage`` over 300 requests) runs on
the same cores as the server and sits in the critical path at concurrency 1. Here a request is
prebuilt bytes written to one of ``concurrency`` open connections and its response read by
``Content-Length`` (about 0.1 ms). Every server measured gets the same client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from client.bench import Reply


def request_bytes(url: str, path: str, body: bytes, content_type: str) -> bytes:
    host = urlsplit(url).netloc
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connections:
    """``count`` keep-alive connections to ``url``; :meth:`sender` makes the bench's ``send``."""

    def __init__(self, url: str, count: int) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.count = count
        self.free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )

    async def __aenter__(self) -> Connections:
        for _ in range(self.count):
            self.free.put_nowait(await asyncio.open_connection(self.host, self.port))
        return self

    async def __aexit__(self, *exc: object) -> None:
        while not self.free.empty():
            _, writer = self.free.get_nowait()
            writer.close()

    def sender(self, request: bytes) -> Callable[[], Awaitable[Reply]]:
        async def send() -> Reply:
            reader, writer = await self.free.get()
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        key, value = line.split(":", 1)
                        headers[key.strip().lower()] = value.strip()
                if "content-length" not in headers:  # chunked: not what these servers send
                    raise RuntimeError(f"no Content-Length in the response: {lines[0]}")
                body = await reader.readexactly(int(headers["content-length"]))
            except BaseException:
                writer.close()
                self.free.put_nowait(await asyncio.open_connection(self.host, self.port))
                raise
            self.free.put_nowait((reader, writer))
            error = None if status == 200 else f"HTTP {status}: {body[:300]!r}"
            return Reply(status, headers, error)

        return send

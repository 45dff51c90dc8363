"""Server-Sent Events: lines to events, and ``/stream`` events to the contract's Structs.

Why a parser of our own: the SDK's ``Endpoint.invoke(stream=True)`` hands us *lines*
(``requests``' ``iter_lines``, endings stripped, ``b''`` for the blank separator), not an HTTP
response, so the kept SSE clients (httpx-sse, sseclient-py) which read a response object do
not fit, and httpx-sse's line decoder is private API. The parser below follows the WHATWG
"interpreting an event stream" algorithm (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation)
with one deliberate deviation: a blank line while the data buffer is empty keeps the pending
event name instead of clearing it. ``requests``' ``iter_lines`` yields a stray ``b''`` when a
read boundary falls between the ``\\r`` and ``\\n`` of a CRLF, so ``event: frame\\r|\\n``
``data: ...`` would otherwise lose its name (the project notes, vertex-invoke.md, measured it). An event
with no data is still not dispatched, as the spec says.

The same decoder serves the httpx path: :class:`LineSplitter` turns byte chunks into lines
splitting on CRLF, LF and CR only (httpx's ``iter_lines`` also splits on Unicode separators).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

import msgspec

from client import errors
from client.schema import STREAM_DECODERS, Problem, StreamEnd, StreamFrame, StreamStart

StreamEvent = StreamStart | StreamFrame | StreamEnd

SSE_FIELDS = frozenset({"event", "data", "id", "retry"})


class ServerSentEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One dispatched event."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Feed it lines (without their endings); it returns an event when a blank line ends one.

    Example:
        >>> d = SSEDecoder()
        >>> [d.decode(x) for x in ["event: start", "data: {}", ""]][-1].event
        'start'
    """

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._last_id: str | None = None
        self._retry: int | None = None
        self._first = True

    def decode(self, line: str | bytes) -> ServerSentEvent | None:
        if isinstance(line, bytes):
            line = line.decode("utf-8", "replace")
        if self._first:
            self._first = False
            line = line.removeprefix("\ufeff")
        if not line:
            if not self._data:
                # Spec: reset the event type. Deviation (module docstring): keep it, so a
                # stray blank line of the CRLF pitfall does not lose the event's name.
                return None
            event = ServerSentEvent(
                event=self._event or "message",
                data="\n".join(self._data),
                id=self._last_id,
                retry=self._retry,
            )
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None  # a comment (the server's ": ping" keep-alive)
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            if "\0" not in value:
                self._last_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None


def looks_like_sse(line: str | bytes) -> bool:
    """Whether a non-blank first line can start an event stream (and not, say, JSON or HTML)."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    line = line.removeprefix("\ufeff")
    return line.startswith(":") or line.partition(":")[0] in SSE_FIELDS


#: the longest line :class:`LineSplitter` keeps (16 MB, far more than any event of the
#: contract): an unterminated line past it is not an event stream this client reads
MAX_LINE_BYTES = 16 * 1024 * 1024


class LineSplitter:
    """Byte chunks to lines, splitting on ``\\r\\n``, ``\\n`` and ``\\r`` (endings removed).

    An unterminated line is kept in pieces and joined once it ends (linear, however it is
    chunked); one longer than ``max_line`` bytes raises :class:`~client.errors.StreamError`.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._pending = b""
        self._pieces: list[bytes] = []  # chunks of the unterminated line after _pending
        self._size = 0
        self.max_line = max_line

    def feed(self, chunk: bytes) -> list[bytes]:
        if not chunk:
            return []
        goes_on = b"\n" not in chunk and b"\r" not in chunk
        if goes_on and (self._pending or self._pieces) and not self._pending.endswith(b"\r"):
            self._pieces.append(chunk)  # the line goes on: kept without a copy
            self._grow(len(chunk))
            return []
        data = b"".join([self._pending, *self._pieces, chunk])
        self._pieces, self._size = [], 0
        lines = data.splitlines(keepends=True)
        # Keep an unterminated last line, and a trailing "\r" (its "\n" may be next).
        if lines and (lines[-1][-1:] not in (b"\n", b"\r") or lines[-1].endswith(b"\r")):
            self._pending = lines.pop()
        else:
            self._pending = b""
        self._grow(len(self._pending))
        out = [_strip_ending(x) for x in lines]
        for line in out:
            if len(line) > self.max_line:
                self._too_long(len(line))
        return out

    def flush(self) -> list[bytes]:
        pending = b"".join([self._pending, *self._pieces])
        self._pending, self._pieces, self._size = b"", [], 0
        return [_strip_ending(pending)] if pending else []

    def _grow(self, size: int) -> None:
        self._size += size
        if self._size > self.max_line:
            self._too_long(self._size)

    def _too_long(self, size: int) -> None:
        self._pending, self._pieces, self._size = b"", [], 0
        raise errors.StreamError(
            f"a line of the event stream passed {self.max_line} bytes ({size} read without a "
            "line ending): no event is that long, so this is not an event stream to read"
        )


def _strip_ending(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return line[:-2]
    return line[:-1] if line[-1:] in (b"\n", b"\r") else line


def iter_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines of a byte stream."""
    splitter = LineSplitter()
    for chunk in chunks:
        yield from splitter.feed(chunk)
    yield from splitter.flush()


async def aiter_lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Lines of an async byte stream."""
    splitter = LineSplitter()
    async for chunk in chunks:
        for line in splitter.feed(chunk):
            yield line
    for line in splitter.flush():
        yield line


def iter_sse(lines: Iterable[str | bytes]) -> Iterator[ServerSentEvent]:
    """Events of a stream of lines."""
    decoder = SSEDecoder()
    for line in lines:
        if (event := decoder.decode(line)) is not None:
            yield event


class StreamDecoder:
    """``/stream`` lines to typed events, enforcing the contract.

    * the first non-blank line must look like SSE; otherwise the whole body is an error
      document (the SDK hides the status of a stream), raised as the matching
      :class:`~client.errors.APIError` by :meth:`close`;
    * ``start``/``frame``/``end`` decode strictly into their Structs; an ``error`` event raises
      :class:`~client.errors.StreamError` with its :class:`~client.schema.Problem`, or, before
      ``start`` (nothing streamed yet), the :class:`~client.errors.APIError` for its status
      (so a 503 there is retried like any call's);
    * the byte stream ending before ``end`` raises :class:`~client.errors.StreamError`.
    Unknown event names are skipped (forward compatibility).
    """

    def __init__(
        self,
        *,
        status: int | None = None,
        request_id: str | None = None,
        pinned: str | None = None,
    ) -> None:
        self._sse = SSEDecoder()
        self._status = status
        self._request_id = request_id
        self._pinned = pinned  # the deployed model a routing transport sent the call to
        self._mode: str | None = None  # "sse" or "body" once the first line is seen
        self._body: list[bytes] = []
        self.last_event_id: str | None = None
        self.started = False
        self.ended = False

    def feed(self, line: str | bytes) -> StreamEvent | None:
        """One line in; the typed event it completes, if any. A line over
        :data:`MAX_LINE_BYTES` (the SDK's ``requests`` joins lines itself) fails as
        :class:`LineSplitter` does."""
        raw = line.encode() if isinstance(line, str) else line
        if len(raw) > MAX_LINE_BYTES:
            raise errors.StreamError(
                f"a line of the event stream passed {MAX_LINE_BYTES} bytes ({len(raw)}): no "
                "event is that long, so this is not an event stream to read",
                last_event_id=self.last_event_id,
            )
        if self._mode is None:
            if not raw.strip():
                return None
            self._mode = "sse" if looks_like_sse(raw) else "body"
        if self._mode == "body":
            self._body.append(raw)
            return None
        if self.ended:
            return None
        event = self._sse.decode(raw)
        return None if event is None else self._typed(event)

    def _typed(self, event: ServerSentEvent) -> StreamEvent | None:
        self.last_event_id = event.id
        decode = STREAM_DECODERS.get(event.event)
        if decode is None:
            return None
        try:
            value: Any = decode(event.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise errors.StreamError(
                f"malformed {event.event!r} event: {exc}", last_event_id=event.id
            ) from None
        if isinstance(value, Problem):
            if not self.started:
                raise errors.api_error(
                    event.data.encode(), status=None, request_id=self._request_id, where="/stream"
                )
            raise errors.StreamError(
                f"stream failed ({value.status} {value.code}): {value.detail}",
                problem=value,
                last_event_id=self.last_event_id,
            )
        if isinstance(value, StreamStart):
            self.started = True
        elif isinstance(value, StreamEnd):
            self.ended = True
        return value

    def close(self) -> None:
        """The byte stream ended: raise if it was an error body or was cut before ``end``."""
        if self._mode == "body":
            raise errors.api_error(
                b"\n".join(self._body),
                status=self._status if self._status and self._status >= 400 else None,
                request_id=self._request_id,
                where="/stream",
                pinned=self._pinned,
            )
        if not self.ended:
            where = "before any event" if self._mode is None else "before its end event"
            raise errors.StreamError(
                f"the stream was cut {where} (last event id {self.last_event_id})",
                last_event_id=self.last_event_id,
            )

"""Open ``/stream`` responses: :class:`Stream` and :class:`AsyncStream`, iterated for events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from client import errors
from client.schema import StreamEnd, StreamFrame, StreamStart
from client.sse import StreamDecoder, StreamEvent
from client.transports import Response


class _StreamBase:
    """What both streams share: the state, and one line's decoding step."""

    def __init__(
        self, response: Response, decoder: StreamDecoder, lines: Any, start: StreamStart
    ) -> None:
        self.start = start
        self.end: StreamEnd | None = None
        self.deployed_model_id = start.deployed_model_id
        self.request_id = response.request_id
        self._response, self._decoder, self._lines = response, decoder, lines
        self._consumed = False

    def _begin(self) -> None:
        if self._consumed:
            raise RuntimeError("a stream can be iterated once")
        self._consumed = True

    def _feed(self, line: bytes) -> StreamEvent | None:
        event = self._decoder.feed(line)
        if isinstance(event, StreamEnd):
            self.end = event
        return event

    @property
    def _done(self) -> bool:
        return self._decoder.ended

    def _broken(self, exc: Exception) -> errors.StreamError:
        last = self._decoder.last_event_id
        return errors.StreamError(f"the stream broke after event {last}: {exc}", last_event_id=last)


class Stream(_StreamBase):
    """An open ``/stream``, its ``start`` event already read.

    Iterate it for the events in order (``StreamStart``, ``StreamFrame``..., ``StreamEnd``);
    :meth:`frames` yields only the frames. ``end`` is set once the last event arrived. Use it
    as a context manager (or call :meth:`close`) to hang up early.
    """

    _lines: Iterator[bytes]

    def __iter__(self) -> Iterator[StreamEvent]:
        self._begin()
        yield self.start
        try:
            for line in self._lines:
                if (event := self._feed(line)) is not None:
                    yield event
                if self._done:
                    return
            self._decoder.close()
        except (errors.ConnectionError, errors.TimeoutError) as exc:
            raise self._broken(exc) from exc
        finally:
            self.close()

    def frames(self) -> Iterator[StreamFrame]:
        """Only the frame events."""
        for event in self:
            if isinstance(event, StreamFrame):
                yield event

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncStream(_StreamBase):
    """The asyncio twin of :class:`Stream` (``async for event in stream``)."""

    _lines: AsyncIterator[bytes]

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        self._begin()
        yield self.start
        try:
            async for line in self._lines:
                if (event := self._feed(line)) is not None:
                    yield event
                if self._done:
                    return
            self._decoder.close()
        except (errors.ConnectionError, errors.TimeoutError) as exc:
            raise self._broken(exc) from exc
        finally:
            await self.aclose()

    async def frames(self) -> AsyncIterator[StreamFrame]:
        async for event in self:
            if isinstance(event, StreamFrame):
                yield event

    async def aclose(self) -> None:
        await self._response.aclose()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

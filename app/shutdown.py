"""Graceful shutdown (Vertex sends SIGTERM on scale-down, undeploy or update).

``python -m app`` hands the signal to uvicorn, which stops accepting connections, lets requests
in flight finish for up to ``SERVE_SHUTDOWN_SECONDS``, then runs the lifespan shutdown. Two
things here do not end on their own and are told:

* ``/health`` answers 503 ``shutting-down`` from the first moment (:class:`Shutdown`, marked by
  ``python -m app``'s signal handler);
* an open ``/stream`` finishes the frame in flight, sends the frames already computed, then a
  final ``error`` event: the problem :class:`ShuttingDown` (503 ``shutting-down``), so a client
  can tell a stream cut by shutdown from a failure and send the rest again (another replica
  takes it). sse-starlette notices the signal (it hooks uvicorn's ``handle_exit``) and sets the
  stream's ``shutdown_event``; see :mod:`app.routes.stream`.
"""

from __future__ import annotations

import logging
import time

from app.errors import ServingError

log = logging.getLogger("app.shutdown")


class ShuttingDown(ServingError):
    status, code, title = 503, "shutting-down", "Shutting down"


class Shutdown:
    """Whether (and since when) the server is shutting down."""

    def __init__(self) -> None:
        self.since: float | None = None  # time.monotonic() of the signal

    @property
    def started(self) -> bool:
        return self.since is not None

    def begin(self, reason: str) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.info("shutting down (%s): no new connections; finishing requests in flight", reason)

"""Test-only launcher: ``python -m app`` whose model calls the tests can hold and break.

Run as ``python tests/instrumented_app.py`` (with the server's environment). In this process
only, Ultralytics' ``Model.predict`` (every call: the warm-up of each model at load, requests,
stream frames, one call per batch) first passes a **gate**, then a **fault** check:

* The gate lets a call through while it has permits (``None``: open, the default); with none
  left the call waits, in its inference thread, until the test gives more. So "a request is in
  flight", "the queue is full", "the model is still loading" or "a batch of 9 formed" are states
  a test sets up, not races it hopes to win on a machine of unknown speed. The test drives it
  over HTTP on a port of its own, ``TEST_GATE_PORT`` (a control server in a thread of this
  process, so it still answers while the app's listener is closed by a shutdown; ``0``: a free
  port, written to stderr as ``test gate on http://127.0.0.1:PORT``, for replicas that share
  an environment and a log each): ``GET /``
  answers ``{"permits", "waiting", "passed"}``; ``POST /?permits=N`` (or ``open``) sets the
  permits, ``?add=N`` adds to them. ``TEST_GATE_PERMITS`` sets them at start (``0``: loading
  holds at the first warm-up).
* A call whose images include one of a solid colour, :data:`POISON_RGB`, raises ``RuntimeError``:
  after decoding, every image a request can send is one Ultralytics predicts without error, so
  no request can make a real ``predict`` fail.
* ``TEST_PREDICT_DELAY_MS`` (default 0) makes every call sleep that long, in its inference
  thread, before the real predict: a deployed model measurably slower than another serving the
  same weights, whatever the machine's speed (the rollout's latency guard); and
  ``TEST_PREDICT_REPEAT`` (default 1) runs the real predict that many times per call, so it is
  slower in proportion too: a loaded machine slows it as much as the model it is compared with.

The real server has none of these hooks, and the real inference runs once a call passes.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

POISON_RGB = (1, 2, 3)


class Gate:
    """Permits for predict calls (``None``: unlimited); callers without one wait."""

    def __init__(self, permits: int | None) -> None:
        self._cond = threading.Condition()
        self.permits = permits
        self.waiting = 0
        self.passed = 0

    def enter(self) -> None:
        with self._cond:
            self.waiting += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: self.permits is None or self.permits > 0)
            if self.permits is not None:
                self.permits -= 1
            self.waiting -= 1
            self.passed += 1

    def set(self, permits: int | None) -> None:
        with self._cond:
            self.permits = permits
            self._cond.notify_all()

    def add(self, permits: int) -> None:
        """More permits (an open gate stays open)."""
        with self._cond:
            if self.permits is not None:
                self.permits += permits
            self._cond.notify_all()

    def state(self) -> dict[str, Any]:
        with self._cond:
            return {"permits": self.permits, "waiting": self.waiting, "passed": self.passed}


def serve_gate(gate: Gate, port: int) -> int:
    """The gate's control server, on ``127.0.0.1:port``, in a daemon thread; its port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.answer()

        def do_POST(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            if "add" in query:
                gate.add(int(query["add"][0]))
            else:
                permits = query.get("permits", ["open"])[0]
                gate.set(None if permits == "open" else int(permits))
            self.answer()

        def answer(self) -> None:
            body = json.dumps(gate.state()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="test-gate", daemon=True).start()
    return server.server_address[1]


def main() -> int:
    from app.offline import configure_ultralytics
    from app.threads import prepare_process

    prepare_process()  # before torch is imported, as the server does
    configure_ultralytics()
    import numpy as np
    from ultralytics.engine.model import Model

    initial = os.environ.get("TEST_GATE_PERMITS", "open")
    gate = Gate(None if initial == "open" else int(initial))
    poison_bgr = np.array(POISON_RGB[::-1], np.uint8)
    delay_s = float(os.environ.get("TEST_PREDICT_DELAY_MS", "0")) / 1000
    repeat = int(os.environ.get("TEST_PREDICT_REPEAT", "1"))
    original = Model.predict

    def poisoned(image: object) -> bool:
        return isinstance(image, np.ndarray) and bool((image == poison_bgr).all())

    def predict(self, source=None, stream=False, predictor=None, **kwargs):  # noqa: ANN001
        gate.enter()
        images = source if isinstance(source, list) else [source]
        if any(poisoned(image) for image in images):
            raise RuntimeError("injected fault: a poison image reached predict")
        if delay_s > 0:
            time.sleep(delay_s)
        for _ in range(repeat - 1):
            original(self, source, stream, predictor, **kwargs)
        return original(self, source, stream, predictor, **kwargs)

    Model.predict = predict

    if port := os.environ.get("TEST_GATE_PORT"):
        bound = serve_gate(gate, int(port))
        print(f"test gate on http://127.0.0.1:{bound}", file=sys.stderr, flush=True)

    from app.__main__ import main as serve

    return serve()


if __name__ == "__main__":
    raise SystemExit(main())

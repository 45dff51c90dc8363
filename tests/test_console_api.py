"""The console's JSON API without a browser (Litestar's test client on the app in process): an
endpoint's errors answer the CLI's one line with their status. The browser tests are in
tests/test_console.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from client import Client
from helpers import encode, scenes


def problem_429(request: Any) -> Any:
    """A 429 as the server sends it: no real server here is made to refuse for want of room
    (test_batching does that with its gate), so a MockTransport answers it."""
    from client.transports import Response

    body = {
        "type": "urn:vertex-yolo:problem:overloaded",
        "title": "Too Many Requests",
        "status": 429,
        "detail": "the model's queue is full (8 waiting); retry later",
        "code": "overloaded",
        "request_id": "req-429",
    }
    return Response(
        status=429,
        headers={"content-type": "application/problem+json"},
        content=json.dumps(body).encode(),
    )


@pytest.mark.parametrize("where", ["429", "dead"])
def test_endpoint_errors_are_the_cli_line_with_their_status(where: str) -> None:
    """A 429 (after the client's retries: none here) stays a 429 with the CLI's line; a server
    that is not there (a real closed port) is a 502 saying it cannot be reached."""
    from litestar.testing import TestClient

    from client.console import Console, create_app
    from client.transports import MockTransport
    from conftest import free_port

    if where == "429":
        client = Client(MockTransport(problem_429), retries=0)
    else:
        client = Client.from_url(f"http://127.0.0.1:{free_port()}", retries=0)
    app = create_app(Console(client, where="test"))
    with TestClient(app, base_url="http://127.0.0.1") as http:
        image = encode(scenes(1)[0][0])
        answer = http.post("/api/infer", files={"file": ("a.png", image)}, data={"route": "detect"})
        endpoint = http.get("/api/endpoint")
        foreign = http.get("/api/endpoint", headers={"host": "evil.example"})
    body = answer.json()
    if where == "429":
        assert answer.status_code == endpoint.status_code == 429
        assert body["error"].startswith("error: ") and "(request id req-429)" in body["error"]
    else:
        assert answer.status_code == endpoint.status_code == 502
        assert body["error"].startswith("error: ") and "127.0.0.1" in body["error"]
    assert "\n" not in body["error"]
    assert foreign.status_code == 403

"""The web console (``python -m client console``): the endpoint, its models at work, two
deployed models side by side and a rollout, in a browser.

A small Litestar app on 127.0.0.1 (:mod:`client.console.web`) over one :class:`~client.Client`
(:mod:`client.console.work`), so credentials stay in this process (ADC on Vertex, none on the
emulator) and the page works the same against Vertex, the emulator or one URL. The page is plain
HTML, CSS and JavaScript in ``static/`` (drawn on ``<canvas>``), shipped in the package: nothing
is fetched from the internet at run time. Needs the ``console`` extra (Litestar, uvicorn, and the
``video`` and ``tools`` extras: OpenCV for video frames, scipy for the agreement's matching).

Example:
    >>> from client import Client
    >>> from client.console import Console, create_app
    >>> app = create_app(Console(Client.from_url("http://127.0.0.1:8080"), "http://127.0.0.1:8080"))
"""

from client.console.web import create_app
from client.console.work import Console, error_line, http_status

__all__ = ["Console", "create_app", "error_line", "http_status"]

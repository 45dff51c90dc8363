"""Python client of the vertex-yolo server, through Vertex AI's ``Endpoint.invoke`` or one URL.

Example:
    >>> from client import Client
    >>> client = Client.from_vertex(project="p", location="us-central1", endpoint="123")
    >>> result = client.detect("bus.jpg", conf=0.5, deployed_model_id="456")
    >>> result.deployed_model_id, [d.class_name for d in result.results[0].detections]
    >>> with client.stream("clip.mp4", track="bytetrack") as stream:
    ...     for frame in stream.frames():
    ...         print(frame.index, len(frame.detections))

The wire contract lives in :mod:`client.schema` (importable without the SDK); errors in
:mod:`client.errors`; the command line in :mod:`client.cli` (``python -m client --help``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Exports load lazily (PEP 562): the server and the emulator import ``client.schema``, which
# must not drag in httpx, the SDK or tenacity.
_EXPORTS = {
    "client._client": ["Annotation", "AsyncClient", "Client"],
    "client._stream": ["AsyncStream", "Stream"],
    "client._retry": ["NO_RETRIES", "RetryPolicy"],
    "client.errors": [
        "APIError",
        "AuthenticationError",
        "BadRequestError",
        "ConnectionError",
        "DeployedModelNotFoundError",
        "NotFoundError",
        "ParameterError",
        "PayloadTooLargeError",
        "PermissionDeniedError",
        "RateLimitError",
        "ServerError",
        "StreamError",
        "TimeoutError",
        "UnavailableError",
        "UnsupportedMediaTypeError",
        "VertexYoloError",
    ],
    "client.schema": [
        "AnnotateResponse",
        "InferenceResponse",
        "ModelList",
        "StreamEnd",
        "StreamFrame",
        "StreamStart",
    ],
    "client.transports": [
        "AsyncBaseTransport",
        "AsyncHttpTransport",
        "AsyncVertexTransport",
        "BaseTransport",
        "HttpTransport",
        "MockTransport",
        "Request",
        "Response",
        "VertexTransport",
    ],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from client._client import Annotation, AsyncClient, Client  # noqa: F401
    from client._retry import NO_RETRIES, RetryPolicy  # noqa: F401
    from client._stream import AsyncStream, Stream  # noqa: F401
    from client.errors import (  # noqa: F401
        APIError,
        AuthenticationError,
        BadRequestError,
        ConnectionError,
        DeployedModelNotFoundError,
        NotFoundError,
        ParameterError,
        PayloadTooLargeError,
        PermissionDeniedError,
        RateLimitError,
        ServerError,
        StreamError,
        TimeoutError,
        UnavailableError,
        UnsupportedMediaTypeError,
        VertexYoloError,
    )
    from client.transports import (  # noqa: F401
        AsyncBaseTransport,
        AsyncHttpTransport,
        AsyncVertexTransport,
        BaseTransport,
        HttpTransport,
        MockTransport,
        Request,
        Response,
        VertexTransport,
    )

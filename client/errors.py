"""The client's exceptions: one tree, with the server's problem details on every API error.

Exception tree::

    VertexYoloError                       anything this client raises on purpose
    ├── ParameterError (ValueError)       a bad argument, caught before any request is sent
    ├── ConnectionError                   the server could not be reached (DNS, refused, TLS, reset;
    │                                     also the builtin ConnectionError)
    ├── TimeoutError                      no answer within the configured timeout (also the builtin)
    ├── AuthenticationError               no credentials / token refresh refused (not retried)
    │   └── PermissionDeniedError         401 / 403 from the platform (also an APIError)
    ├── APIError                          the server answered an error status (or an error body)
    │   ├── BadRequestError               400
    │   ├── NotFoundError                 404
    │   │   └── DeployedModelNotFoundError  no such deployed model on this endpoint / server
    │   ├── PayloadTooLargeError          413, or Google's 400 "Request payload size exceeds..."
    │   ├── UnsupportedMediaTypeError     415
    │   ├── RateLimitError                429 (retried)
    │   ├── UnavailableError              503 (retried)
    │   └── ServerError                   other 5xx
    └── StreamError                       a stream failed after it started: an ``error`` event,
                                          a cut connection, or bytes that are not SSE

``APIError`` keeps the decoded :class:`~client.schema.Problem` when the body was the server's
problem+json; other bodies (Vertex's or the emulator's Google-style ``{"error": {...}}``, an
HTML page from a proxy) are kept as text and summarised into the message.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from client.schema import PROBLEM_TYPE_PREFIX, Problem, decode_problem


class VertexYoloError(Exception):
    """Base class of every error this client raises on purpose."""


class ParameterError(VertexYoloError, ValueError):
    """An argument the server would refuse, caught before sending anything."""


class ConnectionError(VertexYoloError, builtins.ConnectionError):
    """The server could not be reached (refused, DNS, TLS, connection reset). Also a builtin
    ``ConnectionError``, so code that catches network failures generically catches it."""

    #: whether the client's retry policy may try again (False once a lower layer gave up)
    retryable: bool = True


class TimeoutError(VertexYoloError, builtins.TimeoutError):
    """The request did not finish within its timeout (also a builtin ``TimeoutError``)."""


class AuthenticationError(VertexYoloError):
    """The credentials could not produce a token (refresh refused, no default credentials).
    Not retried: another try would fail the same way. A token endpoint that cannot be
    reached is a :class:`ConnectionError` instead, and retried."""


class APIError(VertexYoloError):
    """The server answered with an error.

    Attributes:
        status: the HTTP status (from the body when the transport could not see it).
        problem: the server's problem details, or ``None`` for a non-problem body.
        body: the raw body text (truncated to 2,000 characters).
        request_id: the server's ``X-Request-Id`` (or the problem's ``request_id``).
        deployed_model_id: which deployed model answered, when known.
        retry_after: seconds from a ``Retry-After`` header, when given.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        problem: Problem | None = None,
        body: str = "",
        request_id: str | None = None,
        deployed_model_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.problem = problem
        self.body = body
        self.request_id = request_id or (problem.request_id if problem else None)
        self.deployed_model_id = deployed_model_id
        self.retry_after = retry_after

    @property
    def code(self) -> str | None:
        """The problem's ``code`` (``invalid-parameter``, ``unknown-model``...), if any."""
        return self.problem.code if self.problem else None


class BadRequestError(APIError):
    """400: the request was malformed or a parameter was out of range."""


class NotFoundError(APIError):
    """404: unknown model, route, or deployed model."""


class DeployedModelNotFoundError(NotFoundError):
    """The ``deployed_model_id`` asked for is not deployed on this endpoint (or is not this
    server, for a client made with :meth:`Client.from_url`)."""


class PayloadTooLargeError(APIError):
    """413: the body (or the number of images) is over the server's limit; also Vertex's 400
    ``INVALID_ARGUMENT`` "Request payload size exceeds the limit" (its 10 MB per request)."""


class PermissionDeniedError(APIError, AuthenticationError):
    """401 ``UNAUTHENTICATED`` / 403 ``PERMISSION_DENIED``: the token was refused, or its account
    may not call this endpoint (``aiplatform.endpoints.predict``). An :class:`APIError` with the
    platform's body, and an :class:`AuthenticationError`: not retried."""


class UnsupportedMediaTypeError(APIError):
    """415: the content type is not one the route accepts."""


class RateLimitError(APIError):
    """429: too many requests; retried with backoff."""


class UnavailableError(APIError):
    """503: the server (or a model) is not ready; retried with backoff."""


class ServerError(APIError):
    """Any other 5xx."""


class StreamError(VertexYoloError):
    """A ``/stream`` failed after it started.

    Attributes:
        problem: the ``error`` event's problem details, if the server sent one.
        last_event_id: the SSE id of the last event received (the last frame index).
    """

    def __init__(
        self, message: str, *, problem: Problem | None = None, last_event_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.problem = problem
        self.last_event_id = last_event_id


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: PermissionDeniedError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    429: RateLimitError,
    503: UnavailableError,
}


class _GoogleErrorBody(msgspec.Struct):
    code: int | None = None
    message: str | None = None
    status: str | None = None


class _GoogleError(msgspec.Struct):
    """Google's JSON error shape, as Vertex and the emulator send it: ``{"error": {...}}``."""

    error: _GoogleErrorBody


#: what to do when no Google credentials are found (Cloud Storage, Vertex AI)
CREDENTIALS_HINT = (
    "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a "
    "service account key file"
)
#: what to do when no Google Cloud project is known
PROJECT_HINT = "give --project, or set GOOGLE_CLOUD_PROJECT (gcloud: CLOUDSDK_CORE_PROJECT)"

_decode_google = msgspec.json.Decoder(_GoogleError).decode
#: the words of Google's front end for a body over the limit (a 400 INVALID_ARGUMENT)
PAYLOAD_TOO_LARGE = "Request payload size exceeds the limit"


def invalid_parameter(exc: msgspec.ValidationError, given: Mapping[str, Any]) -> str:
    """msgspec's ``Expected `float` <= 1.0 - at `$.conf``` in words: ``invalid parameter conf:
    expected float <= 1.0, got 5``."""
    found = re.fullmatch(r"(.*?) - at `\$\.(\w+)([^`]*)`", str(exc))
    if found is None:
        return f"invalid parameter: {exc}"
    what = re.sub(r"Expected `([^`]*)`", r"expected \1", found[1]).replace("`", "")
    name = found[2]
    got = f", got {given[name]!r}" if name in given and not found[3] and "got" not in what else ""
    return f"invalid parameter {name}{found[3]}: {what}{got}"


def error_class(status: int) -> type[APIError]:
    """The exception class for an HTTP error status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else APIError


def parse_error_body(content: bytes) -> tuple[Problem | None, int | None, str]:
    """Decode an error body: ``(problem, status named by the body, summary text)``.

    Tries the server's problem+json first, then Google's ``{"error": {...}}``; anything else
    is summarised as its (truncated) text.
    """
    try:
        problem = decode_problem(content)
    except (msgspec.DecodeError, msgspec.ValidationError):
        problem = None
    if problem is not None and problem.type.startswith(PROBLEM_TYPE_PREFIX):
        return problem, problem.status, f"{problem.title}: {problem.detail}"
    try:
        google = _decode_google(content).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        google = None
    if google is not None and (google.message or google.status):
        label = " ".join(str(p) for p in (google.code, google.status) if p)
        return None, google.code, f"{label}: {google.message or ''}".strip(": ")
    text = content.decode("utf-8", "replace").strip()
    return None, None, " ".join(text.split())[:300] or "(empty body)"


def _names_deployed_model(
    problem: Problem | None, body_status: int | None, summary: str, deployed_model_id: str
) -> bool:
    """Whether an error body is the platform's not-found for a deployed model."""
    if problem is not None or body_status != 404:
        return False
    text = summary.lower()
    return deployed_model_id.lower() in text or "deployed model" in text or "deployedmodel" in text


def api_error(
    content: bytes,
    *,
    status: int | None,
    request_id: str | None = None,
    deployed_model_id: str | None = None,
    retry_after: float | None = None,
    where: str = "",
    pinned: str | None = None,
) -> APIError:
    """Build the typed error for an error response.

    ``status`` is ``None`` when the transport could not see it (an SDK stream); the body's own
    status (problem ``status`` or Google ``error.code``) is then used. ``pinned``: the deployed
    model a routing transport (Vertex) sent the call to; a Google-style 404 from the platform
    that names it (not the server's problem+json, not a proxy's page) means it is unknown.
    """
    problem, body_status, summary = parse_error_body(content)
    effective = status or body_status or 500
    cls = error_class(effective)
    if effective == 404 and pinned and _names_deployed_model(problem, body_status, summary, pinned):
        cls = DeployedModelNotFoundError
    elif effective == 400 and problem is None and PAYLOAD_TOO_LARGE in summary:
        cls = PayloadTooLargeError
    prefix = f"{effective} from {where}" if where else str(effective)
    return cls(
        f"{prefix}: {summary}",
        status=effective,
        problem=problem,
        body=content.decode("utf-8", "replace")[:2000],
        request_id=request_id,
        deployed_model_id=deployed_model_id,
        retry_after=retry_after,
    )

"""Domain errors and their one mapping to RFC 9457 problem+json.

Exception tree (status, ``code``)::

    ServingError                      500 internal
    ├── BadRequest                    400 bad-request
    │   ├── InvalidImage              400 invalid-image
    │   ├── InvalidVideo              400 invalid-video
    │   ├── InvalidParameter          400 invalid-parameter
    │   └── WrongTask                 400 wrong-task
    │   └── UriNotAllowed             400 uri-not-allowed
    ├── ObjectForbidden               403 object-forbidden
    ├── UnknownModel                  404 unknown-model
    ├── ObjectNotFound                404 object-not-found
    ├── PayloadTooLarge               413 payload-too-large
    ├── UnsupportedMediaType          415 unsupported-media-type
    ├── Overloaded                    429 overloaded (Retry-After)
    ├── StorageUnavailable            502 storage-unavailable
    └── NotReady                      503 not-ready (Retry-After)

Litestar's own HTTP exceptions (unknown route, wrong method, body over the limit) get the same
treatment; anything else is logged with its traceback and answered with a bare 500.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from app.metrics import ERRORS
from app.middleware import request_id
from client.schema import PROBLEM_TYPE_PREFIX, Problem, ProblemCode

log = logging.getLogger("app.errors")

PROBLEM_JSON = "application/problem+json"


class ServingError(Exception):
    status = 500
    code: ProblemCode = "internal"  # each subclass's is one of the contract's codes
    title = "Internal Server Error"
    headers: dict[str, str] | None = None  # extra response headers

    def __init__(
        self, detail: str, *, field: str | None = None, allowed: list[str] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.allowed = allowed


class BadRequest(ServingError):
    status = 400
    code: ProblemCode = "bad-request"
    title = "Bad request"


class InvalidImage(BadRequest):
    code: ProblemCode = "invalid-image"
    title = "Invalid image"


class InvalidVideo(BadRequest):
    code: ProblemCode = "invalid-video"
    title = "Invalid video"


class InvalidParameter(BadRequest):
    code: ProblemCode = "invalid-parameter"
    title = "Invalid parameter"


class WrongTask(BadRequest):
    code: ProblemCode = "wrong-task"
    title = "Wrong model task"


class UriNotAllowed(BadRequest):
    """A URI input the server does not read: another scheme, or a bucket not allowed."""

    code: ProblemCode = "uri-not-allowed"
    title = "URI not allowed"


class ObjectForbidden(ServingError):
    status = 403
    code: ProblemCode = "object-forbidden"
    title = "Object forbidden"


class ObjectNotFound(ServingError):
    status = 404
    code: ProblemCode = "object-not-found"
    title = "Object not found"


class StorageUnavailable(ServingError):
    status = 502
    code: ProblemCode = "storage-unavailable"
    title = "Storage unavailable"


class UnknownModel(ServingError):
    status = 404
    code: ProblemCode = "unknown-model"
    title = "Unknown model"


class PayloadTooLarge(ServingError):
    status = 413
    code: ProblemCode = "payload-too-large"
    title = "Payload too large"


class UnsupportedMediaType(ServingError):
    status = 415
    code: ProblemCode = "unsupported-media-type"
    title = "Unsupported media type"


class Overloaded(ServingError):
    """The model's queue is full (``SERVE_QUEUE_SIZE``); nothing was done for the request."""

    status = 429
    code: ProblemCode = "overloaded"
    title = "Overloaded"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after)}


class NotReady(ServingError):
    status = 503
    code: ProblemCode = "not-ready"
    title = "Not ready"


class HttpProblem(ServingError):
    """A framework-level HTTP error (unknown route, wrong method, body too large), with the
    headers the framework gave it (``Allow`` on a 405)."""

    def __init__(
        self,
        status: int,
        code: ProblemCode,
        title: str,
        detail: str,
        headers: dict[str, str] | None,
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.title = status, code, title
        self.headers = headers


_HTTP_CODES: dict[int, tuple[ProblemCode, str]] = {
    400: ("bad-request", "Bad request"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def problem(request: Request | None, exc: ServingError) -> Problem:
    """The problem document for a domain error."""
    return Problem(
        type=PROBLEM_TYPE_PREFIX + exc.code,
        title=exc.title,
        status=exc.status,
        detail=exc.detail,
        code=exc.code,
        instance=request.url.path if request is not None else None,
        request_id=request_id_of(request) if request is not None else None,
        field=exc.field,
        allowed=exc.allowed,
    )


def problem_response(exc: ServingError, request: Request | None = None) -> Response[Problem]:
    ERRORS.labels(exc.code).inc()
    headers = dict(exc.headers or {})
    if exc.status == 503:
        headers["Retry-After"] = "5"
    return Response(
        problem(request, exc), status_code=exc.status, media_type=PROBLEM_JSON, headers=headers
    )


def _from_http_exception(request: Request, exc: HTTPException) -> ServingError:
    status = exc.status_code
    code, title = _HTTP_CODES.get(status, ("http-error", exc.detail or "HTTP error"))
    if isinstance(exc, RequestEntityTooLarge):
        limit = request.route_handler.resolve_request_max_body_size()
        detail = f"The request body is larger than the server's limit of {limit} bytes."
    elif status == 404:
        routes = ", ".join(sorted({r.path for r in request.app.routes}))
        detail = f"No route {request.method} {request.url.path}; the routes are {routes}."
    elif status == 405:
        allow = (exc.headers or {}).get("allow", "")
        detail = f"{request.method} is not allowed on {request.url.path}; allowed: {allow}."
    elif isinstance(exc, ValidationException):
        detail = exc.detail or "The request could not be parsed."
    else:
        detail = exc.detail or title
    return HttpProblem(status, code, title, detail, exc.headers)


def handle_exception(request: Request, exc: Exception) -> Response[Any]:
    """The app's single exception handler."""
    if isinstance(exc, ServingError):
        if exc.status == 500:
            log.error("request %s failed: %s", request_id_of(request), exc.detail)
        return problem_response(exc, request)
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        return problem_response(_from_http_exception(request, exc), request)
    log.exception("unhandled error in request %s", request_id_of(request), exc_info=exc)
    return problem_response(
        ServingError("The server failed to handle this request; see its logs."), request
    )


def request_id_of(request: Request) -> str:
    return request_id(request.scope)

"""Transports: the one place that does I/O. The client keeps the policy (retries, decoding).

Each transport implements one method, ``send(Request) -> Response`` (``async`` for the async
ones), and maps its library's errors into :mod:`client.errors`:

* :class:`HttpTransport` / :class:`AsyncHttpTransport`: httpx, straight to one server URL.
* :class:`VertexTransport`: the SDK's ``aiplatform.Endpoint.invoke`` (sync only: the SDK has
  no async variant).
* :class:`AsyncVertexTransport`: httpx to the URLs ``invoke`` builds
  (``https://{dns}/v1/{endpoint}[/deployedModels/{id}]/invoke{path}``) with google-auth
  credentials.
* :class:`MockTransport`: a function from Request to Response, for tests of code built on the
  client.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import ssl
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, field
from typing import Any

import httpx

from client import errors
from client.sse import aiter_lines, iter_lines
from client.vertex import SCOPES, auth_error

HEADER_DEPLOYED_MODEL = "x-deployed-model-id"
HEADER_REQUEST_ID = "x-request-id"


@dataclass
class Request:
    """One call: always a POST (``invoke`` only POSTs) of ``body`` to ``path`` (query included)."""

    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    deployed_model_id: str | None = None
    stream: bool = False
    timeout: float | None = None


@dataclass
class Response:
    """What came back. ``status`` is ``None`` when the transport cannot see it (an SDK stream).

    A non-stream response has ``content``; a stream has ``lines`` (sync) or ``alines`` (async),
    lines of the body with their endings removed, and must be closed.
    """

    status: int | None
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    content: bytes = b""
    lines: Iterator[bytes] | None = None
    alines: AsyncIterator[bytes] | None = None
    on_close: Callable[[], Any] | None = None

    @property
    def request_id(self) -> str | None:
        return self.headers.get(HEADER_REQUEST_ID)

    @property
    def deployed_model_id(self) -> str | None:
        return self.headers.get(HEADER_DEPLOYED_MODEL)

    def close(self) -> None:
        if self.on_close is not None:
            self.on_close()

    async def aclose(self) -> None:
        if self.on_close is not None:
            result = self.on_close()
            if inspect.isawaitable(result):
                await result


class BaseTransport:
    """The sync transport interface."""

    #: whether ``Request.deployed_model_id`` can route a call (False: one fixed server)
    can_pin = True

    def send(self, request: Request) -> Response:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""


class AsyncBaseTransport:
    """The async transport interface."""

    can_pin = True

    async def send(self, request: Request) -> Response:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release connections."""


def ssl_verify(verify: bool | str | ssl.SSLContext | None) -> bool | ssl.SSLContext:
    """httpx's ``verify`` from ours: ``None`` honours ``REQUESTS_CA_BUNDLE`` (the SDK's variable,
    set for the emulator's CA) and then ``SSL_CERT_FILE``; a string is a CA bundle path."""
    if verify is None:
        verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE") or True
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return verify


def _timeout(seconds: float | None) -> httpx.Timeout:
    return httpx.Timeout(seconds, connect=min(seconds, 30.0) if seconds else None)


class _HttpxErrors:
    """Map httpx's exceptions to ours (timeouts first: they are transport errors too)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, httpx.TimeoutException):
            raise errors.TimeoutError(f"timed out talking to {self.where}: {exc!r}") from exc
        if isinstance(exc, httpx.TransportError):
            raise errors.ConnectionError(f"cannot reach {self.where}: {exc!r}") from exc


def _headers(response: httpx.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items()}


def _sync_lines(response: httpx.Response, where: str) -> Generator[bytes, None, None]:
    with _HttpxErrors(where):
        yield from iter_lines(response.iter_bytes())


async def _async_lines(response: httpx.Response, where: str) -> AsyncGenerator[bytes, None]:
    with _HttpxErrors(where):
        async for line in aiter_lines(response.aiter_bytes()):
            yield line


class HttpTransport(BaseTransport):
    """httpx to one server (``Client.from_url``). It cannot route to a deployed model: the
    client checks the answering server's id instead (see :class:`~client.Client`)."""

    can_pin = False

    def __init__(
        self,
        base_url: str,
        *,
        verify: bool | str | ssl.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client or httpx.Client(
            verify=ssl_verify(verify), headers=dict(headers or {}), timeout=None
        )

    def send(self, request: Request) -> Response:
        built = self._client.build_request(
            "POST",
            self.base_url + request.path,
            content=request.body,
            headers=request.headers,
            timeout=_timeout(request.timeout),
        )
        with _HttpxErrors(self.base_url):
            response = self._client.send(built, stream=request.stream)
        if not request.stream:
            return Response(response.status_code, _headers(response), response.content)
        if response.status_code >= 400:
            try:
                with _HttpxErrors(self.base_url):
                    content = response.read()
            finally:
                response.close()
            return Response(response.status_code, _headers(response), content)
        lines = _sync_lines(response, self.base_url)

        def close() -> None:
            lines.close()
            response.close()

        return Response(response.status_code, _headers(response), lines=lines, on_close=close)

    def close(self) -> None:
        self._client.close()


class _AsyncHttpxSender:
    """Shared by the async transports: send over an ``httpx.AsyncClient``."""

    _client: httpx.AsyncClient
    where: str

    async def _send(self, url: str, request: Request, headers: dict[str, str]) -> Response:
        built = self._client.build_request(
            "POST", url, content=request.body, headers=headers, timeout=_timeout(request.timeout)
        )
        with _HttpxErrors(self.where):
            response = await self._client.send(built, stream=request.stream)
        if not request.stream:
            return Response(response.status_code, _headers(response), response.content)
        if response.status_code >= 400:
            try:
                with _HttpxErrors(self.where):
                    content = await response.aread()
            finally:
                await response.aclose()
            return Response(response.status_code, _headers(response), content)
        lines = _async_lines(response, self.where)

        async def close() -> None:
            await lines.aclose()
            await response.aclose()

        return Response(response.status_code, _headers(response), alines=lines, on_close=close)


class AsyncHttpTransport(_AsyncHttpxSender, AsyncBaseTransport):
    """httpx (async) to one server URL (``AsyncClient.from_url``)."""

    can_pin = False

    def __init__(
        self,
        base_url: str,
        *,
        verify: bool | str | ssl.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
        limits: httpx.Limits | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = self.where = base_url.rstrip("/")
        self._client = client or httpx.AsyncClient(
            verify=ssl_verify(verify),
            headers=dict(headers or {}),
            timeout=None,
            limits=limits or httpx.Limits(max_connections=100, max_keepalive_connections=100),
        )

    async def send(self, request: Request) -> Response:
        return await self._send(self.base_url + request.path, request, dict(request.headers))

    async def aclose(self) -> None:
        await self._client.aclose()


def _unknown_deployed_model(deployed_model_id: str, endpoint: str, known: Any) -> Exception:
    """``known``: the endpoint's deployed model ids, or a mapping of them to display names
    (listed as ``name (id)``)."""
    names = known if isinstance(known, Mapping) else {}
    listed = (
        ", ".join(f"{names[i]} ({i})" if names.get(i) else i for i in sorted(known))
        if known
        else "none"
    )
    return errors.DeployedModelNotFoundError(
        f"deployed model {deployed_model_id!r} is not deployed on endpoint {endpoint} "
        f"(deployed: {listed})",
        status=404,
        deployed_model_id=deployed_model_id,
    )


class VertexTransport(BaseTransport):
    """``aiplatform.Endpoint.invoke`` of the Vertex SDK (a dedicated endpoint).

    The SDK returns a ``requests.Response`` without raising for error statuses; a stream is a
    generator of lines whose status is invisible. Timeouts above 120 s make the SDK mount a
    ``requests-toolbelt`` keep-alive adapter (on every such call, so each opens a new
    connection): prefer ``timeout <= 120`` for many short calls.

    Args:
        endpoint: an ``aiplatform.Endpoint``.
        owns_endpoint: whether :meth:`close` may close the endpoint's ``authorized_session``
            (``True`` when the client made the endpoint, as ``Client.from_vertex`` does; an
            endpoint the caller passed in is left open for the caller).
    """

    def __init__(self, endpoint: Any, *, owns_endpoint: bool = False) -> None:
        self.endpoint = endpoint
        self.owns_endpoint = owns_endpoint

    @property
    def name(self) -> str:
        """The endpoint's resource name, without the control-plane GET ``resource_name`` does."""
        resource = getattr(self.endpoint, "_gca_resource", None)
        return getattr(resource, "name", "") or str(self.endpoint)

    def _deployed_ids(self) -> dict[str, str]:
        """The deployed model ids the endpoint resource (as last read) holds, with their
        display names."""
        resource = getattr(self.endpoint, "_gca_resource", None)
        return {m.id: m.display_name for m in getattr(resource, "deployed_models", [])}

    def send(self, request: Request) -> Response:
        import google.api_core.exceptions
        import google.auth.exceptions
        import requests

        where = f"endpoint {self.name}"
        try:
            result = self.endpoint.invoke(
                request_path=request.path,
                body=request.body,
                headers=request.headers,
                deployed_model_id=request.deployed_model_id,
                stream=request.stream,
                timeout=request.timeout,
            )
        except ValueError as exc:
            if request.deployed_model_id and "not found in endpoint" in str(exc):
                raise _unknown_deployed_model(
                    request.deployed_model_id, self.name, self._deployed_ids()
                ) from exc
            raise errors.VertexYoloError(f"Endpoint.invoke refused the call: {exc}") from exc
        except requests.RequestException as exc:
            raise _requests_error(exc, f"talking to {where}") from exc
        except google.api_core.exceptions.GoogleAPICallError as exc:
            # The SDK reads the endpoint resource (control plane) before its first call.
            status = int(exc.code or 500)
            raise errors.error_class(status)(
                f"{status} from the Vertex control plane reading {where}: {exc.message}",
                status=status,
                body=str(exc),
            ) from exc
        except google.api_core.exceptions.GoogleAPIError as exc:  # RetryError: gave up
            error = errors.ConnectionError(
                f"cannot read {where} from the Vertex control plane: {exc}"
            )
            error.retryable = False  # the SDK has already retried for its own deadline
            raise error from exc
        except google.auth.exceptions.GoogleAuthError as exc:
            raise auth_error(exc, where) from exc
        if not request.stream:
            headers = {k.lower(): v for k, v in result.headers.items()}
            return Response(result.status_code, headers, result.content)
        lines = _sdk_lines(result, where)
        return Response(None, lines=lines, on_close=lines.close)

    def close(self) -> None:
        session = getattr(self.endpoint, "authorized_session", None)
        if self.owns_endpoint and session is not None:
            session.close()


def _requests_error(exc: Exception, doing: str) -> errors.VertexYoloError:
    """Ours for a ``requests`` error. A read timeout inside ``iter_lines`` (an SDK stream)
    arrives as ``requests.ConnectionError`` wrapping urllib3's ``ReadTimeoutError``: still a
    timeout (not retried), not a broken connection."""
    import requests
    import urllib3.exceptions

    cause = exc.args[0] if exc.args else None
    if isinstance(exc, requests.Timeout) or isinstance(cause, urllib3.exceptions.TimeoutError):
        return errors.TimeoutError(f"timed out {doing}: {exc}")
    return errors.ConnectionError(f"connection failed {doing}: {exc}")


def _sdk_lines(lines: Iterator[bytes], where: str) -> Generator[bytes, None, None]:
    import google.auth.exceptions
    import requests

    try:
        yield from lines
    except requests.RequestException as exc:
        raise _requests_error(exc, f"reading the stream from {where}") from exc
    except google.auth.exceptions.GoogleAuthError as exc:
        raise auth_error(exc, where) from exc


class AsyncVertexTransport(_AsyncHttpxSender, AsyncBaseTransport):
    """Async calls to a Vertex dedicated endpoint: the URLs ``Endpoint.invoke`` builds, over httpx.

    Args:
        dedicated_endpoint_dns: ``host[:port]`` (``endpoint.dedicated_endpoint_dns``).
        resource_name: ``projects/P/locations/L/endpoints/E``.
        credentials: google-auth credentials (default: ``google.auth.default()``), given the
            SDK's cloud-platform scope when they need scopes. Tokens are refreshed in a worker
            thread, one refresh at a time.
        deployed_model_ids: when given, an unknown ``deployed_model_id`` is refused before
            sending (as the SDK does).
        verify: TLS verification (default: ``REQUESTS_CA_BUNDLE``, else the system store).
    """

    def __init__(
        self,
        dedicated_endpoint_dns: str,
        resource_name: str,
        *,
        credentials: Any = None,
        deployed_model_ids: set[str] | None = None,
        verify: bool | str | ssl.SSLContext | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        import google.auth
        import google.auth.credentials
        import google.auth.exceptions

        if credentials is None:
            try:
                credentials, _ = google.auth.default(scopes=SCOPES)
            except google.auth.exceptions.GoogleAuthError as exc:
                raise auth_error(exc, f"endpoint {resource_name}") from exc
        self.credentials = google.auth.credentials.with_scopes_if_required(credentials, SCOPES)
        self.resource_name = resource_name
        self.deployed_model_ids = deployed_model_ids
        self.base_url = f"https://{dedicated_endpoint_dns}/v1/{resource_name}"
        self.where = f"endpoint {resource_name}"
        self._refresh_lock = asyncio.Lock()
        self._auth_request: Any = None
        self._client = httpx.AsyncClient(
            verify=ssl_verify(verify),
            timeout=None,
            limits=limits or httpx.Limits(max_connections=100, max_keepalive_connections=100),
        )

    @classmethod
    def from_endpoint(cls, endpoint: Any, **kwargs: Any) -> AsyncVertexTransport:
        """From an ``aiplatform.Endpoint`` (reads its resource: a control-plane GET, once)."""
        dns = endpoint.dedicated_endpoint_dns  # fetches the resource if it is not yet
        if not dns:
            raise errors.VertexYoloError(
                f"endpoint {endpoint.resource_name} has no dedicated endpoint DNS: only "
                "dedicated endpoints serve invoke"
            )
        resource = getattr(endpoint, "_gca_resource", None)
        ids = {m.id for m in getattr(resource, "deployed_models", [])} or None
        kwargs.setdefault("credentials", endpoint.credentials)
        kwargs.setdefault("deployed_model_ids", ids)
        return cls(dns, endpoint.resource_name, **kwargs)

    def url(self, request: Request) -> str:
        url = self.base_url
        if request.deployed_model_id:
            url += f"/deployedModels/{request.deployed_model_id}"
        return url + "/invoke" + request.path

    async def _authorize(self, url: str, headers: dict[str, str]) -> None:
        """Add the credentials' headers; a token that needs refreshing is refreshed in a worker
        thread (blocking I/O), one refresh at a time however many calls are waiting."""
        import google.auth.exceptions
        from google.auth.transport.requests import Request as AuthRequest

        creds = self.credentials
        if self._auth_request is None:
            self._auth_request = AuthRequest()
        try:
            if not creds.valid:
                async with self._refresh_lock:
                    if not creds.valid:  # else a call ahead in the queue refreshed it
                        await asyncio.to_thread(creds.refresh, self._auth_request)
            creds.before_request(self._auth_request, "POST", url, headers)  # valid: no I/O
        except google.auth.exceptions.GoogleAuthError as exc:
            raise auth_error(exc, self.where) from exc

    async def send(self, request: Request) -> Response:
        dm = request.deployed_model_id
        if dm and self.deployed_model_ids is not None and dm not in self.deployed_model_ids:
            raise _unknown_deployed_model(dm, self.resource_name, self.deployed_model_ids)
        url = self.url(request)
        headers = dict(request.headers)
        await self._authorize(url, headers)
        return await self._send(url, request, headers)

    async def aclose(self) -> None:
        await self._client.aclose()
        if self._auth_request is not None:
            self._auth_request.session.close()


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class MockTransport(BaseTransport, AsyncBaseTransport):
    """A transport that answers ``handler(request)``: for tests of code built on the client,
    where no server can run. Works with both clients (the async one awaits an awaitable
    answer), like httpx's ``MockTransport``; its ``send`` returns what the handler returns."""

    def __init__(self, handler: Handler, *, can_pin: bool = True) -> None:
        self.handler = handler
        self.can_pin = can_pin

    def send(self, request: Request) -> Any:
        return self.handler(request)

    async def aclose(self) -> None:
        """Nothing to release."""

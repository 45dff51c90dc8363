"""Talking to Vertex AI, or to the local emulator that stands in for it: one place for the SDK's
set-up, the credentials, where an endpoint lives, and Google's errors as ours.

* :class:`VertexTarget`: project, location, endpoint, control-plane URL and CA bundle, each taken
  from the caller or from a running emulator's info file (:meth:`VertexTarget.with_emulator`).
* :func:`is_emulator`: an ``http://`` control plane is the emulator (Vertex's are HTTPS hosts):
  anonymous credentials and the REST transport, and no proxy for loopback.
* :func:`init_kwargs` / :func:`endpoint`: ``aiplatform.init`` and ``aiplatform.Endpoint`` for a
  target.
* :func:`auth_error` and :func:`sdk_errors`: google-auth and google-api-core exceptions as
  :mod:`client.errors` (a refused login is an :class:`~client.errors.AuthenticationError`, an
  unreachable control plane a :class:`~client.errors.ConnectionError`...).

The SDK is imported only inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, NamedTuple

import msgspec

from client import errors
from client.info import EmulatorInfo

#: the scope the SDK gives its credentials (``aiplatform.constants.base.DEFAULT_AUTHED_SCOPES``)
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
LOOPBACK = ("127.0.0.1", "localhost")


class VertexTarget(NamedTuple):
    """Where Vertex calls go (the fields are the CLI's connection options)."""

    project: str | None = None
    location: str | None = None
    endpoint: str | None = None
    api_endpoint: str | None = None
    ca_cert: str | None = None

    def with_emulator(self, info_file: str | os.PathLike[str] | None) -> VertexTarget:
        """Each field not given taken from a running emulator's info file, when there is one."""
        if not info_file:
            return self
        try:
            info = EmulatorInfo.load(info_file)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise errors.ParameterError(f"cannot read {info_file}: {exc}") from None
        return VertexTarget(
            project=self.project or info.project,
            location=self.location or info.location,
            endpoint=self.endpoint or info.endpoint_id or None,
            api_endpoint=self.api_endpoint or info.control_plane_url,
            ca_cert=self.ca_cert or info.ca_cert,
        )

    @property
    def emulator(self) -> bool:
        return is_emulator(self.api_endpoint)


def is_emulator(api_endpoint: str | None) -> bool:
    """An ``http://`` control plane is the local emulator (Vertex's own are HTTPS hosts)."""
    return bool(api_endpoint and api_endpoint.startswith("http://"))


def loopback_without_proxy(api_endpoint: str | None) -> None:
    """An emulator's http:// control plane is on loopback: keep any HTTP(S)_PROXY off it.

    This changes the process's environment, and only when it must: the control plane is the
    emulator *and* a proxy variable is set. It cannot be scoped to our calls: the SDK's REST
    transport builds its own ``requests`` sessions, which read ``NO_PROXY`` from the environment
    at each request and take no proxy setting from the caller. Without a proxy nothing changes.
    """
    if not is_emulator(api_endpoint) or not proxy_configured():
        return
    hosts = [h for h in os.environ.get("NO_PROXY", "").split(",") if h.strip()]
    hosts += [host for host in LOOPBACK if host not in hosts]
    os.environ["NO_PROXY"] = ",".join(hosts)


def proxy_configured() -> bool:
    """Whether ``requests`` would send anything through a proxy (any ``*_PROXY`` variable)."""
    names = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
    return any(os.environ.get(n) or os.environ.get(n.lower()) for n in names)


def anonymous_credentials() -> Any:
    """The credentials the emulator takes (it never answers 401, which would make them fail)."""
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()


def init_kwargs(
    project: str | None, location: str | None, api_endpoint: str | None, credentials: Any = None
) -> dict[str, Any]:
    """``aiplatform.init`` arguments: a control plane named by URL is spoken to over REST; the
    emulator's gets anonymous credentials, Vertex keeps the default Google credentials unless
    others are given."""
    kwargs: dict[str, Any] = {k: v for k, v in (("project", project), ("location", location)) if v}
    if api_endpoint:
        kwargs["api_endpoint"] = api_endpoint
        kwargs["api_transport"] = "rest"
    if is_emulator(api_endpoint):
        credentials = credentials or anonymous_credentials()
    if credentials is not None:
        kwargs["credentials"] = credentials
    return kwargs


def endpoint(
    name: str,
    *,
    project: str | None = None,
    location: str | None = None,
    api_endpoint: str | None = None,
    credentials: Any = None,
    api_transport: str | None = None,
) -> Any:
    """``aiplatform.Endpoint(name)``, the SDK pointed at ``api_endpoint`` first when given.

    That calls ``aiplatform.init``, which is the SDK's process-wide configuration: the SDK has
    no per-call way to name a control plane (``Endpoint`` takes project, location and
    credentials, not an API endpoint or transport), so it cannot be scoped; it is called only
    when ``api_endpoint`` or ``api_transport`` is given, and a caller that uses the SDK for
    something else afterwards should call ``aiplatform.init`` again."""
    from google.cloud import aiplatform

    loopback_without_proxy(api_endpoint)
    kwargs = init_kwargs(project, location, api_endpoint, credentials)
    if api_transport:
        kwargs["api_transport"] = api_transport
    if api_endpoint or api_transport:
        aiplatform.init(**kwargs)
    return aiplatform.Endpoint(
        name, project=project, location=location, credentials=kwargs.get("credentials")
    )


def auth_error(exc: Exception, where: str) -> errors.VertexYoloError:
    """Ours for a google-auth error: the token endpoint unreachable is a (retryable)
    connection error; a refused refresh or missing credentials is not worth retrying."""
    import google.auth.exceptions

    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, google.auth.exceptions.TransportError):
        return errors.ConnectionError(f"cannot reach the token endpoint for {where}: {first}")
    return errors.AuthenticationError(f"cannot get credentials for {where}: {first}")


@contextlib.contextmanager
def sdk_errors(where: str = "Vertex AI") -> Iterator[None]:
    """Raise the SDK's and google-auth's exceptions as :mod:`client.errors` (one line each).

    An API error keeps its HTTP status (403 ``PERMISSION_DENIED`` is an
    :class:`~client.errors.AuthenticationError`); an unreachable control plane, after the SDK's
    own retries, a :class:`~client.errors.ConnectionError`; the SDK's argument checks
    (``ValueError``) a :class:`~client.errors.ParameterError`.
    """
    import google.auth.exceptions
    import requests
    from google.api_core import exceptions as gexc

    try:
        yield
    except errors.VertexYoloError:
        raise
    except gexc.GoogleAPICallError as exc:
        status = exc.code if isinstance(exc.code, int) else 500
        message = f"{type(exc).__name__}: {exc.message}"
        # 401/403: PermissionDeniedError, an AuthenticationError too
        raise errors.error_class(status)(message, status=status, body=str(exc)) from None
    except google.auth.exceptions.GoogleAuthError as exc:
        raise auth_error(exc, where) from None
    except gexc.RetryError as exc:  # the SDK retried an unreachable control plane, then gave up
        error = errors.ConnectionError(f"cannot reach {where}: {exc.cause or exc}")
        error.retryable = False
        raise error from None
    except requests.exceptions.ConnectionError as exc:
        raise errors.ConnectionError(f"cannot reach {where}: {exc}") from None
    except ValueError as exc:  # the SDK's own argument checks
        raise errors.ParameterError(str(exc)) from None

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
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from client import errors
from client.info import EmulatorInfo

#: the scope the SDK gives its credentials (``aiplatform.constants.base.DEFAULT_AUTHED_SCOPES``)
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
LOOPBACK = ("127.0.0.1", "localhost")
#: the SDK's words when it finds no project (a many-line message: ours is one line)
NO_PROJECT = "Unable to find your project"


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
        if not process_alive(info.pid):  # killed, its file left behind: fail now, not in 2 min
            gone = errors.ConnectionError(
                f"the emulator in {info_file} is not running (pid {info.pid} exited): start it "
                f"again (python -m client.emulator --info-file {info_file} ...), or give the "
                "info file of one that runs"
            )
            gone.retryable = False
            raise gone
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


def process_alive(pid: int) -> bool:
    """Whether a process of this machine exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (macOS): the signal said enough
        return True


def fetch_endpoint(endpoint: Any, *, timeout: float, retries: int) -> None:
    """Read the endpoint resource now, within ``timeout`` seconds (``retries`` 0: one try),
    instead of on the first call with the SDK's own policy (retrying an unreachable control
    plane for 120 s, whatever the caller's timeout)."""
    from google.api_core import retry as api_retry

    policy = api_retry.Retry(timeout=timeout) if retries > 0 else None
    endpoint._gca_resource = endpoint.api_client.get_endpoint(
        name=endpoint._gca_resource.name, retry=policy, timeout=timeout
    )


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


def project_in_environment() -> bool:
    """Whether the SDK finds a project in the environment (it reads these two itself)."""
    return bool(os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("CLOUD_ML_PROJECT_ID"))


def auth_error(exc: Exception, where: str) -> errors.VertexYoloError:
    """Ours for a google-auth error: the token endpoint unreachable is a (retryable)
    connection error; a refused refresh or missing credentials is not worth retrying."""
    import google.auth.exceptions

    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, google.auth.exceptions.TransportError):
        return errors.ConnectionError(f"cannot reach the token endpoint for {where}: {first}")
    if NO_PROJECT in str(exc) and not project_in_environment():
        return errors.ParameterError(f"no Google Cloud project for {where}: {errors.PROJECT_HINT}")
    if NO_PROJECT in str(exc) or isinstance(exc, google.auth.exceptions.DefaultCredentialsError):
        # (the SDK says "no project" too when the project is in the environment but no
        # credentials are found to go with it)
        return errors.AuthenticationError(
            f"no Google credentials for {where}: {errors.CREDENTIALS_HINT}"
        )
    return errors.AuthenticationError(f"cannot get credentials for {where}: {first}")


def reason(exc: BaseException) -> str:
    """The gist of a connection error: urllib3's ``HTTPConnectionPool(...): Max retries
    exceeded ... [Errno 111] Connection refused`` is ``Connection refused (url)``."""
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    url = re.search(r"host='([^']+)', port=(\d+)", text)
    if errno:
        return errno[1].strip() + (f" ({url[1]}:{url[2]})" if url else "")
    return text


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
        error = errors.ConnectionError(f"cannot reach {where}: {reason(exc.cause or exc)}")
        error.retryable = False
        raise error from None
    except requests.exceptions.ConnectionError as exc:
        raise errors.ConnectionError(f"cannot reach {where}: {reason(exc)}") from None
    except ValueError as exc:  # the SDK's own argument checks
        if NO_PROJECT in str(exc):
            raise errors.ParameterError(
                f"no Google Cloud project for {where}: {errors.PROJECT_HINT}"
            ) from None
        raise errors.ParameterError(str(exc)) from None

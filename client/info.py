"""``EmulatorInfo``: what a running emulator tells its users, written as JSON to ``--info-file``.

The one schema of that file: the emulator writes it (``client.emulator``), the client library
reads it (``--emulator-info``: the connection in :mod:`client.vertex`, the replicas in
:mod:`client.deploy`). It needs only msgspec, so a ``[client]`` install reads it without the
emulator's dependencies.

The file is replaced atomically (temp file + rename), so a reader polling for it never sees half
of it; it is rewritten when the traffic split or a replica changes and removed when the emulator
stops.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import msgspec

NO_PROXY = "127.0.0.1,localhost"
ReplicaState = Literal["starting", "ready", "unready", "failed", "stopping"]


class ScaleEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A change of a deployed model's replica count."""

    time: str  # RFC 3339
    deployed_model_id: str
    name: str
    replicas_from: int
    replicas_to: int
    reason: str


class ReplicaStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One replica as the info file and ``deploy status`` show it."""

    id: str
    pid: int | None
    port: int
    url: str
    state: ReplicaState
    restarts: int
    outstanding: int
    log: str


class EmulatorInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A running emulator.

    Attributes:
        project, location, endpoint_id: what to give ``aiplatform.init`` and ``aiplatform.Endpoint``.
        endpoint: the full resource name, ``projects/P/locations/L/endpoints/E``.
        control_plane_url: ``http://127.0.0.1:PORT``, the ``api_endpoint`` (REST transport).
        dedicated_endpoint_dns: ``127.0.0.1:PORT2``, the HTTPS data plane (no scheme, as Vertex).
        ca_cert: the PEM to trust for the data plane (``REQUESTS_CA_BUNDLE``).
        deployed_models: deployed model name -> deployed model id.
        traffic_split: deployed model id -> percent (the current split).
        pid: the emulator's process id.
        project_number: the number the servers see as ``AIP_PROJECT_NUMBER``.
        servers: deployed model name -> its server's own ``http://127.0.0.1:PORT`` (bypassing
            the data plane, for diagnostics).
        server_pids: deployed model name -> its server's process id.
        logs: deployed model name -> its server's log file.
        replicas: deployed model id -> its replicas (id, pid, port, state, restarts...), on
            every endpoint; ``servers``, ``server_pids`` and ``logs`` name each one's first.
        scale_events: every change of a replica count, oldest first.
    """

    project: str
    location: str
    endpoint_id: str
    endpoint: str
    control_plane_url: str
    dedicated_endpoint_dns: str
    ca_cert: str
    deployed_models: dict[str, str]
    traffic_split: dict[str, int]
    pid: int
    project_number: str = ""
    servers: dict[str, str] = {}
    server_pids: dict[str, int] = {}
    logs: dict[str, str] = {}
    replicas: dict[str, list[ReplicaStatus]] = {}
    scale_events: list[ScaleEvent] = []

    def pids(self) -> list[int]:
        """Every replica's process id."""
        return [r.pid for rs in self.replicas.values() for r in rs if r.pid is not None]

    @property
    def data_plane_url(self) -> str:
        return f"https://{self.dedicated_endpoint_dns}"

    def invoke_url(self, path: str, deployed_model_id: str | None = None) -> str:
        """The URL ``Endpoint.invoke(path, deployed_model_id=...)`` posts to."""
        pinned = f"/deployedModels/{deployed_model_id}" if deployed_model_id else ""
        return f"{self.data_plane_url}/v1/{self.endpoint}{pinned}/invoke{path}"

    def env(self) -> dict[str, str]:
        """Environment for SDK callers: trust the emulator's certificate, never proxy loopback."""
        return {"REQUESTS_CA_BUNDLE": self.ca_cert, "NO_PROXY": NO_PROXY, "no_proxy": NO_PROXY}

    def init_kwargs(self) -> dict[str, Any]:
        """Arguments for ``aiplatform.init`` (anonymous credentials, REST transport).

        Example:
            aiplatform.init(**info.init_kwargs())
            endpoint = aiplatform.Endpoint(info.endpoint_id)
        """
        from google.auth.credentials import AnonymousCredentials

        return {
            "project": self.project,
            "location": self.location,
            "credentials": AnonymousCredentials(),
            "api_endpoint": self.control_plane_url,
            "api_transport": "rest",
        }

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EmulatorInfo:
        return msgspec.json.decode(Path(path).read_bytes(), type=cls)

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a temp file in the same directory, then a rename over ``path``."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(msgspec.json.format(msgspec.json.encode(self), indent=2) + b"\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

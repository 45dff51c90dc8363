"""What the control plane's changes do to server processes: upload, create, deploy, undeploy.

The store checks and records each change; this module runs the servers behind it.

- Deploy maps the model's container spec to a local server: the image cannot run here, so every
  image runs as the local server command (this interpreter's ``python -m app``; a model the
  emulator declared at start keeps its own command) with the spec's ``args`` appended (its
  ``command``, an entrypoint inside the image, is not used). The server gets Vertex's container
  environment (:func:`client.emulator.config.container_env`: the spec's ``env``, then
  ``AIP_HTTP_PORT``, ``AIP_HEALTH_ROUTE``, ``AIP_DEPLOYED_MODEL_ID``...) and ``AIP_STORAGE_URI``
  from the model's ``artifactUri``: a local directory or ``file://`` URI as it is, a
  ``gs://BUCKET/PATH`` as ``GCS_DIR/BUCKET/PATH`` with ``--gcs-dir`` (without it the deploy
  fails: nothing is fetched from Cloud Storage). The long-running operation stays not done
  until the server answers its health route; then the deployed model joins the endpoint with
  the request's traffic split. A server that exits, or is not healthy within the model's
  ``deploymentTimeout`` (else the emulator's startup timeout), is stopped and fails the
  operation with the end of its log.
- Undeploy takes the deployed model off the endpoint (the store applies Vertex's split rules),
  then stops its server: no process outlives its deployed model.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from client.emulator.config import DeployedModelConfig, container_env, default_command
from client.emulator.processes import Fleet, ModelServer, StartupError, free_port, stop_servers
from client.emulator.resources import (
    LOCAL_RESOURCES,
    ApiError,
    DeployModelRequest,
    Model,
    NewEndpoint,
    Operation,
    Store,
    UndeployModelRequest,
    UploadModelRequest,
    duration_seconds,
    new_id,
)

log = logging.getLogger("client.emulator")
MODEL_NAME = re.compile(r"projects/([^/]+)/locations/([^/]+)/models/([^/]+)")


class Deployments:
    """Runs the control plane's deploys and undeploys as server processes in ``fleet``.

    ``startup_timeout`` bounds a deploy whose model sets no deployment timeout; ``grace`` is the
    time a stopped server gets between SIGTERM and SIGKILL. Call the methods on the event
    loop's (main) thread: servers are started there (see ``processes``).
    """

    def __init__(
        self,
        store: Store,
        fleet: Fleet,
        *,
        dns: str,
        log_dir: Path,
        startup_timeout: float,
        grace: float,
        gcs_dir: str | None = None,
    ) -> None:
        self.store, self.fleet, self.dns, self.log_dir = store, fleet, dns, log_dir
        self.startup_timeout, self.grace, self.gcs_dir = startup_timeout, grace, gcs_dir
        #: model id -> its local command, for the models the emulator declared at start
        self.commands: dict[str, tuple[str, ...]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- resources without processes -----------------------------------------------------------

    def upload(self, request: UploadModelRequest) -> Operation:
        model = self.store.upload(request)
        log.info("uploaded model %s (%s)", model.name, model.container_spec.image_uri)
        return self.store.done(
            "UploadModelResponse", {"model": model.name, "modelVersionId": model.version_id}
        )

    def create_endpoint(self, endpoint_id: str | None, request: NewEndpoint) -> Operation:
        endpoint = self.store.create_endpoint(endpoint_id, request, self.dns)
        log.info("created endpoint %s", endpoint.name)
        return self.store.done("Endpoint", endpoint)

    # -- servers -------------------------------------------------------------------------------

    def server(
        self, spec: DeployedModelConfig, deployed_model_id: str, endpoint_id: str, log_name: str
    ) -> ModelServer:
        """A (not started) server for ``spec`` with Vertex's container environment."""
        port = free_port()
        env = container_env(
            spec,
            port=port,
            deployed_model_id=deployed_model_id,
            endpoint_id=endpoint_id,
            project_number=self.store.project_number,
            inherited=os.environ,
        )
        return ModelServer(
            name=spec.name,
            deployed_model_id=deployed_model_id,
            command=spec.command,
            env=env,
            health_route=spec.health_route,
            log_path=self.log_dir / f"{re.sub(r'[^A-Za-z0-9._-]', '-', log_name)}.log",
            port=port,
        )

    def deploy(self, endpoint_id: str, request: DeployModelRequest) -> Operation:
        """Start the model's server; the operation finishes when it is healthy (or fails)."""
        self.store.endpoint(endpoint_id)
        model = self.store.model(self._model_id(request.deployed_model.model))
        if request.traffic_split:
            self.store.check_deploy_split(endpoint_id, request.traffic_split)
        operation = self.store.start_operation()
        deployed_model_id = new_id()
        name = request.deployed_model.display_name or model.display_name or model.id
        try:
            storage_uri = self.storage_uri(model.artifact_uri)
        except ApiError as exc:
            return self.store.finish(operation, "DeployModelResponse", error=exc)
        spec = model.container_spec
        if spec.command and model.id not in self.commands:
            log.info("%s: the container command %s is not run here", name, spec.command)
        config = DeployedModelConfig(
            name=name,
            command=self.commands.get(model.id, default_command()) + tuple(spec.args),
            env=spec.env_dict(),
            storage_uri=storage_uri,
            health_route=spec.health_route or "/health",
        )
        server = self.server(config, deployed_model_id, endpoint_id, f"{name}-{deployed_model_id}")
        try:
            server.start()
        except StartupError as exc:
            return self.store.finish(
                operation, "DeployModelResponse", error=ApiError.precondition(str(exc))
            )
        self.fleet.add(server)
        timeout = self.startup_timeout
        if spec.deployment_timeout is not None:
            timeout = duration_seconds(spec.deployment_timeout) or timeout
        task = asyncio.get_running_loop().create_task(
            self._finish_deploy(operation, server, endpoint_id, model, request, timeout)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return operation

    async def _finish_deploy(
        self,
        operation: Operation,
        server: ModelServer,
        endpoint_id: str,
        model: Model,
        request: DeployModelRequest,
        timeout: float,
    ) -> None:
        try:
            async with httpx.AsyncClient(trust_env=False) as client:
                await server.wait_healthy(client, time.monotonic() + timeout)
            deployed = self.store.deploy(
                endpoint_id,
                model.id,
                server.deployed_model_id,
                server.name,
                request.deployed_model.dedicated_resources or LOCAL_RESOURCES,
                request.traffic_split,
            )
        except (StartupError, ApiError) as exc:
            error = exc if isinstance(exc, ApiError) else ApiError.precondition(str(exc))
            log.error("deploying %s failed: %s", server.name, error.message)
            self.fleet.remove(server.deployed_model_id)
            await asyncio.to_thread(stop_servers, [server], self.grace)
            self.store.finish(operation, "DeployModelResponse", error=error)
            return
        except Exception as exc:  # never leave the SDK polling an operation that cannot finish
            log.exception("deploying %s failed", server.name)
            try:
                self.store.deployed_model(endpoint_id, server.deployed_model_id)
            except ApiError:  # not in the store: its server serves nothing
                self.fleet.remove(server.deployed_model_id)
                await asyncio.to_thread(stop_servers, [server], self.grace)
            error = ApiError.internal(f"the emulator failed to deploy: {type(exc).__name__}: {exc}")
            self.store.finish(operation, "DeployModelResponse", error=error)
            return
        log.info("deployed %s as %s on endpoint %s", model.name, deployed.id, endpoint_id)
        self.store.finish(operation, "DeployModelResponse", {"deployedModel": deployed})

    async def undeploy(self, endpoint_id: str, request: UndeployModelRequest) -> Operation:
        """Take the deployed model off the endpoint, then stop its server."""
        server = self.fleet.remove(request.deployed_model_id)  # before the info file is rewritten
        try:
            deployed = self.store.undeploy(
                endpoint_id, request.deployed_model_id, request.traffic_split
            )
        except ApiError:
            if server is not None:
                self.fleet.add(server)
            raise
        if server is not None:
            await asyncio.to_thread(stop_servers, [server], self.grace)
        log.info(
            "undeployed %s (%s) from endpoint %s", deployed.display_name, deployed.id, endpoint_id
        )
        return self.store.done("UndeployModelResponse", None)

    def cancel(self) -> None:
        """Stop waiting for deploys in progress (at shutdown; the fleet stops their servers)."""
        for task in self._tasks:
            task.cancel()

    # -- mapping cloud names to local things ---------------------------------------------------

    def _model_id(self, name: str) -> str:
        """The model id in a deploy request's ``projects/P/locations/L/models/M@1`` (or ``M``)."""
        match = MODEL_NAME.fullmatch(name)
        if match:
            self.store.check_parent(match[1], match[2])
            return match[3]
        if "/" in name or not name:
            raise ApiError.invalid(
                f"deployedModel.model {name!r} must be projects/P/locations/L/models/M"
            )
        return name

    def storage_uri(self, artifact_uri: str | None) -> str | None:
        """The local directory a model's ``artifactUri`` stands for (its ``AIP_STORAGE_URI``)."""
        if not artifact_uri:
            return None
        if artifact_uri.startswith("gs://"):
            if self.gcs_dir is None:
                raise ApiError.precondition(
                    f"artifactUri {artifact_uri} cannot be fetched: the emulator works offline. "
                    "Start it with --gcs-dir DIR, a local directory standing in for Cloud "
                    "Storage (gs://BUCKET/PATH is DIR/BUCKET/PATH)"
                )
            path = Path(self.gcs_dir, artifact_uri.removeprefix("gs://").strip("/"))
        elif artifact_uri.startswith("file://"):
            path = Path(unquote(urlparse(artifact_uri).path))
        else:
            path = Path(artifact_uri)
        if not path.is_dir():
            raise ApiError.precondition(
                f"artifactUri {artifact_uri} is not a directory here ({path} does not exist or "
                "is not a directory)"
            )
        return str(path)

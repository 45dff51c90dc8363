"""What the control plane's changes do to the fleet: upload, create, deploy, undeploy.

The store checks and records each change; this module runs the replicas behind it
(:mod:`client.emulator.fleet`).

- Deploy maps the model's container spec to local servers: the image cannot run here, so every
  image runs as the local server command (this interpreter's ``python -m app``; a model the
  emulator declared at start keeps its own command) with the spec's ``args`` appended (its
  ``command``, an entrypoint inside the image, is not used). Each replica gets Vertex's container
  environment (:func:`client.emulator.config.container_env`: the spec's ``env``, then
  ``AIP_HTTP_PORT``, ``AIP_HEALTH_ROUTE``, ``AIP_DEPLOYED_MODEL_ID``...), the health route the
  model names or Vertex's default (``/v1/endpoints/E/deployedModels/D:predict``), and
  ``AIP_STORAGE_URI`` from the model's ``artifactUri``: a local directory or ``file://`` URI as it
  is; a ``gs://BUCKET/PATH`` is copied, as Vertex copies it for its containers, into the
  emulator's own bucket (``gs://vertex-emulator-artifacts/DEPLOYED_MODEL_ID/``), which the
  replicas then read: Cloud Storage here is whatever ``STORAGE_EMULATOR_HOST`` names (a GCS API
  server such as ``gcp-storage-emulator``), through the real ``google-cloud-storage`` client,
  and the servers inherit the variable. ``min_replica_count`` replicas start; the
  long-running operation stays not done until they answer their health route; then the deployed
  model joins the endpoint with the request's traffic split, and its replicas scale between
  min and max on the request's autoscaling targets. A replica that exits, or too few healthy
  within the model's ``deploymentTimeout`` (else the emulator's startup timeout), stops them all
  and fails the operation with the end of a log.
- Undeploy takes the deployed model off the endpoint (the store applies Vertex's split rules),
  then stops its replicas, each draining for the grace period: the operation is done once none
  is left, so no process outlives its deployed model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import msgspec

from client.emulator.config import DeployedModelConfig, container_env, default_command
from client.emulator.fleet import Autoscaling, Fleet, ReplicaSet
from client.emulator.processes import ServerProcess, StartupError, free_port
from client.emulator.resources import (
    CPU_METRIC,
    DUTY_CYCLE_METRIC,
    LOCAL_RESOURCES,
    REQUEST_COUNT_METRIC,
    ApiError,
    DedicatedResources,
    DeployedModelStatus,
    DeployModelRequest,
    Endpoint,
    Model,
    NewEndpoint,
    Operation,
    Store,
    UndeployModelRequest,
    UploadModelRequest,
    duration_seconds,
    new_id,
    now,
)

log = logging.getLogger("client.emulator")
MODEL_NAME = re.compile(r"projects/([^/]+)/locations/([^/]+)/models/([^/]+)")


def default_health_route(endpoint_id: str, deployed_model_id: str) -> str:
    """Vertex's health route for a model uploaded without one (ModelContainerSpec reference)."""
    return f"/v1/endpoints/{endpoint_id}/deployedModels/{deployed_model_id}:predict"


class Deployments:
    """Runs the control plane's deploys and undeploys as replica sets in ``fleet``.

    ``startup_timeout`` bounds a deploy whose model sets no deployment timeout. Call the methods
    on the event loop's (main) thread: processes are started there (see ``processes``).
    """

    def __init__(
        self,
        store: Store,
        fleet: Fleet,
        *,
        dns: str,
        log_dir: Path,
        startup_timeout: float,
    ) -> None:
        self.store, self.fleet, self.dns, self.log_dir = store, fleet, dns, log_dir
        self.startup_timeout = startup_timeout
        #: model id -> its local command, for the models the emulator declared at start
        self.commands: dict[str, tuple[str, ...]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- resources without processes -----------------------------------------------------------

    def upload(self, request: UploadModelRequest) -> Operation:
        model = self.store.upload(request)
        log.info("uploaded model %s (%s)", model.name, model.container_spec.image_uri)
        return self.store.done(
            model.name,
            "UploadModelResponse",
            {"model": model.name, "modelVersionId": model.version_id},
        )

    def create_endpoint(self, endpoint_id: str | None, request: NewEndpoint) -> Operation:
        endpoint = self.store.create_endpoint(endpoint_id, request, self.dns)
        log.info("created endpoint %s", endpoint.name)
        return self.store.done(endpoint.name, "Endpoint", endpoint)

    def delete_endpoint(self, endpoint_id: str) -> Operation:
        endpoint = self.store.delete_endpoint(endpoint_id)
        log.info("deleted endpoint %s", endpoint.name)
        return self.store.done(endpoint.name, EMPTY, None)

    def delete_model(self, model_id: str) -> Operation:
        model = self.store.delete_model(model_id)
        log.info("deleted model %s", model.name)
        return self.store.done(model.name, EMPTY, None)

    def live(self, endpoint: Endpoint) -> Endpoint:
        """``endpoint`` with each deployed model's status: its replicas ready now."""
        models = []
        for deployed in endpoint.deployed_models:
            replicas = self.fleet.get(deployed.id)
            ready = len(replicas.ready) if replicas else 0
            status = DeployedModelStatus(last_update_time=now(), available_replica_count=ready)
            models.append(msgspec.structs.replace(deployed, status=status))
        return msgspec.structs.replace(endpoint, deployed_models=models)

    # -- replicas ------------------------------------------------------------------------------

    def replica_set(
        self,
        spec: DeployedModelConfig,
        deployed_model_id: str,
        endpoint_id: str,
        resources: DedicatedResources | None = None,
    ) -> ReplicaSet:
        """The (not started) replicas of ``spec``; their count and autoscaling from the deploy's
        ``resources``, else from ``spec``."""
        label = re.sub(r"[^A-Za-z0-9._-]", "-", f"{spec.name}-{deployed_model_id}")

        def process(n: int) -> ServerProcess:
            port = free_port()
            env = container_env(
                spec,
                port=port,
                deployed_model_id=deployed_model_id,
                endpoint_id=endpoint_id,
                project_number=self.store.project_number,
                inherited=os.environ,
            )
            return ServerProcess(
                name=f"deployed model '{spec.name}' ({deployed_model_id}), replica {n}",
                command=spec.command,
                env=env,
                health_route=spec.health_route,
                log_path=self.log_dir / f"{label}-{n}.log",
                port=port,
            )

        if resources is not None:
            low = resources.min_replica_count or 1
            high = resources.max_replica_count or low
            autoscaling = Autoscaling(
                request_count_per_minute=resources.target(REQUEST_COUNT_METRIC),
                cpu_utilization=resources.target(CPU_METRIC),
                accelerator_duty_cycle=resources.target(DUTY_CYCLE_METRIC),
            )
        else:
            low, high = spec.replicas, spec.max_replicas or spec.replicas
            autoscaling = Autoscaling(request_count_per_minute=spec.target_requests_per_minute)
        return ReplicaSet(
            deployed_model_id,
            spec.name,
            process,
            min_replicas=low,
            max_replicas=high,
            autoscaling=autoscaling,
            policy=self.fleet.policy,
            on_change=self.fleet.changed,
        )

    def deploy(self, endpoint_id: str, request: DeployModelRequest) -> Operation:
        """Check the request, then (in a task) copy the artifacts and start the replicas; the
        operation finishes when they are healthy (or fails)."""
        endpoint = self.store.endpoint(endpoint_id)
        model = self.store.model(self._model_id(request.deployed_model.model))
        if request.traffic_split:
            self.store.check_deploy_split(endpoint_id, request.traffic_split)
        operation = self.store.start_operation(endpoint.name)
        self._spawn(self._deploy(operation, endpoint_id, model, request))
        return operation

    async def _deploy(
        self, operation: Operation, endpoint_id: str, model: Model, request: DeployModelRequest
    ) -> None:
        deployed_model_id = new_id()
        name = request.deployed_model.display_name or model.display_name or model.id
        try:
            storage_uri = await asyncio.to_thread(
                self.storage_uri, model.artifact_uri, deployed_model_id
            )
        except ApiError as exc:
            self.store.finish(operation, "DeployModelResponse", error=exc)
            return
        spec = model.container_spec
        if spec.command and model.id not in self.commands:
            log.info("%s: the container command %s is not run here", name, spec.command)
        config = DeployedModelConfig(
            name=name,
            command=self.commands.get(model.id, default_command()) + tuple(spec.args),
            env=spec.env_dict(),
            storage_uri=storage_uri,
            health_route=spec.health_route or default_health_route(endpoint_id, deployed_model_id),
        )
        resources = request.deployed_model.dedicated_resources or LOCAL_RESOURCES
        replicas = self.replica_set(config, deployed_model_id, endpoint_id, resources)
        try:
            replicas.start()
        except (StartupError, OSError) as exc:
            await replicas.stop()
            error = ApiError.precondition(str(exc))
            self.store.finish(operation, "DeployModelResponse", error=error)
            return
        self.fleet.add(replicas)
        timeout = self.startup_timeout
        if spec.deployment_timeout is not None:
            timeout = duration_seconds(spec.deployment_timeout) or timeout
        await self._finish_deploy(operation, replicas, endpoint_id, model, request, timeout)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in a task of its own, kept until it is done."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_deploy(
        self,
        operation: Operation,
        replicas: ReplicaSet,
        endpoint_id: str,
        model: Model,
        request: DeployModelRequest,
        timeout: float,
    ) -> None:
        try:
            async with httpx.AsyncClient(trust_env=False) as client:
                await replicas.wait_ready(client, time.monotonic() + timeout)
            deployed = self.store.deploy(
                endpoint_id,
                model.id,
                replicas.deployed_model_id,
                replicas.name,
                request.deployed_model.dedicated_resources or LOCAL_RESOURCES,
                request.traffic_split,
                request.deployed_model,
            )
        except (StartupError, ApiError) as exc:
            error = exc if isinstance(exc, ApiError) else ApiError.precondition(str(exc))
            log.error("deploying %s failed: %s", replicas.name, error.message)
            await self._discard(replicas)
            self.store.finish(operation, "DeployModelResponse", error=error)
            return
        except Exception as exc:  # never leave the SDK polling an operation that cannot finish
            log.exception("deploying %s failed", replicas.name)
            try:
                self.store.deployed_model(endpoint_id, replicas.deployed_model_id)
            except ApiError:  # not in the store: its replicas serve nothing
                await self._discard(replicas)
            error = ApiError.internal(f"the emulator failed to deploy: {type(exc).__name__}: {exc}")
            self.store.finish(operation, "DeployModelResponse", error=error)
            return
        log.info("deployed %s as %s on endpoint %s", model.name, deployed.id, endpoint_id)
        self.store.finish(operation, "DeployModelResponse", {"deployedModel": deployed})

    async def _discard(self, replicas: ReplicaSet) -> None:
        self.fleet.remove(replicas.deployed_model_id)
        await replicas.stop()

    async def undeploy(self, endpoint_id: str, request: UndeployModelRequest) -> Operation:
        """Take the deployed model off the endpoint, then stop its replicas (each drains)."""
        endpoint = self.store.endpoint(endpoint_id)
        deployed = self.store.undeploy(
            endpoint_id, request.deployed_model_id, request.traffic_split
        )  # no new request reaches it from here on
        operation = self.store.start_operation(endpoint.name)
        replicas = self.fleet.remove(request.deployed_model_id)

        async def stop() -> None:
            try:
                if replicas is not None:
                    await replicas.stop()
            finally:
                log.info("undeployed %s (%s) from endpoint %s", deployed.display_name,
                         deployed.id, endpoint_id)  # fmt: skip
                self.store.finish(operation, "UndeployModelResponse", None)

        self._spawn(stop())
        return operation

    def cancel(self) -> None:
        """Stop waiting for deploys in progress (at shutdown; the fleet stops their replicas)."""
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

    def storage_uri(self, artifact_uri: str | None, deployed_model_id: str) -> str | None:
        """The ``AIP_STORAGE_URI`` a model's ``artifactUri`` gives its replicas (blocking: a
        ``gs://`` artifact is copied, see the module docstring)."""
        if not artifact_uri:
            return None
        if artifact_uri.startswith("gs://"):
            return copy_artifacts(artifact_uri, deployed_model_id)
        if artifact_uri.startswith("file://"):
            path = Path(unquote(urlparse(artifact_uri).path))
        else:
            path = Path(artifact_uri)
        if not path.is_dir():
            raise ApiError.precondition(
                f"artifactUri {artifact_uri} is not a directory here ({path} does not exist or "
                "is not a directory)"
            )
        return str(path)


ARTIFACT_BUCKET = "vertex-emulator-artifacts"
EMPTY = "type.googleapis.com/google.protobuf.Empty"  # a delete operation's response


def copy_artifacts(artifact_uri: str, deployed_model_id: str) -> str:
    """Copy every object under ``artifact_uri`` to ``gs://ARTIFACT_BUCKET/DEPLOYED_MODEL_ID/``
    (as Vertex copies a model's artifacts for its containers); that copy's URI."""
    try:
        from google.api_core import exceptions
        from google.cloud import storage
    except ImportError:
        raise ApiError.precondition(
            f"artifactUri {artifact_uri}: reading Cloud Storage needs google-cloud-storage "
            '(pip install "vertex-yolo[emulator]")'
        ) from None
    bucket, _, prefix = artifact_uri.removeprefix("gs://").partition("/")
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    try:
        client = storage.Client()
        blobs = [b for b in client.list_blobs(bucket, prefix=prefix) if not b.name.endswith("/")]
        if not blobs:
            raise ApiError.precondition(f"artifactUri {artifact_uri} holds no object")
        target = client.bucket(ARTIFACT_BUCKET)
        with contextlib.suppress(exceptions.Conflict):  # made already (maybe by another deploy)
            client.create_bucket(ARTIFACT_BUCKET)
        for blob in blobs:
            name = f"{deployed_model_id}/{blob.name[len(prefix) :]}"
            client.bucket(bucket).copy_blob(blob, target, name)
    except exceptions.NotFound:
        raise ApiError.precondition(f"artifactUri {artifact_uri}: no such bucket") from None
    except ApiError:
        raise
    except Exception as exc:  # no credentials, no server: say where Cloud Storage is looked for
        raise ApiError.precondition(
            f"artifactUri {artifact_uri} cannot be read ({type(exc).__name__}: {exc}); offline, "
            "point STORAGE_EMULATOR_HOST at a GCS API server (e.g. gcp-storage-emulator)"
        ) from None
    log.info("copied %d artifact objects from %s for deployed model %s", len(blobs),
             artifact_uri, deployed_model_id)  # fmt: skip
    return f"gs://{ARTIFACT_BUCKET}/{deployed_model_id}/"

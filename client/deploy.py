"""Deploy to Vertex AI: upload a model, create a dedicated endpoint, deploy, split, undeploy.

Plain functions over ``google.cloud.aiplatform`` (call :meth:`Connection.init` first), each
returning a small Struct, and the ``python -m client deploy`` subcommands over them. The same
calls run against Vertex AI and against the local emulator (``python -m client.emulator
--empty``), whose control plane the SDK reaches with ``api_transport="rest"``.

Each operation is first written down as the SDK calls it makes (:class:`SdkCall`): ``--dry-run``
prints them and calls nothing (no credentials needed); a real run makes exactly those calls.

Example:
    conn = Connection(project="p", location="us-central1")
    conn.init()
    model = upload_model(UploadSpec(display_name="yolo", image_uri=IMAGE, artifact_uri=GS))
    endpoint = create_endpoint("yolo-endpoint", inference_timeout=600)
    deployment = deploy_model(endpoint.resource_name, model.resource_name, traffic_percentage=100)
    set_traffic_split(endpoint.resource_name, {deployment.deployed_model_id: 100})
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from client import errors

DEFAULT_MACHINE_TYPE = "n1-standard-4"
INVOKE_ROUTE_PREFIX = "/*"  # every path of the container under /invoke (the only allowed value)


class Code(str):
    """A Python expression shown as is in a printed call (a variable, a constructor)."""

    def __repr__(self) -> str:
        return str(self)


@dataclass(frozen=True)
class SdkCall:
    """One SDK call, as ``--dry-run`` prints it: ``result = func(*args, **kwargs)``."""

    func: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    result: str | None = None

    def __str__(self) -> str:
        params = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        call = f"{self.func}({', '.join(params)})"
        return f"{self.result} = {call}" if self.result else call


# -- results ----------------------------------------------------------------------------------


class UploadedModel(msgspec.Struct, frozen=True, kw_only=True):
    resource_name: str
    model_id: str
    version_id: str
    display_name: str


class DeployedModelStatus(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    display_name: str
    model: str
    traffic_percentage: int
    machine_type: str | None = None
    accelerator_type: str | None = None
    accelerator_count: int | None = None
    min_replica_count: int | None = None
    max_replica_count: int | None = None


class EndpointStatus(msgspec.Struct, frozen=True, kw_only=True):
    """An endpoint as the control plane describes it: what ``deploy status`` prints."""

    resource_name: str
    endpoint_id: str
    display_name: str
    dedicated_endpoint_enabled: bool
    dedicated_endpoint_dns: str | None
    inference_timeout_s: float | None
    traffic_split: dict[str, int]
    deployed_models: list[DeployedModelStatus]


class Deployment(msgspec.Struct, frozen=True, kw_only=True):
    deployed_model_id: str
    endpoint: EndpointStatus


# -- connection -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """Where the SDK sends its calls. ``api_endpoint`` (an emulator's ``http://host:port``)
    switches to the REST transport and anonymous credentials; without it the SDK uses Vertex AI
    and the default Google credentials."""

    project: str | None = None
    location: str | None = None
    api_endpoint: str | None = None

    def init_call(self) -> SdkCall:
        from client.cli import is_emulator  # client.cli imports this module

        kwargs: dict[str, Any] = {
            k: v for k, v in (("project", self.project), ("location", self.location)) if v
        }
        if self.api_endpoint:
            kwargs["api_endpoint"] = self.api_endpoint
        if is_emulator(self.api_endpoint):
            kwargs |= {"api_transport": "rest", "credentials": Code("AnonymousCredentials()")}
        return SdkCall("aiplatform.init", kwargs=kwargs)

    def init(self) -> None:
        """``aiplatform.init`` with these settings (the SDK's configuration is global)."""
        from google.cloud import aiplatform

        from client.cli import is_emulator, loopback_without_proxy

        loopback_without_proxy(self.api_endpoint)
        kwargs = dict(self.init_call().kwargs)
        if is_emulator(self.api_endpoint):
            from google.auth.credentials import AnonymousCredentials

            kwargs["credentials"] = AnonymousCredentials()
        aiplatform.init(**kwargs)


# -- operations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadSpec:
    """``Model.upload`` for this server's image: every path under ``/invoke`` (``/*``).

    ``artifact_uri`` is a ``gs://`` directory of weights (the server's ``AIP_STORAGE_URI``); ``env``
    the container's environment (``SERVE_MODELS``...); ``args`` its command-line arguments;
    ``deployment_timeout`` the seconds a deployment may take to become healthy.
    """

    display_name: str
    image_uri: str
    artifact_uri: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    args: Sequence[str] = ()
    port: int = 8080
    health_route: str = "/health"
    deployment_timeout: int | None = None


def upload_calls(spec: UploadSpec) -> list[SdkCall]:
    if spec.artifact_uri and not spec.artifact_uri.startswith("gs://"):
        # The SDK would copy a local path to a staging bucket: say so before anything runs.
        raise errors.ParameterError(
            f"artifact_uri {spec.artifact_uri!r} must be a gs:// URI (the emulator maps gs:// "
            "to a local directory with --gcs-dir)"
        )
    kwargs: dict[str, Any] = {
        "display_name": spec.display_name,
        "serving_container_image_uri": spec.image_uri,
        "serving_container_invoke_route_prefix": INVOKE_ROUTE_PREFIX,
        "serving_container_health_route": spec.health_route,
        "serving_container_ports": [spec.port],
    }
    optional = {
        "artifact_uri": spec.artifact_uri,
        "serving_container_environment_variables": dict(spec.env) or None,
        "serving_container_args": list(spec.args) or None,
        "serving_container_deployment_timeout": spec.deployment_timeout,
    }
    kwargs |= {k: v for k, v in optional.items() if v is not None}
    return [SdkCall("aiplatform.Model.upload", kwargs=kwargs, result="model")]


def upload_model(spec: UploadSpec) -> UploadedModel:
    """Upload the model (waits for the operation)."""
    from google.cloud import aiplatform

    (call,) = upload_calls(spec)
    model = aiplatform.Model.upload(**call.kwargs)
    return UploadedModel(
        resource_name=model.resource_name,
        model_id=model.name,
        version_id=model.version_id or "",
        display_name=model.display_name,
    )


def create_endpoint_calls(
    display_name: str, *, inference_timeout: int | None = None, endpoint_id: str | None = None
) -> list[SdkCall]:
    kwargs: dict[str, Any] = {"display_name": display_name, "dedicated_endpoint_enabled": True}
    if inference_timeout is not None:
        kwargs["inference_timeout"] = inference_timeout
    if endpoint_id is not None:
        kwargs["endpoint_id"] = endpoint_id
    return [SdkCall("aiplatform.Endpoint.create", kwargs=kwargs, result="endpoint")]


def create_endpoint(
    display_name: str, *, inference_timeout: int | None = None, endpoint_id: str | None = None
) -> EndpointStatus:
    """Create a dedicated endpoint (``invoke`` needs one); ``inference_timeout`` in seconds."""
    from google.cloud import aiplatform

    (call,) = create_endpoint_calls(
        display_name, inference_timeout=inference_timeout, endpoint_id=endpoint_id
    )
    return _status(aiplatform.Endpoint.create(**call.kwargs))


def deploy_calls(
    endpoint: str,
    model: str,
    *,
    display_name: str | None = None,
    traffic_percentage: int | None = None,
    machine_type: str = DEFAULT_MACHINE_TYPE,
    accelerator_type: str | None = None,
    accelerator_count: int | None = None,
    min_replica_count: int = 1,
    max_replica_count: int = 1,
) -> list[SdkCall]:
    kwargs: dict[str, Any] = {"model": Code("model")}
    optional = {
        "deployed_model_display_name": display_name,
        "traffic_percentage": traffic_percentage,
        "machine_type": machine_type,
        "accelerator_type": accelerator_type,
        "accelerator_count": accelerator_count,
        "min_replica_count": min_replica_count,
        "max_replica_count": max_replica_count,
    }
    kwargs |= {k: v for k, v in optional.items() if v is not None}
    return [
        SdkCall("aiplatform.Endpoint", (endpoint,), result="endpoint"),
        SdkCall("aiplatform.Model", (model,), result="model"),
        SdkCall("endpoint.deploy", kwargs=kwargs),
    ]


def deploy_model(endpoint: str, model: str, **options: Any) -> Deployment:
    """Deploy ``model`` to ``endpoint`` (waits until it serves); ``options`` as
    :func:`deploy_calls`. ``traffic_percentage`` is the new model's share, the others scaled
    down to make room (the SDK's default: 100 for the first model, else 0)."""
    from google.cloud import aiplatform

    endpoint_call, model_call, deploy_call = deploy_calls(endpoint, model, **options)
    target = aiplatform.Endpoint(*endpoint_call.args)
    before = {d.id for d in target.gca_resource.deployed_models}
    target.deploy(**{**deploy_call.kwargs, "model": aiplatform.Model(*model_call.args)})
    status = _status(target)
    new = [d.id for d in status.deployed_models if d.id not in before]
    return Deployment(deployed_model_id=new[0] if new else "", endpoint=status)


def split_calls(endpoint: str, split: Mapping[str, int]) -> list[SdkCall]:
    return [
        SdkCall("aiplatform.Endpoint", (endpoint,), result="endpoint"),
        SdkCall("endpoint.update", kwargs={"traffic_split": dict(split)}),
    ]


def set_traffic_split(endpoint: str, split: Mapping[str, int]) -> EndpointStatus:
    """Replace the endpoint's traffic split (deployed model id -> percent, summing to 100)."""
    from google.cloud import aiplatform

    endpoint_call, update_call = split_calls(endpoint, split)
    target = aiplatform.Endpoint(*endpoint_call.args)
    return _status(target.update(**update_call.kwargs))


def undeploy_calls(endpoint: str, deployed_model_id: str) -> list[SdkCall]:
    return [
        SdkCall("aiplatform.Endpoint", (endpoint,), result="endpoint"),
        SdkCall("endpoint.undeploy", kwargs={"deployed_model_id": deployed_model_id}),
    ]


def undeploy_model(endpoint: str, deployed_model_id: str) -> EndpointStatus:
    """Undeploy one deployed model; the SDK spreads its traffic over the others."""
    from google.cloud import aiplatform

    endpoint_call, undeploy_call = undeploy_calls(endpoint, deployed_model_id)
    target = aiplatform.Endpoint(*endpoint_call.args)
    target.undeploy(**undeploy_call.kwargs)
    return _status(aiplatform.Endpoint(target.resource_name))


def status_calls(endpoint: str) -> list[SdkCall]:
    return [SdkCall("aiplatform.Endpoint", (endpoint,), result="endpoint")]


def endpoint_status(endpoint: str) -> EndpointStatus:
    """The endpoint, its deployed models, traffic split and dedicated DNS."""
    from google.cloud import aiplatform

    (call,) = status_calls(endpoint)
    return _status(aiplatform.Endpoint(*call.args))


def _status(endpoint: Any) -> EndpointStatus:
    """An ``aiplatform.Endpoint`` (as last read) as an :class:`EndpointStatus`."""
    resource = endpoint.gca_resource
    split = {k: int(v) for k, v in resource.traffic_split.items()}
    models = []
    for d in resource.deployed_models:
        resources = d.dedicated_resources
        spec = resources.machine_spec
        accelerator = spec.accelerator_type.name if spec.accelerator_type else None
        models.append(
            DeployedModelStatus(
                id=d.id,
                display_name=d.display_name,
                model=d.model,
                traffic_percentage=split.get(d.id, 0),
                machine_type=spec.machine_type or None,
                accelerator_type=accelerator,
                accelerator_count=spec.accelerator_count or None,
                min_replica_count=resources.min_replica_count or None,
                max_replica_count=resources.max_replica_count or None,
            )
        )
    timeout = resource.client_connection_config.inference_timeout
    return EndpointStatus(
        resource_name=resource.name,
        endpoint_id=resource.name.rsplit("/", 1)[-1],
        display_name=resource.display_name,
        dedicated_endpoint_enabled=resource.dedicated_endpoint_enabled,
        dedicated_endpoint_dns=resource.dedicated_endpoint_dns or None,
        inference_timeout_s=timeout.total_seconds() if timeout else None,
        traffic_split=split,
        deployed_models=models,
    )


# -- command line -----------------------------------------------------------------------------


def _options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection (Vertex AI, or the emulator with --emulator-info)")
    g.add_argument("--project", help="Vertex project (else the SDK's default)")
    g.add_argument("--location", help="Vertex region, e.g. us-central1")
    g.add_argument("--api-endpoint", help="control-plane URL (an emulator's http://host:port)")
    g.add_argument(
        "--emulator-info",
        metavar="FILE",
        help="a running emulator's info file: its project, location, control plane (and "
        "endpoint, when --endpoint is not given)",
    )
    g.add_argument("--json", action="store_true", help="print the result as JSON")
    g.add_argument(
        "--dry-run", action="store_true", help="print the SDK calls it would make; make none"
    )
    return p


def _endpoint_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--endpoint",
        help="endpoint id or resource name (default with --emulator-info: the emulator's)",
    )


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise errors.ParameterError(f"{what} {item!r} must look like KEY=VALUE")
        out[key] = value
    return out


def _split(items: Sequence[str]) -> dict[str, int]:
    split = {}
    for key, value in _pairs(items, "split").items():
        try:
            split[key] = int(value)
        except ValueError:
            raise errors.ParameterError(
                f"split {key}={value!r}: the percent must be an integer"
            ) from None
    return split


def _connection(args: argparse.Namespace) -> tuple[Connection, str | None]:
    """The connection and the endpoint (``--endpoint``, else an emulator's), from the options."""
    from client.cli import vertex_target

    target = vertex_target(args)
    return Connection(target.project, target.location, target.api_endpoint), target.endpoint


def _print(result: msgspec.Struct, args: argparse.Namespace, lines: list[str]) -> None:
    from client.cli import json_text

    sys.stdout.write(json_text(result) if args.json else "\n".join(lines) + "\n")


def _status_lines(status: EndpointStatus) -> list[str]:
    timeout = f"{status.inference_timeout_s:g} s" if status.inference_timeout_s else "default"
    lines = [
        f"endpoint {status.resource_name}",
        f"  display name      {status.display_name}",
        f"  dedicated         {status.dedicated_endpoint_enabled}",
        f"  dedicated DNS     {status.dedicated_endpoint_dns or '-'}",
        f"  inference timeout {timeout}",
        f"  deployed models   {len(status.deployed_models) or 'none'}",
    ]
    for d in status.deployed_models:
        machine = d.machine_type or "?"
        if d.accelerator_type:
            machine += f" + {d.accelerator_count or 1} x {d.accelerator_type}"
        lines.append(
            f"    {d.id}  {d.traffic_percentage:3d}%  {d.display_name}  ({d.model}; {machine}, "
            f"replicas {d.min_replica_count}-{d.max_replica_count})"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    """Run one ``deploy`` subcommand; SDK errors become :mod:`client.errors` (``cli.main`` maps
    them to exit codes)."""
    connection, endpoint = _connection(args)
    if hasattr(args, "endpoint") and not endpoint:
        raise errors.ParameterError("give --endpoint (or --emulator-info of an emulator with one)")
    action = args.action
    if action == "upload":
        spec = UploadSpec(
            display_name=args.display_name,
            image_uri=args.image_uri,
            artifact_uri=args.artifact_uri,
            env=_pairs(args.env, "--env"),
            args=args.arg,
            port=args.port,
            health_route=args.health_route,
            deployment_timeout=args.deployment_timeout,
        )
        calls = upload_calls(spec)
    elif action == "create-endpoint":
        calls = create_endpoint_calls(
            args.display_name,
            inference_timeout=args.inference_timeout,
            endpoint_id=args.endpoint_id,
        )
    elif action == "deploy":
        options = {
            "display_name": args.display_name,
            "traffic_percentage": args.traffic_percentage,
            "machine_type": args.machine_type,
            "accelerator_type": args.accelerator_type,
            "accelerator_count": args.accelerator_count,
            "min_replica_count": args.min_replicas,
            "max_replica_count": args.max_replicas,
        }
        calls = deploy_calls(endpoint, args.model, **options)
    elif action == "split":
        split = _split(args.split)
        calls = split_calls(endpoint, split)
    elif action == "undeploy":
        calls = undeploy_calls(endpoint, args.deployed_model_id)
    else:
        calls = status_calls(endpoint)
    if args.dry_run:
        for call in [connection.init_call(), *calls]:
            print(call)
        return 0
    with _sdk_errors():
        connection.init()
        _progress_to_stderr()
        if action == "upload":
            model = upload_model(spec)
            _print(model, args, [f"model {model.resource_name} (version {model.version_id})"])
        elif action == "create-endpoint":
            status = create_endpoint(
                args.display_name,
                inference_timeout=args.inference_timeout,
                endpoint_id=args.endpoint_id,
            )
            _print(status, args, _status_lines(status))
        elif action == "deploy":
            deployment = deploy_model(endpoint, args.model, **options)
            lines = [f"deployed model {deployment.deployed_model_id}"]
            _print(deployment, args, lines + _status_lines(deployment.endpoint))
        elif action == "split":
            status = set_traffic_split(endpoint, split)
            _print(status, args, _status_lines(status))
        elif action == "undeploy":
            status = undeploy_model(endpoint, args.deployed_model_id)
            lines = [f"undeployed {args.deployed_model_id}"]
            _print(status, args, lines + _status_lines(status))
        else:
            status = endpoint_status(endpoint)
            _print(status, args, _status_lines(status))
    return 0


def _progress_to_stderr() -> None:
    """The SDK logs its progress ("Deploying model to Endpoint...") to stdout: move it to stderr,
    so that stdout holds only the result (``--json`` stays parseable)."""
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith("google.cloud.aiplatform") and isinstance(logger, logging.Logger):
            for handler in logger.handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream is not sys.stderr:
                    handler.setStream(sys.stderr)


@contextlib.contextmanager
def _sdk_errors() -> Iterator[None]:
    """Raise the SDK's exceptions as :mod:`client.errors` (printed as one line, no traceback)."""
    import google.auth.exceptions
    import requests
    from google.api_core import exceptions as gexc

    try:
        yield
    except gexc.GoogleAPICallError as exc:
        status = exc.code if isinstance(exc.code, int) else 500
        raise errors.APIError(f"{type(exc).__name__}: {exc.message}", status=status) from None
    except google.auth.exceptions.TransportError as exc:
        raise errors.ConnectionError(str(exc).splitlines()[0]) from None
    except google.auth.exceptions.GoogleAuthError as exc:  # no project, no or refused login
        raise errors.AuthenticationError(str(exc).splitlines()[0]) from None
    except gexc.RetryError as exc:  # the SDK retried an unreachable control plane, then gave up
        raise errors.ConnectionError(
            f"cannot reach the control plane: {exc.cause or exc}"
        ) from None
    except requests.exceptions.ConnectionError as exc:
        raise errors.ConnectionError(f"cannot reach the control plane: {exc}") from None
    except errors.VertexYoloError:
        raise
    except ValueError as exc:  # the SDK's own argument checks
        raise errors.ParameterError(str(exc)) from None


def add(sub: Any) -> None:
    """The ``deploy`` subcommand group, for :data:`client.cli.COMMANDS`."""
    p = sub.add_parser(
        "deploy",
        help="upload, create an endpoint, deploy, split traffic, undeploy (Vertex or emulator)",
        description="Vertex AI deployment over google-cloud-aiplatform; the same commands run "
        "against the local emulator (--emulator-info). --dry-run prints the SDK calls.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = _options()

    q = actions.add_parser("upload", parents=[common], help="Model.upload (invoke prefix /*)")
    q.add_argument("--display-name", required=True)
    q.add_argument("--image-uri", required=True, help="the server's container image")
    q.add_argument("--artifact-uri", help="gs:// directory of weights (AIP_STORAGE_URI)")
    q.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="(repeat)")
    q.add_argument("--arg", action="append", default=[], help="a container argument (repeat)")
    q.add_argument("--port", type=int, default=8080, help="container port (default 8080)")
    q.add_argument("--health-route", default="/health", help="default /health")
    q.add_argument(
        "--deployment-timeout", type=int, metavar="SECONDS", help="time to become healthy"
    )

    q = actions.add_parser("create-endpoint", parents=[common], help="Endpoint.create (dedicated)")
    q.add_argument("--display-name", required=True)
    q.add_argument(
        "--inference-timeout", type=int, metavar="SECONDS", help="per request (Vertex: 600)"
    )
    q.add_argument("--endpoint-id", help="the id to create (default: Vertex picks one)")

    q = actions.add_parser("deploy", parents=[common], help="endpoint.deploy(model)")
    _endpoint_option(q)
    q.add_argument("--model", required=True, help="model id or resource name")
    q.add_argument("--display-name", help="the deployed model's (default: the model's)")
    q.add_argument(
        "--traffic-percentage",
        type=int,
        help="its share; the others scale down (default: 100 if first, else 0)",
    )
    q.add_argument("--machine-type", default=DEFAULT_MACHINE_TYPE)
    q.add_argument("--accelerator-type", help="e.g. NVIDIA_L4")
    q.add_argument("--accelerator-count", type=int)
    q.add_argument("--min-replicas", type=int, default=1)
    q.add_argument("--max-replicas", type=int, default=1)

    q = actions.add_parser("split", parents=[common], help="endpoint.update(traffic_split)")
    _endpoint_option(q)
    q.add_argument("split", nargs="+", metavar="DEPLOYED_MODEL_ID=PERCENT")

    q = actions.add_parser("undeploy", parents=[common], help="endpoint.undeploy")
    _endpoint_option(q)
    q.add_argument("deployed_model_id")

    q = actions.add_parser(
        "status", parents=[common], help="the endpoint, deployed models, split, DNS"
    )
    _endpoint_option(q)
    p.set_defaults(func=run)

"""What the emulator deploys: the endpoint, its deployed models and the traffic split.

Built from a TOML (or JSON) file, from ``python -m client.emulator`` flags, or in code, and
validated once: :func:`validate` raises :class:`ConfigError` listing every problem, and the CLI
exits with status 2.

A config file looks like::

    project = "local-project"        # optional, as are all top-level keys
    location = "us-central1"
    endpoint_id = "1234567890123456789"

    [[deployed_models]]
    name = "shapes-a"
    percent = 50                     # traffic share; all or none given (none: an even split)

    [[deployed_models]]
    name = "shapes-b"
    percent = 50
    env = { SERVE_DEFAULT_MODEL = "shapes-segment" }
    # command = ["python", "-m", "app"]    (the default: this interpreter, -m app)
    # models = { yolo11n = "/weights/yolo11n.pt" }   (sugar for SERVE_MODELS)
    # storage_uri = "/path/to/artifacts"   (AIP_STORAGE_URI)

``empty = true`` (``--empty``) starts with no endpoint and no model: the SDK then uploads models,
creates endpoints and deploys through the control plane (``python -m client deploy ...``).
A model's ``gs://`` artifact is read from the Cloud Storage ``STORAGE_EMULATOR_HOST`` names
(a GCS API server, offline), see :mod:`client.emulator.deployments`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ENDPOINT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What Vertex sets in every container and the emulator sets for each server (container_env):
# key -> how to choose its value instead (a deployment's env cannot set these).
CONTAINER_ENV = {
    "AIP_HTTP_PORT": "the emulator gives each server a free port",
    "AIP_HEALTH_ROUTE": "use health_route",
    "AIP_DEPLOYED_MODEL_ID": "use id",
    "AIP_ENDPOINT_ID": "use endpoint_id (--endpoint-id)",
    "AIP_PROJECT_NUMBER": "use project_number (--project-number)",
    "AIP_STORAGE_URI": "use storage_uri (--storage-uri NAME=URI)",
    "AIP_MODE": "the emulator sets PREDICTION",
    "AIP_FRAMEWORK": "the emulator sets CUSTOM_CONTAINER",
    "AIP_MACHINE_TYPE": "the emulator sets local",
}
MAX_INFERENCE_TIMEOUT = 3600.0  # Vertex's upper bound for an endpoint's inference_timeout
# The bundled demo: the same server twice, B answering /detect with the segmentation weights,
# so that the two deployed models give visibly different results (what an A/B test needs).
DEMO: tuple[tuple[str, dict[str, str]], ...] = (
    ("shapes-a", {}),
    ("shapes-b", {"SERVE_DEFAULT_MODEL": "shapes-segment"}),
)


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem."""


def default_command() -> tuple[str, ...]:
    """The project's inference server, run by this interpreter."""
    return (sys.executable, "-m", "app")


@dataclass(frozen=True)
class DeployedModelConfig:
    """One deployed model: a server process the emulator starts and routes to.

    ``percent`` is its share of untargeted traffic (``None``: split evenly with the others).
    ``id`` is the deployed model id (default: a random 19-digit number, as Vertex makes).
    ``replicas`` to ``max_replicas`` (default: as many) is its replica count, as a deploy's
    ``min_replica_count`` and ``max_replica_count``; ``target_requests_per_minute`` its
    autoscaling target per replica (else CPU utilisation, Vertex's default, when max > min).
    """

    name: str
    percent: int | None = None
    command: tuple[str, ...] = field(default_factory=default_command)
    env: Mapping[str, str] = field(default_factory=dict)
    models: Mapping[str, str] = field(default_factory=dict)
    storage_uri: str | None = None
    health_route: str = "/health"
    id: str | None = None
    replicas: int = 1
    max_replicas: int | None = None
    target_requests_per_minute: int | None = None

    def server_env(self) -> dict[str, str]:
        """The declared environment (the model's ``containerSpec.env``), ``models`` folded in."""
        env = dict(self.env)
        if self.models:
            env["SERVE_MODELS"] = ",".join(f"{k}={v}" for k, v in self.models.items())
        return env


def container_env(
    spec: DeployedModelConfig,
    *,
    port: int,
    deployed_model_id: str,
    endpoint_id: str,
    project_number: str,
    inherited: Mapping[str, str],
) -> dict[str, str]:
    """The environment a deployed model's server runs with, in increasing precedence.

    ``inherited`` (the emulator's own environment, so a local server finds its caches) without
    any ``AIP_*``: those describe a container, and one left over in a shell must not leak in;
    ``SERVE_HOST=127.0.0.1`` (servers stay private, behind the data plane);
    ``SERVE_TORCH_THREADS=1``, ``SERVE_WORKERS=1`` and ``SERVE_PROCESSES=1`` unless inherited
    (the replicas share this machine); the declared env;
    then what Vertex sets (:data:`CONTAINER_ENV`, which the declared env cannot hold).
    """
    env = {"PYTHONUNBUFFERED": "1"}
    env.update((k, v) for k, v in inherited.items() if not k.startswith("AIP_"))
    env["SERVE_HOST"] = "127.0.0.1"
    # Every replica shares this one machine (on Vertex each has its own): servers that each
    # spin an OpenMP team over all its cores slow one another down many times over (three on 2
    # cores: p95 20-40x), so one torch thread, one inference call at a time and one process
    # each (the replicas are the parallelism) unless the environment or the model says.
    for key in ("SERVE_TORCH_THREADS", "SERVE_WORKERS", "SERVE_PROCESSES"):
        if not env.get(key, "").strip():
            env[key] = "1"
    env.update(spec.server_env())
    vertex = {
        "AIP_HTTP_PORT": str(port),
        "AIP_HEALTH_ROUTE": spec.health_route,
        "AIP_DEPLOYED_MODEL_ID": deployed_model_id,
        "AIP_ENDPOINT_ID": endpoint_id,
        "AIP_PROJECT_NUMBER": project_number,
        "AIP_STORAGE_URI": spec.storage_uri,
        "AIP_MODE": "PREDICTION",
        "AIP_FRAMEWORK": "CUSTOM_CONTAINER",
        "AIP_MACHINE_TYPE": "local",
    }
    env.update((k, v) for k in CONTAINER_ENV if (v := vertex[k]) is not None)
    return env


@dataclass(frozen=True)
class EmulatorConfig:
    """The whole emulator: where it listens, the endpoint and what is deployed on it.

    Ports 0 pick free ports. ``startup_timeout`` bounds the wait for every server to answer its
    health route (and a runtime deploy's, unless its model sets a deployment timeout).
    ``inference_timeout`` is the endpoint's total time per request, as Vertex's (default 600 s,
    at most 3600 s): a request with no response headers by then gets 504, and a streamed answer
    still running then is cut. The fleet's settings (probes, restarts, grace period, capacity,
    autoscaling windows) are :class:`client.emulator.fleet.FleetPolicy`'s, under the same names.
    """

    deployed_models: tuple[DeployedModelConfig, ...] = ()
    project: str = "local-project"
    project_number: str | None = None
    location: str = "us-central1"
    endpoint_id: str | None = None
    display_name: str = "local-endpoint"
    host: str = "127.0.0.1"
    control_port: int = 0
    data_port: int = 0
    startup_timeout: float = 300.0
    inference_timeout: float = 600.0
    log_dir: str | None = None
    empty: bool = False
    probe_interval: float = 1.0
    restart_backoff: float = 10.0
    grace_period: float = 30.0
    replica_capacity: int = 64
    autoscale_window: float = 60.0
    scale_down_delay: float = 600.0
    split_seed: int = 0

    @classmethod
    def demo(cls, **overrides: Any) -> EmulatorConfig:
        """The bundled demo models as two deployed models at 50/50."""
        models = tuple(DeployedModelConfig(n, 50, env=e) for n, e in DEMO)
        return cls(deployed_models=models, **overrides)

    def split(self) -> dict[str, int]:
        """Name -> percent, with an even split (remainder to the first ones) when none is given."""
        models = self.deployed_models
        if models and all(m.percent is None for m in models):
            share, extra = divmod(100, len(models))
            return {m.name: share + (i < extra) for i, m in enumerate(models)}
        return {m.name: m.percent or 0 for m in models}

    def to_dict(self) -> dict[str, Any]:
        """Plain data that :func:`from_dict` reads back (the library API passes it as JSON)."""
        top = {k: v for k, v in vars(self).items() if k != "deployed_models" and v is not None}
        top["deployed_models"] = [
            {
                k: (list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v)
                for k, v in vars(m).items()
                if v is not None
            }
            for m in self.deployed_models
        ]
        return top


_TOP_KEYS = {f for f in EmulatorConfig.__dataclass_fields__ if f != "deployed_models"}
_MODEL_KEYS = set(DeployedModelConfig.__dataclass_fields__)


def load(path: str | Path) -> EmulatorConfig:
    """Read a ``.toml`` (or ``.json``) config file; raise :class:`ConfigError` if it is bad."""
    return validate(read(path))


def read(path: str | Path) -> EmulatorConfig:
    """Read a config file checking its shape only (the CLI validates after applying flags)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    try:
        data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a table")
    return from_dict(data)


def from_dict(data: Mapping[str, Any]) -> EmulatorConfig:
    """Build a config from plain data, checking key names and types (not values: :func:`validate`)."""
    errors: list[str] = []
    top = _typed(data, _TOP_KEYS | {"deployed_models"}, "config", errors)
    models: list[DeployedModelConfig] = []
    raw_models = top.pop("deployed_models", [])
    if not isinstance(raw_models, list):
        errors.append("deployed_models must be an array of tables ([[deployed_models]])")
        raw_models = []
    for i, raw in enumerate(raw_models):
        where = f"deployed_models[{i}]"
        if not isinstance(raw, dict):
            errors.append(f"{where} must be a table")
            continue
        values = _typed(raw, _MODEL_KEYS, where, errors)
        if "name" not in values:
            errors.append(f"{where} needs a name")
            continue
        models.append(DeployedModelConfig(**values))
    if errors:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))
    return EmulatorConfig(deployed_models=tuple(models), **top)


_TYPES: dict[str, tuple[type, ...]] = {
    "percent": (int,),
    "control_port": (int,),
    "data_port": (int,),
    "startup_timeout": (int, float),
    "inference_timeout": (int, float),
    "probe_interval": (int, float),
    "restart_backoff": (int, float),
    "grace_period": (int, float),
    "replica_capacity": (int,),
    "autoscale_window": (int, float),
    "scale_down_delay": (int, float),
    "split_seed": (int,),
    "replicas": (int,),
    "max_replicas": (int,),
    "target_requests_per_minute": (int,),
    "empty": (bool,),
    "command": (list,),
    "env": (dict,),
    "models": (dict,),
}

_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    str: "a string",
    list: "an array",
    dict: "a table",
}


def _typed(raw: Mapping[str, Any], keys: set[str], where: str, errors: list[str]) -> dict[str, Any]:
    """Keep the known keys of ``raw`` with the right types, noting every unknown or mistyped one."""
    out: dict[str, Any] = {}
    for key, given in raw.items():
        value: Any = given
        if key not in keys:
            errors.append(f"{where}: unknown key {key!r} (known: {', '.join(sorted(keys))})")
            continue
        if key == "deployed_models":
            out[key] = value
            continue
        expected = _TYPES.get(key, (str,))
        if (isinstance(value, bool) and bool not in expected) or not _instance(value, expected):
            names = " or ".join(_TYPE_NAMES[t] for t in expected)
            errors.append(f"{where}.{key} must be {names}, not {value!r}")
            continue
        if key == "command":
            if not all(isinstance(v, str) for v in value):
                errors.append(f"{where}.command must be a list of strings")
                continue
            value = tuple(value)
        elif key in ("env", "models"):
            if not all(isinstance(v, str) for v in value.values()):
                errors.append(f"{where}.{key} values must be strings")
                continue
            value = dict(value)
        out[key] = value
    return out


def _instance(value: object, kinds: tuple[type, ...]) -> bool:
    """``isinstance``, without narrowing ``value`` for the type checker (it stays Any)."""
    return isinstance(value, kinds)


def unwritable(directory: Path, what: str, *, create: bool = True) -> str | None:
    """Why files cannot be written in ``directory`` (made on demand if ``create``), or None.

    Checked with the configuration, so that a bad path exits with status 2 before any server
    starts rather than failing at the first write.
    """
    existing = directory
    while create and not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        reason = "is not a directory" if existing.exists() else "does not exist"
        return f"{what} {str(directory)!r}: {str(existing)!r} {reason}"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{what} {str(directory)!r}: {str(existing)!r} is not writable"
    return None


def validate(config: EmulatorConfig) -> EmulatorConfig:
    """Check every value; return the config with an even split filled in when none was given."""
    errors: list[str] = []
    models = config.deployed_models
    if not models and not config.empty:
        errors.append("declare at least one deployed model (or start empty: --empty)")
    if models and config.empty:
        errors.append(f"an empty emulator deploys nothing at start: drop {len(models)} model(s)")
    names = [m.name for m in models]
    for name in sorted({n for n in names if names.count(n) > 1}):
        errors.append(f"deployed model name {name!r} is used twice")
    ids = [m.id for m in models if m.id is not None]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        errors.append(f"deployed model id {dup!r} is used twice")
    given = [m.percent is not None for m in models]
    if any(given) and not all(given):
        missing = [m.name for m in models if m.percent is None]
        errors.append(f"give a percent to every deployed model or to none (missing: {missing})")
    for m in models:
        where = f"deployed model {m.name!r}"
        if not NAME.fullmatch(m.name):
            errors.append(f"{where}: the name must match {NAME.pattern}")
        if m.percent is not None and not 0 <= m.percent <= 100:
            errors.append(f"{where}: percent {m.percent} is not in [0, 100]")
        if m.id is not None and not re.fullmatch(r"[0-9]{1,19}", m.id):
            errors.append(f"{where}: id {m.id!r} must be a number of at most 19 digits")
        if not m.command or not all(m.command):
            errors.append(f"{where}: the command must be a non-empty list of non-empty strings")
        for key in m.env:
            if not ENV_KEY.fullmatch(key):
                errors.append(f"{where}: {key!r} is not a valid environment variable name")
            elif key in CONTAINER_ENV:
                errors.append(
                    f"{where}: {key} is set by the emulator, not by env: {CONTAINER_ENV[key]}"
                )
        if m.models and "SERVE_MODELS" in m.env:
            errors.append(
                f"{where}: SERVE_MODELS is given both in env and as models (--models): keep one"
            )
        for model_name, source in m.models.items():
            if not NAME.fullmatch(model_name) or not source:
                errors.append(f"{where}: models entry {model_name!r} = {source!r} is not valid")
        if m.storage_uri is not None and not m.storage_uri:
            errors.append(f"{where}: storage_uri is empty")
        if not re.fullmatch(r"/[A-Za-z0-9._~/:@-]*", m.health_route) or m.health_route == "/":
            errors.append(f"{where}: health_route {m.health_route!r} must be a path like /health")
        if m.replicas < 1:
            errors.append(f"{where}: replicas {m.replicas} must be at least 1")
        if m.max_replicas is not None and m.max_replicas < m.replicas:
            errors.append(f"{where}: max_replicas {m.max_replicas} is below replicas {m.replicas}")
        if m.target_requests_per_minute is not None and m.target_requests_per_minute < 1:
            errors.append(f"{where}: target_requests_per_minute must be at least 1")
    if all(given) and models and sum(m.percent or 0 for m in models) != 100:
        split = {m.name: m.percent or 0 for m in models}
        errors.append(f"the traffic split {split} sums to {sum(split.values())}, not 100")
    if not re.fullmatch(r"[a-z]([a-z0-9-]{0,28}[a-z0-9])?|[0-9]{1,20}", config.project):
        errors.append(f"project {config.project!r} is not a valid project id (e.g. local-project)")
    if config.project_number is not None and not re.fullmatch(
        r"[0-9]{1,20}", config.project_number
    ):
        errors.append(f"project_number {config.project_number!r} must be digits")
    if not re.fullmatch(r"[a-z]+(-[a-z0-9]+)+", config.location):
        errors.append(f"location {config.location!r} is not a region name (e.g. us-central1)")
    if config.endpoint_id is not None and not ENDPOINT_ID.fullmatch(config.endpoint_id):
        errors.append(f"endpoint_id {config.endpoint_id!r} must match {ENDPOINT_ID.pattern}")
    for key in ("control_port", "data_port"):
        port = getattr(config, key)
        if not 0 <= port <= 65535:
            errors.append(f"{key} {port} is not in [0, 65535] (0 picks a free port)")
    if config.control_port and config.control_port == config.data_port:
        errors.append("control_port and data_port must differ")
    if not config.host:
        errors.append("host is empty")
    if config.log_dir and (problem := unwritable(Path(config.log_dir), "log_dir")):
        errors.append(problem)
    if not config.startup_timeout > 0:
        errors.append("startup_timeout must be positive")
    for key in ("probe_interval", "autoscale_window"):
        if not getattr(config, key) > 0:
            errors.append(f"{key} must be positive")
    for key in ("restart_backoff", "grace_period", "scale_down_delay"):
        if not getattr(config, key) >= 0:
            errors.append(f"{key} must be 0 or more")
    if config.replica_capacity < 1:
        errors.append("replica_capacity must be at least 1")
    if not 0 < config.inference_timeout <= MAX_INFERENCE_TIMEOUT:
        errors.append(
            f"inference_timeout {config.inference_timeout:g} is not in (0, "
            f"{MAX_INFERENCE_TIMEOUT:g}] seconds (Vertex's limit)"
        )
    if errors:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))
    split = config.split()
    return replace(config, deployed_models=tuple(replace(m, percent=split[m.name]) for m in models))

"""``python -m client.emulator``: a local Vertex AI dedicated endpoint, driven by the real SDK.

With no arguments it deploys the bundled demo server twice at 50/50 (``shapes-a``: the defaults;
``shapes-b``: ``SERVE_DEFAULT_MODEL=shapes-segment``). ``--config FILE`` (TOML, see
``client/emulator/config.py``) or the flags below declare other deployments; flags apply on top
of the file. A bad configuration exits with status 2, a server that fails to start with 1.

Examples:
    python -m client.emulator --info-file /tmp/emulator.json
    python -m client.emulator --deploy shapes-a=80 --deploy shapes-b=20
    python -m client.emulator --deploy mine --env mine:SERVE_MODELS=yolo=/w/yolo11n.pt
    STORAGE_EMULATOR_HOST=http://127.0.0.1:9023 python -m client.emulator --empty   # then deploy
    python -m client.emulator --replicas shapes-a=2 --replicas shapes-b=1:3 --target-rpm shapes-b=600
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import logging
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from client.emulator.config import (
    ConfigError,
    DeployedModelConfig,
    EmulatorConfig,
    read,
    unwritable,
    validate,
)

PROG = "python -m client.emulator"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Emulate a Vertex AI dedicated endpoint locally: a REST control plane, an "
        "HTTPS /invoke data plane with a traffic split, and one server process per deployed "
        "model.",
        epilog="NAME is a deployed model name. Without --config or --deploy: the demo models "
        "shapes-a and shapes-b at 50/50.",
    )
    p.add_argument("--config", type=Path, help="TOML (or .json) file declaring the deployment")
    p.add_argument(
        "--empty",
        action="store_true",
        help="start with no endpoint and no model: create them with the SDK (python -m client "
        "deploy ...); the info file follows the first endpoint created",
    )
    p.add_argument(
        "--deploy",
        action="append",
        default=[],
        metavar="NAME[=PERCENT]",
        help="deploy NAME (repeat; percents on all or none: none splits evenly). A NAME from "
        "--config or the demo keeps its settings.",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE",
        help="an environment variable for NAME's server (repeat)",
    )
    p.add_argument(
        "--storage-uri",
        action="append",
        default=[],
        metavar="NAME=URI",
        help="NAME's AIP_STORAGE_URI (its model artifacts)",
    )
    p.add_argument(
        "--command",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="the server command, split like a shell would (default: this python -m app)",
    )
    p.add_argument(
        "--models",
        action="append",
        default=[],
        metavar="NAME:MODEL=SOURCE[,MODEL=SOURCE]",
        help="model sources for NAME's server (sets SERVE_MODELS)",
    )
    p.add_argument(
        "--replicas",
        action="append",
        default=[],
        metavar="NAME=MIN[:MAX]",
        help="NAME's replicas, as a deploy's min_replica_count and max_replica_count (1)",
    )
    p.add_argument(
        "--target-rpm",
        action="append",
        default=[],
        metavar="NAME=N",
        help="NAME's autoscaling target: requests per minute per replica (else CPU 60 %%, "
        "Vertex's default, when MAX > MIN)",
    )
    f = p.add_argument_group("the fleet (Vertex's replicas: probes, restarts, scaling)")
    f.add_argument("--probe-interval", type=float, help="seconds between health probes (1)")
    f.add_argument(
        "--restart-backoff",
        type=float,
        help="first back-off before restarting a crashed replica again, doubling (10 s)",
    )
    f.add_argument(
        "--grace-period",
        type=float,
        help="seconds from SIGTERM to SIGKILL when a replica stops (30: the server drains 25)",
    )
    f.add_argument(
        "--replica-capacity",
        type=int,
        help="requests in flight per replica; beyond it on all: 429 RESOURCE_EXHAUSTED (64)",
    )
    f.add_argument(
        "--autoscale-window", type=float, help="seconds the request rate is counted over (60)"
    )
    f.add_argument(
        "--scale-down-delay",
        type=float,
        help="seconds the load must stay below target before a replica goes (600)",
    )
    p.add_argument("--project", help="default: local-project")
    p.add_argument("--project-number", help="default: a number derived from the project")
    p.add_argument("--location", help="default: us-central1")
    p.add_argument("--endpoint-id", help="default: a random 19-digit id")
    p.add_argument(
        "--host",
        help="address both planes listen on (default: 127.0.0.1; any other exposes the "
        "unauthenticated control plane, which starts processes with the env and args it is sent)",
    )
    p.add_argument(
        "--split-seed",
        type=int,
        help="seed of each endpoint's traffic-split draws, restarted at each split change "
        "(default 0: a run routes the same way every time)",
    )
    p.add_argument("--control-port", type=int, help="control plane port (default 0: a free one)")
    p.add_argument("--data-port", type=int, help="data plane port (default 0: a free one)")
    p.add_argument("--startup-timeout", type=float, help="seconds to wait for health (300)")
    p.add_argument(
        "--inference-timeout",
        type=float,
        help="total seconds per request, as Vertex's endpoint inference_timeout (600, at most "
        "3600): no response headers by then answers 504, a longer stream is cut",
    )
    p.add_argument("--log-dir", help="where servers' logs go (default: the work dir)")
    p.add_argument("--info-file", type=Path, help="write the endpoint's details here as JSON")
    p.add_argument(
        "--work-dir",
        type=Path,
        help="where to make the temp dir for the certificate, its key and default logs, removed "
        "at exit (default: the system's temp dir)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


TOP_FLAGS = (
    "project",
    "project_number",
    "location",
    "endpoint_id",
    "host",
    "control_port",
    "data_port",
    "startup_timeout",
    "inference_timeout",
    "log_dir",
    "probe_interval",
    "restart_backoff",
    "grace_period",
    "replica_capacity",
    "autoscale_window",
    "scale_down_delay",
    "split_seed",
)


def build_config(args: argparse.Namespace) -> EmulatorConfig:
    """The validated config from ``--config`` (or the demo) and the flags on top of it."""
    errors: list[str] = []
    if args.empty:
        base = replace(read(args.config) if args.config else EmulatorConfig(), empty=True)
        if args.deploy:
            errors.append("--empty deploys nothing at start: drop --deploy")
    else:
        base = read(args.config) if args.config else EmulatorConfig.demo()
    models: dict[str, DeployedModelConfig] = {m.name: m for m in base.deployed_models}
    if args.deploy:
        chosen: dict[str, DeployedModelConfig] = {}
        for item in args.deploy:
            name, sep, raw = item.partition("=")
            percent: int | None = None
            if sep:
                try:
                    percent = int(raw)
                except ValueError:
                    errors.append(f"--deploy {item!r}: the percent must be an integer")
            if name in chosen:
                errors.append(f"--deploy names {name!r} twice")
            chosen[name] = replace(models.get(name, DeployedModelConfig(name)), percent=percent)
        models = chosen

    def target(flag: str, item: str, sep: str) -> tuple[str | None, str]:
        name, found, value = item.partition(sep)
        if not found or not value:
            errors.append(f"{flag} {item!r} must look like NAME{sep}...")
            return None, ""
        if name not in models:
            errors.append(f"{flag} {item!r}: no deployed model named {name!r} ({list(models)})")
            return None, ""
        return name, value

    def edit(name: str, **changes: Any) -> None:
        models[name] = replace(models[name], **changes)

    for item in args.env:
        name, value = target("--env", item, ":")
        if name:
            key, found, val = value.partition("=")
            if not found:
                errors.append(f"--env {item!r} must look like NAME:KEY=VALUE")
            else:
                edit(name, env={**models[name].env, key: val})
    for item in args.storage_uri:
        name, value = target("--storage-uri", item, "=")
        if name:
            edit(name, storage_uri=value)
    for item in args.command:
        name, value = target("--command", item, "=")
        if name:
            try:
                edit(name, command=tuple(shlex.split(value)))
            except ValueError as exc:
                errors.append(f"--command {item!r}: {exc}")
    for item in args.models:
        name, value = target("--models", item, ":")
        if name:
            sources = dict(part.partition("=")[::2] for part in value.split(",") if part)
            edit(name, models={**models[name].models, **sources})
    for item in args.replicas:
        name, value = target("--replicas", item, "=")
        if name:
            low, _, high = value.partition(":")
            try:
                edit(name, replicas=int(low), max_replicas=int(high) if high else None)
            except ValueError:
                errors.append(f"--replicas {item!r} must look like NAME=MIN or NAME=MIN:MAX")
    for item in args.target_rpm:
        name, value = target("--target-rpm", item, "=")
        if name:
            try:
                edit(name, target_requests_per_minute=int(value))
            except ValueError:
                errors.append(f"--target-rpm {item!r}: the target must be an integer")
    if args.info_file is not None and args.info_file.is_dir():
        errors.append(f"--info-file {str(args.info_file)!r} is a directory")
    elif args.info_file is not None and (
        problem := unwritable(args.info_file.parent, "--info-file", create=False)
    ):
        errors.append(problem)
    if args.work_dir is not None and (problem := unwritable(args.work_dir, "--work-dir")):
        errors.append(problem)
    if errors:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))
    overrides = {k: getattr(args, k) for k in TOP_FLAGS if getattr(args, k) is not None}
    return validate(replace(base, deployed_models=tuple(models.values()), **overrides))


def exposure_warning(host: str) -> str | None:
    """The warning for a host other than loopback, where anyone who reaches it may deploy (the
    control plane has no authentication and passes ``containerSpec.env`` and ``args`` to the
    processes it starts); ``None`` on loopback."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it resolves to who knows what
        loopback = False
    if loopback:
        return None
    return (
        f"{PROG}: WARNING: listening on {host}, not loopback: this is a development tool with an "
        "UNAUTHENTICATED control plane; anyone who can reach it can start processes on this "
        "machine with the environment and arguments they choose. Use it on a trusted network "
        "only."
    )


#: what the emulator runs on beyond a [client] install (the ``emulator`` extra)
NEEDS = ("uvicorn", "litestar", "cryptography")


def missing_extra() -> str | None:
    """The first module of the ``emulator`` extra that cannot be imported, if any."""
    for module in NEEDS:
        try:
            importlib.import_module(module)
        except ImportError:
            return module
    return None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if module := missing_extra():
        print(
            f"{PROG}: the emulator needs {module}, which is not installed: "
            'pip install "vertex-yolo[emulator]"',
            file=sys.stderr,
        )
        return 2
    try:
        config = build_config(args)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s emulator: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per proxied request
    if warning := exposure_warning(config.host):
        print(warning, file=sys.stderr)
    from client.emulator.runner import run

    return run(config, args.info_file, args.work_dir)


if __name__ == "__main__":
    raise SystemExit(main())

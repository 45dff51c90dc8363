"""``python -m client deploy ACTION``: the actions of :mod:`client.deploy` (their options, SDK calls
and results are data there), with ``--dry-run`` printing the very calls a real run makes."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from client import errors, names
from client.cli.options import LOCATION_HELP, PROJECT_HELP, json_text, vertex_target
from client.deploy import (
    ACTIONS,
    Action,
    Connection,
    Deployment,
    EndpointStatus,
    Option,
    endpoint_status,
    resolve_deployed,
    with_replicas,
)


def add(sub: Any, name: str, summary: str) -> None:
    p = sub.add_parser(
        name,
        help=summary,
        description="Vertex AI deployment over google-cloud-aiplatform; the same commands run "
        "against the local emulator (--emulator-info). --dry-run prints the SDK calls.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = _common()
    for action in ACTIONS.values():
        q = actions.add_parser(action.name, parents=[common], help=action.help)
        if action.needs_endpoint:
            q.add_argument(
                "--endpoint",
                help="endpoint id or resource name (default with --emulator-info: the emulator's; "
                "else $VERTEX_YOLO_ENDPOINT)",
            )
        for option in action.options:
            _add_option(q, option)
    p.set_defaults(func=run)


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection (Vertex AI, or the emulator with --emulator-info)")
    g.add_argument("--project", help=PROJECT_HELP)
    g.add_argument("--location", help=LOCATION_HELP)
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


def _add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    kwargs: dict[str, Any] = {"help": option.help}
    if option.metavar:
        kwargs["metavar"] = option.metavar
    if option.positional:
        parser.add_argument(option.name, nargs="+" if option.many else None, **kwargs)
        return
    if option.many:
        kwargs |= {"action": "append", "default": []}
    elif option.flag:
        kwargs |= {"action": "store_true"}
    else:
        kwargs |= {"type": option.kind, "default": option.default, "required": option.required}
    parser.add_argument("--" + option.name.replace("_", "-"), **kwargs)


def run(args: argparse.Namespace) -> int:
    action: Action = ACTIONS[args.action]
    target = vertex_target(args)
    options = {o.name: getattr(args, o.name) for o in action.options}
    if action.needs_endpoint:
        if not target.endpoint:
            info = args.emulator_info
            raise errors.ParameterError(
                f"the emulator in {info} has no endpoint yet: create one first (python -m client "
                f"deploy create-endpoint --emulator-info {info} --display-name NAME), or give "
                "--endpoint"
                if info
                else "give --endpoint (or --emulator-info of an emulator with one)"
            )
        options["endpoint"] = target.endpoint
    options["emulator"] = target.emulator
    connection = Connection(target.project, target.location, target.api_endpoint)
    calls = action.calls(options)
    if args.dry_run:
        for call in [connection.init_call(), *calls]:
            print(call)
        return 0
    if action.confirm and not args.yes:
        raise errors.ParameterError(
            f"deleting {action.confirm} cannot be undone: add --yes (--dry-run shows the calls)"
        )
    connection.init()
    if action.name in ("split", "undeploy", "delete-endpoint"):  # one read of the endpoint
        found = endpoint_status(options["endpoint"])
        known = {d.id: d.display_name for d in found.deployed_models}
        options = resolve_deployed(action.name, options, known)
        if action.name == "delete-endpoint" and known and not args.force:
            raise errors.ParameterError(
                f"endpoint {found.endpoint_id} still has deployed models "
                f"({names.listing(known)}): --force undeploys them first (their traffic "
                "stops), or undeploy them with `deploy undeploy`"
            )
    result = action.run(options)
    if args.emulator_info:  # the replicas, which Vertex does not show
        if isinstance(result, EndpointStatus):
            result = with_replicas(result, args.emulator_info)
        elif isinstance(result, Deployment):
            endpoint = with_replicas(result.endpoint, args.emulator_info)
            result = msgspec.structs.replace(result, endpoint=endpoint)
    sys.stdout.write(json_text(result) if args.json else "\n".join(action.lines(result)) + "\n")
    return 0

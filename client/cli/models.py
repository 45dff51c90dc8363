"""``python -m client models``: the models the (chosen) deployed model serves."""

from __future__ import annotations

import argparse
from typing import Any

from client.cli.options import connection_options, make_client, print_json


def add(sub: Any, name: str, summary: str) -> None:
    p = sub.add_parser(name, parents=[connection_options()], help=summary, description=summary)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        result = client.models(deployed_model_id=args.deployed_model_id)
    if args.json:
        print_json(result)
        return 0
    print(f"deployed model {result.deployed_model_id}; default model {result.default_model}")
    for m in result.models:
        mark = "*" if m.default else " "
        print(f"{mark} {m.name:24} {m.task:8} version {m.version} imgsz {m.imgsz} on {m.device}")
    return 0

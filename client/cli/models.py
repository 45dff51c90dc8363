"""``python -m client models``: the models the (chosen) deployed model serves."""

from __future__ import annotations

import argparse
from typing import Any

from client import names, vertex
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
        split = None
        with vertex.sdk_errors("the endpoint's control plane"):
            known = names.client_names(client)
            if known is not None and not args.deployed_model_id:
                split = client.transport.endpoint.traffic_split
    who = names.label(result.deployed_model_id, known)
    print(f"deployed model {who} answered; default model {result.default_model}")
    split = split or {}
    if any(v for k, v in split.items() if k != result.deployed_model_id):
        shares = ", ".join(f"{names.label(k, known)} {v}%" for k, v in split.items() if v)
        print(
            f"(the split sends calls to several deployed models: {shares}; another may answer "
            "the next call: --deployed-model-id NAME picks one)"
        )
    for m in result.models:
        mark = "*" if m.default else " "
        print(f"{mark} {m.name:24} {m.task:8} version {m.version} imgsz {m.imgsz} on {m.device}")
    return 0

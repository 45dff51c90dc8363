"""``python -m client batch SOURCE --out DEST``: every image of a folder, glob, bucket prefix or
list through the endpoint, a JSON line each; run it again after a kill and it carries on."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

import msgspec

from client import names, vertex
from client._client import Client
from client.batch.engine import ROUTES, BatchStats, given
from client.batch.inputs import list_inputs
from client.batch.output import JsonlOutput, RunRecord, read_record, record_name, write_record
from client.cli.options import (
    POSITIVE,
    ROUTE_OPTIONS,
    connection_options,
    inference_options,
    make_client,
    params,
    print_json,
    vertex_target,
    writing,
)
from client.errors import ParameterError

DIRECT_WORKERS = 4  # the DirectRunner's threads when --concurrency is not given


def add(sub: Any, name: str, summary: str) -> None:
    p = sub.add_parser(
        name,
        parents=[connection_options(), inference_options(any_route=True)],
        help=summary,
        description="One call per image, many in flight over the endpoint's replicas; one JSON "
        "line per input in DEST (its results, or its error: a bad image is a line, not the end "
        "of the job). Killed at any point and run again with the same arguments, it skips the "
        "inputs DEST already holds and finishes with every input exactly once. DEST.run.json "
        "records the run (endpoint, route, parameters, the deployed model that answers): a "
        "resume goes to that deployed model and refuses other options.",
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="a folder, a glob ('shots/**/*.jpg'), gs://bucket/prefix/, a .txt list of paths "
        "or URIs, or one image",
    )
    p.add_argument(
        "--out", required=True, metavar="DEST", help="a .jsonl file, or gs://bucket/path.jsonl"
    )
    p.add_argument("--route", choices=ROUTES, default="detect", help="the inference route")
    p.add_argument(
        "--send",
        choices=["bytes", "uri"],
        default="bytes",
        help="bytes: read each input here and send it; uri: send gs:// URIs, the server reads "
        "them (from the buckets it allows)",
    )
    p.add_argument(
        "--concurrency",
        type=POSITIVE,
        help="calls in flight (default: two per replica seen answering, plus one; at most 32)",
    )
    p.add_argument(
        "--save-annotated",
        metavar="DIR",
        help="write each image with its detections drawn (a folder, or gs://bucket/prefix/)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument(
        "--runner",
        metavar="RUNNER",
        help="run as an Apache Beam pipeline (the beam extra): DirectRunner (here, --concurrency "
        "threads) or DataflowRunner; Beam's pipeline options follow SOURCE and --out "
        "(--region, --temp_location, --requirements_file...). DEST is then written as shards "
        "(DEST-00000-of-0000N.jsonl) plus the error lines' shards (DEST.errors-...), once, "
        "not resumed",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if not args.out.endswith(".jsonl"):
        raise ParameterError(f"--out {args.out}: write a .jsonl file (local or gs://)")
    if args.runner:
        return run_beam(args)
    inputs = list_inputs(args.source)
    encode = msgspec.json.Encoder().encode
    with writing(args.out):
        output = JsonlOutput(args.out)
    with output as out, make_client(args) as client:
        done = out.done()
        record = run_record(args, client, resuming=bool(done))
        todo = [name for name in inputs if name not in done]
        skipped = len(inputs) - len(todo)
        with (
            client.batch(
                todo,
                route=args.route,
                send=args.send,
                concurrency=args.concurrency,
                deployed_model_id=record.deployed_model_id,
                annotate_to=args.save_annotated,
                **params(args, ROUTE_OPTIONS),
            ) as batch,
            tqdm(
                total=len(inputs),
                initial=skipped,
                unit="image",
                disable=args.quiet,
                file=sys.stderr,
                desc=args.source,
            ) as bar,
        ):
            held = [skipped]  # lines in DEST (the bar does not count when disabled)
            args.on_interrupt = lambda: resume_note(args, held[0], len(inputs))
            for line in batch:
                with writing(args.out):
                    out.write(encode(line))
                held[0] += 1
                bar.update(1)
                bar.set_postfix_str(progress(batch.stats), refresh=False)
        stats = batch.stats
    if args.json:
        print_json({"inputs": len(inputs), "skipped": skipped, "stats": stats, "run": record})
    else:
        print(summary(stats, len(inputs), skipped, args.out, record.label()))
    return 0


def run_record(args: argparse.Namespace, client: Client, *, resuming: bool) -> RunRecord:
    """This run's record, written to DEST.run.json; on a resume (DEST holds lines), checked
    against the record there: a different endpoint, route, parameter or deployed model is a
    ParameterError (exit 2), and an untargeted resume goes to the recorded deployed model."""
    options = given(params(args, ROUTE_OPTIONS)) or {}
    if args.max_side is not None:
        options["max_side"] = args.max_side
    with vertex.sdk_errors("the endpoint's control plane"):
        known = names.client_names(client)
    endpoint = args.url if known is None else client.transport.name
    previous = read_record(args.out) if resuming else None
    if previous is not None and not args.deployed_model_id:
        pinned = previous.deployed_model_id  # a resume goes where the first run went
        if known is not None and pinned not in known:
            raise ParameterError(
                f"{args.out} holds the lines of deployed model {previous.label()}, which is not "
                f"deployed now (deployed: {names.listing(known)}): write to another --out"
            )
    else:  # whoever answers now (pinned or picked by the split) answers every call of the run
        pinned = client.models(deployed_model_id=args.deployed_model_id).deployed_model_id
    record = RunRecord(
        endpoint=endpoint,
        route=args.route,
        options=options,
        deployed_model_id=pinned,
        display_name=(known or {}).get(pinned) or None,
    )
    if previous is not None:
        if (why := previous.difference(record)) is not None:
            raise ParameterError(
                f"{args.out} holds the lines of a run with {why}; or write to another --out"
            )
        print(f"resuming {args.out} on deployed model {record.label()}", file=sys.stderr)
        return previous
    if resuming:
        print(
            f"{args.out} holds lines but no run record ({record_name(args.out)}): their options "
            f"and deployed model cannot be checked; this run goes to {record.label()}",
            file=sys.stderr,
        )
    with writing(record_name(args.out)):
        write_record(args.out, record)
    return record


def resume_note(args: argparse.Namespace, written: int, inputs: int) -> str:
    """After Ctrl-C: how many inputs DEST holds, and the command that carries on."""
    command = shlex.join(["python", "-m", "client", *args.argv])
    return (
        f"{written} of {inputs} inputs are in {args.out}; to go on, run the same command again "
        f"(it skips them): {command}"
    )


def progress(stats: BatchStats) -> str:
    return (
        f"{stats.images_per_s:.1f} images/s, {stats.in_flight} in flight, "
        f"{len(stats.replicas)} replicas, {sum(stats.errors.values())} errors"
    )


def summary(stats: BatchStats, inputs: int, skipped: int, out: str, who: str = "") -> str:
    """``303 inputs: 303 done now (0 already in out.jsonl), 3 errors (invalid-image=3), ...``."""
    errors = sum(stats.errors.values())
    by_code = ", ".join(f"{k}={v}" for k, v in sorted(stats.errors.items()))
    classes = ", ".join(f"{k}={v}" for k, v in sorted(stats.class_counts.items()))
    return (
        f"{inputs} inputs: {stats.done} done now ({skipped} already in {out}), {errors} errors"
        f"{f' ({by_code})' if by_code else ''}; {stats.images_per_s:.1f} images/s on deployed "
        f"model {who or stats.deployed_model_id}, {len(stats.replicas)} replicas; "
        f"{classes or 'no detections'}"
    )


def run_beam(args: argparse.Namespace) -> int:
    """``--runner``: the batch as a Beam pipeline (:mod:`client.beam`), waited for."""
    import time

    try:
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions

        from client.beam import YoloModelHandler, add_batch, counters, job_error, shards
    except ImportError as exc:
        raise ParameterError(
            f'--runner needs Apache Beam (pip install "vertex-yolo[beam]"): {exc}'
        ) from None
    if args.save_annotated:
        raise ParameterError("--save-annotated is the local engine's (leave out --runner)")
    flags = [f"--runner={args.runner}", *args.extra]
    given = {f.split("=")[0] for f in flags if f.startswith("--")}
    target = vertex_target(args)
    if target.project and "--project" not in given:
        flags.append(f"--project={target.project}")
    if args.runner == "DirectRunner":  # threads in this process, unless told otherwise
        if "--direct_running_mode" not in given:
            flags.append("--direct_running_mode=multi_threading")
        if "--direct_num_workers" not in given:
            flags.append(f"--direct_num_workers={args.concurrency or DIRECT_WORKERS}")
    elif "--region" not in given and target.location:
        flags.append(f"--region={target.location}")
    connection: dict[str, Any] = {"url": args.url, "ca_cert": args.ca_cert}
    if args.deployed_model_id and not args.url:  # a display name: the id (one endpoint read)
        make_client(args).close()
    if not args.url:
        if not target.endpoint:
            raise ParameterError("say where to send: --url, --endpoint or --emulator-info")
        connection = {
            "endpoint": target.endpoint,
            "project": target.project,
            "location": target.location,
            "api_endpoint": target.api_endpoint,
            "ca_cert": target.ca_cert,
        }
    with vertex.sdk_errors(f"endpoint {target.endpoint or args.url}"):
        handler = YoloModelHandler(
            **connection,
            route=args.route,
            params=params(args, ROUTE_OPTIONS),
            deployed_model_id=args.deployed_model_id,
            send=args.send,
            timeout=args.timeout,
            client_retries=args.retries,
        )
    started = time.monotonic()
    pipeline = beam.Pipeline(options=PipelineOptions(flags))
    add_batch(pipeline, args.source, args.out, handler)
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except Exception as exc:  # the job failed: its error in one line, its exit code
        raise job_error(exc) from None
    elapsed = time.monotonic() - started
    counts = counters(result)
    lines, errors = counts.get("lines", 0), counts.get("errors", 0)
    written = shards(args.out)
    by_code = {k.removeprefix("error:"): v for k, v in counts.items() if k.startswith("error:")}
    stats = {
        "lines": lines,
        "errors": by_code,
        "deployed_model_id": handler.deployed_model_id,
        "elapsed_s": round(elapsed, 3),
        "images_per_s": round(lines / max(elapsed, 1e-9), 2),
        "shards": written,
        "errors_shards": shards(args.out, errors=True),
        "params": handler.params,
    }
    if args.json:
        print_json({"runner": args.runner, "stats": stats})
        return 0
    codes = ", ".join(f"{k}={v}" for k, v in sorted(by_code.items()))
    print(
        f"{lines} lines in {len(written)} shards of {args.out.removesuffix('.jsonl')}"
        f"-*-of-*.jsonl, {errors} errors{f' ({codes})' if codes else ''}; "
        f"{stats['images_per_s']:.1f} images/s ({args.runner}, start-up included) on deployed "
        f"model {handler.deployed_model_id}"
    )
    return 0

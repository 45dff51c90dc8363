"""``python -m client batch SOURCE --out DEST --runner ...``: the batch as a Beam pipeline.

:func:`add_batch` adds the job to a pipeline: the inputs SOURCE names (listed as the local batch
lists them: :func:`client.batch.list_inputs`; a ``gs://`` prefix is listed by a worker), spread
over the workers, ``RunInference`` with a :class:`~client.beam.YoloModelHandler`, then each
input's line (the local batch's :class:`~client.batch.BatchLine`) written as JSONL.

Beam writes sharded files: ``DEST`` ``out.jsonl`` becomes ``out-00000-of-00004.jsonl``, ...
(read them as one: ``cat out-*-of-*.jsonl``, ``gcloud storage cat 'gs://b/out-*-of-*.jsonl'``, or
:func:`read_lines`), one line per input, error lines included. The error lines are also the
dead-letter output, ``out.errors-00000-of-00001.jsonl``: the inputs to look at, or to run again.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import msgspec
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import PredictionResult, RunInference

from client import errors
from client.batch.engine import BatchLine
from client.batch.inputs import list_inputs, split_uri, storage_client
from client.batch.inputs import read_lines as lines_of
from client.beam.handler import YoloModelHandler
from client.errors import ParameterError

NAMESPACE = "vertex-yolo"
SHARDS = "-*-of-*.jsonl"
_encode = msgspec.json.Encoder().encode


def prefix(dest: str) -> str:
    """The shards' prefix for ``DEST`` (``out.jsonl`` -> ``out``)."""
    if not dest.endswith(".jsonl"):
        raise ParameterError(f"--out {dest}: write a .jsonl file (local or gs://)")
    return dest.removesuffix(".jsonl")


def shards(dest: str, errors: bool = False) -> list[str]:
    """The files a run wrote for ``DEST`` (its dead-letter shards with ``errors``), sorted."""
    pattern = prefix(dest) + (".errors" if errors else "") + SHARDS
    if not dest.startswith("gs://"):
        return sorted(glob.glob(pattern))
    bucket, name = split_uri(pattern)
    blobs = storage_client().list_blobs(bucket, prefix=name.split("*")[0])
    return sorted(f"gs://{bucket}/{b.name}" for b in blobs if fnmatch.fnmatchcase(b.name, name))


def read_lines(dest: str, errors: bool = False) -> list[bytes]:
    """Every line of a run's shards (:func:`shards`), as one list."""
    return [line for shard in shards(dest, errors) for line in lines_of(shard) if line.strip()]


class _Lines(beam.DoFn):
    """A prediction's line, counted (lines, errors by code); error lines also to ``errors``."""

    def __init__(self) -> None:
        self.lines = Metrics.counter(NAMESPACE, "lines")
        self.errors = Metrics.counter(NAMESPACE, "errors")

    def process(self, prediction: PredictionResult) -> Iterable[Any]:
        line: BatchLine = prediction.inference
        self.lines.inc()
        encoded = _encode(line)
        if line.error is not None:
            self.errors.inc()
            Metrics.counter(NAMESPACE, f"error:{line.error.code or 'unreadable'}").inc()
            yield beam.pvalue.TaggedOutput("errors", encoded)
        yield encoded


def storage_emulator_anonymous() -> None:
    """With ``STORAGE_EMULATOR_HOST`` set (a local GCS API server), Beam's own GCS IO (the
    shards of a ``gs://`` DEST) goes anonymous, as the ``google-cloud-storage`` client itself
    does there. Beam would otherwise look for Google credentials first: probing the GCE metadata
    server and retrying for about 30 s before it connects anonymously all the same."""
    if not os.environ.get("STORAGE_EMULATOR_HOST"):
        return
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:
        return
    found = getattr(auth, "_Credentials", None)
    if found is not None and hasattr(found, "_credentials_init"):
        with found._credentials_lock:
            found._credentials, found._credentials_init = None, True


def add_batch(pipeline: Any, source: str, dest: str, handler: YoloModelHandler) -> None:
    """The batch job on ``pipeline``: SOURCE's inputs through ``handler`` to DEST's shards."""
    out = prefix(dest)
    if dest.startswith("gs://"):
        storage_emulator_anonymous()
    if source.startswith("gs://"):  # listed by a worker: a bucket may hold millions
        names = (
            pipeline
            | "Source" >> beam.Create([source])
            | "List" >> beam.FlatMap(list_inputs)
            | "Spread" >> beam.Reshuffle()
        )
    else:
        names = pipeline | "Inputs" >> beam.Create(list_inputs(source), reshuffle=True)
    lines = (
        names
        | "Infer" >> RunInference(handler)
        | "Lines" >> beam.ParDo(_Lines()).with_outputs("errors", main="lines")
    )
    lines.lines | "Write" >> beam.io.WriteToText(out, file_name_suffix=".jsonl")
    lines.errors | "DeadLetter" >> beam.io.WriteToText(out + ".errors", file_name_suffix=".jsonl")


_RAISED = re.compile(r"client\.errors\.(\w+): (.*?)(?: \[while running [^\]]*\])?\s*$")


def job_error(exc: BaseException) -> errors.VertexYoloError:
    """A failed job's error as one of :mod:`client.errors`, in one line. A runner re-raises a
    worker's exception as text (the DirectRunner: ``RuntimeError: client.errors.BadRequestError:
    400 from /detect: ... [while running 'Infer/...']``): its class and message are read back."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, errors.VertexYoloError):
            return seen
        seen = seen.__cause__ or seen.__context__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        found = _RAISED.search(line)
        kind = getattr(errors, found.group(1), None) if found else None
        if found and isinstance(kind, type) and issubclass(kind, errors.VertexYoloError):
            message = found.group(2)
            if issubclass(kind, errors.APIError):
                status = re.match(r"(\d{3}) ", message)
                return kind(message, status=int(status.group(1)) if status else 500)
            return kind(message)
    last = lines[-1] if lines else type(exc).__name__
    return errors.VertexYoloError(f"the pipeline failed: {type(exc).__name__}: {last}")


def counters(result: Any) -> dict[str, int]:
    """The job's counters (``lines``, ``errors``, ``error:CODE``), committed values."""
    found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    out: dict[str, int] = {}
    for counter in found:
        value = counter.committed if counter.committed is not None else counter.attempted
        out[counter.key.metric.name] = out.get(counter.key.metric.name, 0) + int(value or 0)
    return out

"""The batch's JSONL output: one line per input, resumable after a kill at any point.

* **Local file**: lines are appended with one ``write`` each on a file opened ``O_APPEND``, so
  a line is in the file whole or not at all (a process killed, SIGKILL included, leaves no half
  line; a failed write is cut back; a half line left by a crashed machine is cut off when the
  file is opened again). A second run on the same file at once is refused (``flock``).
* **Cloud Storage** (``gs://bucket/out.jsonl``): an object cannot be appended to, so lines go
  out in **parts**, objects of their own under ``gs://bucket/out.jsonl.parts/``, each written
  whole (every ``PART_LINES`` lines or ``PART_SECONDS`` seconds). At the end the object and the
  parts are merged into the object (deduplicated by input, written whole), then the parts are
  deleted; a kill at any point leaves lines that a run with the same arguments reads back.

:meth:`JsonlOutput.done` is the set of inputs already written: the run skips them, so every
input ends in the output exactly once.

**The run record** (:class:`RunRecord`, ``DEST.run.json`` beside the lines, written before the
first one): the endpoint, route, inference parameters and the deployed model that answers. A
run on a DEST that holds lines must match it (:meth:`RunRecord.difference`), so a resume never
mixes models, deployed models or parameters; an untargeted resume is pinned to the recorded
deployed model (every call of a run goes to one deployed model, so a run is never spread over
a traffic split).
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from client.batch.inputs import read_lines, split_uri, storage_client, write_output
from client.errors import ParameterError

PART_LINES = 50
PART_SECONDS = 2.0


class _Key(msgspec.Struct):
    input: str


_decode_key = msgspec.json.Decoder(_Key).decode


def _input_of(line: bytes) -> str | None:
    try:
        return _decode_key(line).input
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None  # not one of ours: kept, not counted


class RunRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a batch's lines come from: written to ``DEST.run.json`` before the first line.

    ``options``: the options that change a result, as given (``conf``, ``imgsz``, ``model``...,
    ``max_side``; one not given is absent: the server's default); ``endpoint``: the endpoint's
    resource name, or the server's URL; ``display_name``: the deployed model's (Vertex)."""

    endpoint: str
    route: str
    options: dict[str, Any] = {}
    deployed_model_id: str
    display_name: str | None = None

    def label(self) -> str:
        who = self.deployed_model_id
        return f"{self.display_name} ({who})" if self.display_name else who

    def difference(self, other: RunRecord) -> str | None:
        """How ``other`` (this run) differs from this record (the run DEST holds), as the end
        of a sentence; None when it does not."""
        if other.endpoint != self.endpoint:
            return f"endpoint {self.endpoint}; this run's is {other.endpoint}: call that one"
        if other.route != self.route:
            return f"--route {self.route}; this run has --route {other.route}: give the first"
        for name in sorted(self.options.keys() | other.options.keys()):
            was, now = self.options.get(name), other.options.get(name)
            if was != now:
                flag = "--" + name.replace("_", "-")
                return f"{_shown(flag, was)}; this run has {_shown(flag, now)}: give the first"
        if other.deployed_model_id != self.deployed_model_id:
            return (
                f"deployed model {self.label()}; this run's --deployed-model-id names "
                f"{other.label()}: leave it out (the resume goes to the first)"
            )
        return None


def _shown(flag: str, value: Any) -> str:
    if value is None:
        return f"no {flag}"
    if isinstance(value, list):
        value = ",".join(map(str, value))
    return f"{flag} {value}"


_decode_record = msgspec.json.Decoder(RunRecord).decode


def record_name(dest: str) -> str:
    """Where DEST's run record lives: ``DEST.run.json`` (a file or an object beside it)."""
    return dest + ".run.json"


def read_record(dest: str) -> RunRecord | None:
    """DEST's run record; None when there is none (a first run, or DEST written before runs
    were recorded)."""
    name = record_name(dest)
    data = b"\n".join(read_lines(name))
    if not data.strip():
        return None
    try:
        return _decode_record(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ParameterError(
            f"{name} is not a batch run record ({exc}): move it away, or write to another --out"
        ) from None


def write_record(dest: str, record: RunRecord) -> None:
    write_output(record_name(dest), msgspec.json.encode(record) + b"\n", "application/json")


class JsonlOutput:
    """Where the lines go (a local path or ``gs://``); use as a context manager."""

    def __init__(self, dest: str) -> None:
        self.dest = dest
        self.cloud = dest.startswith("gs://")
        self._fd: int | None = None
        self._buffer: list[bytes] = []
        self._flushed = time.monotonic()
        self._run = uuid.uuid4().hex[:8]
        self._parts = 0
        if not self.cloud:
            path = Path(dest)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:  # one run at a time per file; the lock goes with the process, killed or not
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ParameterError(f"{dest}: another batch is writing to it") from None
            self._repair(path)
            self._fd = fd

    @property
    def parts_prefix(self) -> str:
        return self.dest + ".parts/"

    @staticmethod
    def _repair(path: Path) -> None:
        """Cut a half line off the end (left by a machine that went down mid-write)."""
        if not path.is_file() or path.stat().st_size == 0:
            return
        with path.open("rb+") as fh:
            data = fh.read()
            if not data.endswith(b"\n"):
                fh.truncate(data.rfind(b"\n") + 1)

    def _part_names(self) -> list[str]:
        bucket, prefix = split_uri(self.parts_prefix)
        blobs = storage_client().list_blobs(bucket, prefix=prefix)
        return sorted(f"gs://{bucket}/{b.name}" for b in blobs)

    def lines(self) -> list[bytes]:
        """Every line written so far (the object's, then its parts')."""
        found = list(read_lines(self.dest))
        if self.cloud:
            for part in self._part_names():
                found += read_lines(part)
        return [line for line in found if line.strip()]

    def done(self) -> set[str]:
        """The inputs that already have a line."""
        return {key for line in self.lines() if (key := _input_of(line)) is not None}

    def write(self, line: bytes) -> None:
        """One line (without its newline)."""
        if self._fd is not None:
            data = line + b"\n"
            size = os.fstat(self._fd).st_size
            try:
                written = os.write(self._fd, data)  # one write: the line whole, as a rule
                while written < len(data):  # a short write (a full disk, a signal)
                    written += os.write(self._fd, data[written:])
            except OSError:
                os.ftruncate(self._fd, size)  # no half line left behind
                raise
            return
        self._buffer.append(line)
        if len(self._buffer) >= PART_LINES or time.monotonic() - self._flushed >= PART_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Cloud Storage: the buffered lines as a new part (one object, written whole)."""
        if not self._buffer:
            return
        self._parts += 1
        name = f"{self.parts_prefix}part-{time.time_ns():020d}-{self._run}-{self._parts:06d}.jsonl"
        write_output(name, b"\n".join(self._buffer) + b"\n", "application/jsonl")
        self._buffer, self._flushed = [], time.monotonic()

    def close(self) -> None:
        """Local: close the file. Cloud Storage: the object and its parts merged into the object
        (one line per input), then the parts deleted."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            return
        self.flush()
        parts = self._part_names()
        if not parts:
            return
        seen: set[str] = set()
        merged: list[bytes] = []
        for line in self.lines():
            key = _input_of(line)
            if key is None or key not in seen:
                merged.append(line)
                if key is not None:
                    seen.add(key)
        write_output(self.dest, b"\n".join(merged) + b"\n", "application/jsonl")
        for part in parts:  # a kill from here leaves parts whose lines the object holds
            bucket, name = split_uri(part)
            storage_client().bucket(bucket).blob(name).delete()

    def __enter__(self) -> JsonlOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Batch inference over folders and buckets of images (``Client.batch``, ``python -m client
batch``): see :mod:`client.batch.engine` (the calls), :mod:`client.batch.inputs` (what a
SOURCE names) and :mod:`client.batch.output` (the resumable JSONL output)."""

from client.batch.engine import BatchError, BatchLine, BatchRun, BatchStats
from client.batch.inputs import list_inputs
from client.batch.output import JsonlOutput
from client.batch.runs import AsyncBatchStream, BatchStream

__all__ = [
    "AsyncBatchStream",
    "BatchError",
    "BatchLine",
    "BatchRun",
    "BatchStats",
    "BatchStream",
    "JsonlOutput",
    "list_inputs",
]

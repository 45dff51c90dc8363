"""Batch jobs on Apache Beam (the ``beam`` extra): ``RunInference`` with
:class:`YoloModelHandler` (:mod:`client.beam.handler`), and the batch as a pipeline on the
DirectRunner or Dataflow, ``python -m client batch --runner`` (:mod:`client.beam.pipeline`).

Example:
    >>> import apache_beam as beam
    >>> from apache_beam.ml.inference.base import RunInference
    >>> from client.beam import YoloModelHandler
    >>> handler = YoloModelHandler("123", project="p", location="us-central1", params={"conf": 0.5})
    >>> with beam.Pipeline() as p:
    ...     lines = (
    ...         p
    ...         | beam.Create(["gs://shots/a.jpg", "gs://shots/b.jpg"])
    ...         | RunInference(handler)
    ...         | beam.Map(lambda prediction: prediction.inference)  # a client.batch.BatchLine
    ...     )
"""

from client.beam.handler import YoloModelHandler, retryable, routes
from client.beam.pipeline import add_batch, counters, job_error, read_lines, shards

__all__ = [
    "YoloModelHandler",
    "add_batch",
    "counters",
    "job_error",
    "read_lines",
    "retryable",
    "routes",
    "shards",
]

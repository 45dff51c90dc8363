"""A/B checks of the deployed models behind one endpoint (``python -m client ab``).

Two modes, each a function returning a msgspec Struct report (JSON with :func:`encode_report`):

* :func:`targeted`: the same inputs sent to each deployed model (pinned by
  ``deployed_model_id``). Per model: latency p50/p95/p99, errors, detections per image,
  per-class counts, confidence quantiles and histogram. Between models: every other model
  against the first (the reference, A): boxes matched one to one (same class, IoU >= 0.5 (of
  rotated boxes for OBB), the matching of largest total IoU; :mod:`client.matching`),
  precision/recall/F1 of B against A and the mean IoU of the matches (and their mean object
  keypoint similarity for pose); for a classification, top-1 agreement.
* :func:`split_check`: N untargeted calls; the share each deployed model answered against the
  endpoint's configured traffic split, with a chi-square goodness-of-fit p-value.

:func:`render_table` prints either report; :func:`plot` draws its PNG figure. Deployed models
are labelled by display name and id. The package's rooms: ``reports`` (the Structs),
``inputs`` (folders, video frames), ``calls`` (the thread runner), ``measures`` (statistics,
box matching, chi-square), ``modes`` (the two checks), ``render`` (tables), ``figure`` (PNG).

numpy, scipy and matplotlib (the ``tools`` extra) and OpenCV (video inputs) are imported only
when needed, so ``import client.ab`` stays light.

Example:
    >>> from client import Client
    >>> from client.ab import targeted, render_table, plot, image_files
    >>> client = Client.from_vertex(project="p", location="us-central1", endpoint="123")
    >>> report = targeted(client, image_files("photos/"), concurrency=4, conf=0.3)
    >>> print(render_table(report))
    >>> plot(report, "ab.png")
"""

from client.ab.figure import plot
from client.ab.inputs import IMAGE_SUFFIXES, image_files, video_frames
from client.ab.measures import agreement, latency_stats, match_boxes
from client.ab.modes import (
    ROUTES,
    Route,
    TargetedInterrupted,
    answer_of,
    configured_split,
    deployed_model_names,
    deployed_models,
    split_check,
    targeted,
)
from client.ab.render import deployed_label, render_table
from client.ab.reports import (
    Agreement,
    ConfidenceStats,
    LatencyStats,
    ModelStats,
    Report,
    SplitReport,
    SplitRow,
    TargetedReport,
    decode_report,
    encode_report,
)

__all__ = [
    "TargetedInterrupted",
    "IMAGE_SUFFIXES",
    "Agreement",
    "ConfidenceStats",
    "LatencyStats",
    "ModelStats",
    "Report",
    "ROUTES",
    "Route",
    "SplitReport",
    "SplitRow",
    "TargetedReport",
    "agreement",
    "answer_of",
    "configured_split",
    "decode_report",
    "deployed_label",
    "deployed_model_names",
    "deployed_models",
    "encode_report",
    "image_files",
    "latency_stats",
    "match_boxes",
    "plot",
    "render_table",
    "split_check",
    "targeted",
    "video_frames",
]

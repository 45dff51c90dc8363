"""A/B checks of the deployed models behind one endpoint (``python -m client ab``).

Two modes, each a function returning a msgspec Struct report (JSON with ``msgspec.json``):

* :func:`targeted`: the same inputs sent to each deployed model (pinned by
  ``deployed_model_id``). Per model: latency p50/p95/p99, errors, detections per image,
  per-class counts, confidence quantiles and histogram. Between models: every other model
  against the first (the reference, A): boxes matched one to one (same class, IoU >= 0.5,
  the matching of largest total IoU), precision/recall/F1 of B against A and the mean IoU of
  the matches.
* :func:`split_check`: N untargeted calls; the share each deployed model answered against the
  endpoint's configured traffic split, with a chi-square goodness-of-fit p-value.

:func:`render_table` prints either report; :func:`plot` draws its PNG figure. Calls run on a
thread pool of ``concurrency`` workers over a :class:`~client.Client`; each call's latency is
measured around the client call (retries included), and API, connection and timeout errors
are counted, not raised (a :class:`~client.errors.ParameterError` still stops the run).

numpy, scipy and matplotlib (the ``tools`` extra) and OpenCV (``--video``; the ``server``
extra) are imported only when needed, so ``import client`` stays light.

Example:
    >>> from client import Client
    >>> from client.ab import targeted, render_table, plot, image_files
    >>> client = Client.from_vertex(project="p", location="us-central1", endpoint="123")
    >>> report = targeted(client, image_files("photos/"), concurrency=4, conf=0.3)
    >>> print(render_table(report))
    >>> plot(report, "ab.png")
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path
from typing import Any, Literal, Unpack

import msgspec

from client import errors
from client._client import Client, ImageParams
from client.bench import percentile
from client.schema import Detection
from client.transports import VertexTransport

Route = Literal["detect", "segment"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CONFIDENCE_BINS = 10  # histogram bins over [0, 1]


# -- reports ----------------------------------------------------------------------------------


class LatencyStats(msgspec.Struct, frozen=True, kw_only=True):
    """Latency of the calls that succeeded, in milliseconds (``None`` when there were none)."""

    count: int
    mean_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None


class ConfidenceStats(msgspec.Struct, frozen=True, kw_only=True):
    """Detection confidences: quantiles and a histogram of ``CONFIDENCE_BINS`` bins on [0, 1]."""

    p10: float | None
    p50: float | None
    p90: float | None
    histogram: list[int]


class ModelStats(msgspec.Struct, frozen=True, kw_only=True):
    """One deployed model's side of a targeted run (``label``: A, B, ... in argument order)."""

    label: str
    deployed_model_id: str
    model: str | None  # the model name that answered (first successful answer)
    version: str | None
    calls: int
    errors: int
    error_kinds: dict[str, int]  # "404 unknown-model", "503", "TimeoutError"... -> count
    latency: LatencyStats
    latencies_ms: list[float]  # every successful call's, in input order
    images: int  # images answered
    detections: int
    detections_per_image: float | None
    class_counts: dict[str, int]
    confidence: ConfidenceStats


class Agreement(msgspec.Struct, frozen=True, kw_only=True):
    """A candidate model's boxes against the reference's, over the images both answered.

    ``precision`` = matched / candidate boxes, ``recall`` = matched / reference boxes; with no
    boxes on either side all three are 1.0, else a zero denominator gives 0.0. ``mean_iou`` is
    the mean box IoU of the matches (``None`` without matches).
    """

    reference: str  # label of the reference model (A)
    candidate: str
    images: int
    reference_boxes: int
    candidate_boxes: int
    matched: int
    precision: float
    recall: float
    f1: float
    mean_iou: float | None


class TargetedReport(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="targeted"):
    route: str
    params: dict[str, Any]
    inputs: int
    concurrency: int
    iou_threshold: float
    elapsed_s: float
    models: list[ModelStats]
    agreement: list[Agreement]  # models[1:] against models[0]


class SplitRow(msgspec.Struct, frozen=True, kw_only=True):
    deployed_model_id: str
    configured_percent: float  # 0 for a model that answered but has no share in the split
    expected_share: float
    expected: float  # calls: expected_share x answered
    observed: int
    observed_share: float
    latency: LatencyStats
    latencies_ms: list[float]


class SplitReport(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="split"):
    """``p_value``: chi-square goodness of fit of the observed counts against the configured
    split, over the calls that were answered. A model answering without a configured share
    gives p = 0; with one configured model the test has no freedom: p = 1 (all answers from
    it) or 0."""

    route: str  # "models" when no inputs were given
    calls: int
    answered: int
    errors: int
    error_kinds: dict[str, int]
    concurrency: int
    elapsed_s: float
    rows: list[SplitRow]
    chi_square: float
    dof: int
    p_value: float


Report = TargetedReport | SplitReport
decode_report: Callable[[bytes], Report] = msgspec.json.Decoder(Report).decode


def encode_report(report: Report) -> bytes:
    """The report as indented JSON."""
    return msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n"


# -- inputs -----------------------------------------------------------------------------------


def image_files(folder: str | Path) -> list[Path]:
    """The images (jpg, jpeg, png, webp, bmp) in a folder, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise errors.ParameterError(f"{folder} is not a folder")
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise errors.ParameterError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return found


def video_frames(path: str | Path, *, every: int = 1, max_frames: int | None = None) -> list[bytes]:
    """Every ``every``-th frame of a video (up to ``max_frames``), as JPEG (q95) bytes."""
    if every < 1 or (max_frames is not None and max_frames < 1):
        raise errors.ParameterError("every and max_frames must be at least 1")
    try:
        import cv2
    except ImportError:
        raise errors.ParameterError(
            "reading a video needs OpenCV (cv2): pip install 'vertex-yolo[server]' or "
            "opencv-python-headless"
        ) from None
    if not Path(path).is_file():
        raise errors.ParameterError(f"cannot read {path}: no such file")
    capture = cv2.VideoCapture(str(path))
    frames: list[bytes] = []
    try:
        index = 0
        while max_frames is None or len(frames) < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            if index % every == 0:
                frames.append(
                    cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
                )
            index += 1
    finally:
        capture.release()
    if not frames:
        raise errors.ParameterError(f"no frames could be read from {path}")
    return frames


# -- the endpoint -----------------------------------------------------------------------------


def _vertex_endpoint(client: Client) -> Any | None:
    transport = client.transport
    return transport.endpoint if isinstance(transport, VertexTransport) else None


def configured_split(client: Client) -> dict[str, int]:
    """The endpoint's traffic split (deployed model id -> percent): Vertex only."""
    endpoint = _vertex_endpoint(client)
    if endpoint is None:
        raise errors.ParameterError(
            "the split check needs the endpoint's configured traffic split, which only Vertex "
            "knows: use --endpoint or --emulator-info, not --url (or pass split=)"
        )
    return {str(k): int(v) for k, v in endpoint.traffic_split.items()}


def deployed_models(client: Client) -> list[str]:
    """The endpoint's deployed model ids, largest traffic share first (the incumbent is A).
    Through one URL: that server's own deployed model id."""
    endpoint = _vertex_endpoint(client)
    if endpoint is None:
        return [client.models().deployed_model_id]
    split = endpoint.traffic_split  # reads the endpoint resource, deployed models included
    ids = [m.id for m in endpoint.list_models()]
    return sorted(ids, key=lambda i: -split.get(i, 0))


# -- running calls ----------------------------------------------------------------------------


class _Outcome(msgspec.Struct):
    result: Any = None
    error: str | None = None
    latency_ms: float = 0.0


def _error_kind(exc: errors.VertexYoloError) -> str:
    if isinstance(exc, errors.APIError):
        return f"{exc.status} {exc.code}" if exc.code else str(exc.status)
    return type(exc).__name__


def _timed(call: Callable[[], Any]) -> _Outcome:
    start = time.perf_counter()
    try:
        result = call()
    except errors.ParameterError:
        raise
    except errors.VertexYoloError as exc:
        return _Outcome(error=_error_kind(exc), latency_ms=(time.perf_counter() - start) * 1e3)
    return _Outcome(result=result, latency_ms=(time.perf_counter() - start) * 1e3)


def _run_all(
    calls: Sequence[Callable[[], Any]], concurrency: int, progress: bool, what: str
) -> tuple[list[_Outcome], float]:
    """Run the calls on ``concurrency`` threads: their outcomes in order, and the wall time."""
    from tqdm import tqdm

    outcomes: list[_Outcome | None] = [None] * len(calls)
    start = time.perf_counter()
    with (
        ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ab") as pool,
        tqdm(
            total=len(calls), unit="call", desc=what, disable=not progress, file=sys.stderr
        ) as bar,
    ):
        futures = {pool.submit(_timed, call): i for i, call in enumerate(calls)}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION, timeout=0.5)
                for future in done:
                    outcomes[futures[future]] = future.result()  # a ParameterError stops all
                bar.update(len(done))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return [o for o in outcomes if o is not None], time.perf_counter() - start


# -- statistics -------------------------------------------------------------------------------


def _needs(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"client.ab needs {module.split('.')[0]} (the 'tools' extra): "
            "pip install 'vertex-yolo[tools]'"
        ) from None


def latency_stats(latencies_ms: Sequence[float]) -> LatencyStats:
    if not latencies_ms:
        return LatencyStats(
            count=0, mean_ms=None, p50_ms=None, p95_ms=None, p99_ms=None, max_ms=None
        )
    values = sorted(latencies_ms)
    return LatencyStats(
        count=len(values),
        mean_ms=statistics.fmean(values),
        p50_ms=percentile(values, 50),
        p95_ms=percentile(values, 95),
        p99_ms=percentile(values, 99),
        max_ms=values[-1],
    )


def _confidence_stats(confidences: Sequence[float]) -> ConfidenceStats:
    np = _needs("numpy")
    histogram = np.histogram(confidences, bins=CONFIDENCE_BINS, range=(0.0, 1.0))[0]
    if not confidences:
        return ConfidenceStats(p10=None, p50=None, p90=None, histogram=histogram.tolist())
    values = sorted(confidences)
    p10, p50, p90 = (percentile(values, q) for q in (10, 50, 90))
    return ConfidenceStats(p10=p10, p50=p50, p90=p90, histogram=histogram.tolist())


def match_boxes(
    reference: Sequence[Detection], candidate: Sequence[Detection], iou_threshold: float = 0.5
) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(reference index, candidate index, IoU)`` between two images'
    detections: same class name, IoU >= ``iou_threshold``, the assignment of largest total
    IoU (``scipy.optimize.linear_sum_assignment``)."""
    if not reference or not candidate:
        return []
    np = _needs("numpy")
    linear_sum_assignment = _needs("scipy.optimize").linear_sum_assignment

    def boxes(detections: Sequence[Detection]) -> Any:
        return np.array([[d.box.x1, d.box.y1, d.box.x2, d.box.y2] for d in detections], float)

    a, b = boxes(reference)[:, None, :], boxes(candidate)[None, :, :]
    width = (np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])).clip(0)
    height = (np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])).clip(0)
    inter = width * height
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    same = (
        np.array([d.class_name for d in reference])[:, None]
        == np.array([d.class_name for d in candidate])[None, :]
    )
    allowed = same & (iou >= iou_threshold)
    rows, cols = linear_sum_assignment(np.where(allowed, iou, 0.0), maximize=True)
    return [
        (int(r), int(c), float(iou[r, c])) for r, c in zip(rows, cols, strict=True) if allowed[r, c]
    ]


def _ratio(num: int, den: int, empty: float) -> float:
    return num / den if den else empty


def agreement(
    reference: Sequence[list[Detection] | None],
    candidate: Sequence[list[Detection] | None],
    *,
    labels: tuple[str, str] = ("A", "B"),
    iou_threshold: float = 0.5,
) -> Agreement:
    """Candidate against reference, image by image (``None``: the model did not answer that
    image; such images are left out)."""
    ref_boxes = cand_boxes = images = 0
    ious: list[float] = []
    for ref, cand in zip(reference, candidate, strict=True):
        if ref is None or cand is None:
            continue
        images += 1
        ref_boxes += len(ref)
        cand_boxes += len(cand)
        ious.extend(iou for _, _, iou in match_boxes(ref, cand, iou_threshold))
    matched = len(ious)
    nothing = 1.0 if ref_boxes == 0 and cand_boxes == 0 else 0.0
    precision = _ratio(matched, cand_boxes, nothing)
    recall = _ratio(matched, ref_boxes, nothing)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Agreement(
        reference=labels[0],
        candidate=labels[1],
        images=images,
        reference_boxes=ref_boxes,
        candidate_boxes=cand_boxes,
        matched=matched,
        precision=precision,
        recall=recall,
        f1=f1,
        mean_iou=sum(ious) / matched if matched else None,
    )


def _label(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"M{i}"


def _model_stats(label: str, deployed_model_id: str, outcomes: list[_Outcome]) -> ModelStats:
    answered = [o.result for o in outcomes if o.result is not None]
    detections = [d for r in answered for image in r.results for d in image.detections]
    images = sum(len(r.results) for r in answered)
    latencies = [o.latency_ms for o in outcomes if o.result is not None]
    return ModelStats(
        label=label,
        deployed_model_id=deployed_model_id,
        model=answered[0].model if answered else None,
        version=answered[0].version if answered else None,
        calls=len(outcomes),
        errors=sum(o.error is not None for o in outcomes),
        error_kinds=dict(Counter(o.error for o in outcomes if o.error is not None)),
        latency=latency_stats(latencies),
        latencies_ms=latencies,
        images=images,
        detections=len(detections),
        detections_per_image=len(detections) / images if images else None,
        class_counts=dict(sorted(Counter(d.class_name for d in detections).items())),
        confidence=_confidence_stats([d.confidence for d in detections]),
    )


# -- the two modes ----------------------------------------------------------------------------


def _check(route: str, concurrency: int) -> None:
    if route not in ("detect", "segment"):
        raise errors.ParameterError(f"route must be 'detect' or 'segment', not {route!r}")
    if concurrency < 1:
        raise errors.ParameterError(f"concurrency must be at least 1, not {concurrency}")


def targeted(
    client: Client,
    inputs: Sequence[Any],
    *,
    deployed_model_ids: Sequence[str] | None = None,
    concurrency: int = 4,
    route: Route = "detect",
    iou_threshold: float = 0.5,
    progress: bool = False,
    **params: Unpack[ImageParams],
) -> TargetedReport:
    """Send each input (one image per call) to each deployed model, and compare.

    Args:
        client: a :class:`~client.Client` (through Vertex to pin deployed models; one made with
            ``from_url`` can only name the server's own id).
        inputs: images (paths, bytes, arrays...; see :func:`image_files`, :func:`video_frames`).
        deployed_model_ids: the models to compare, the reference first; the same id may come
            twice (a determinism check). Default: :func:`deployed_models`.
        concurrency: calls in flight at once.
        route: ``"detect"`` or ``"segment"`` (boxes are compared either way).
        iou_threshold: the IoU a match needs (with the same class).
        progress: a tqdm bar on stderr.
        params: inference parameters, the same for every call.
    """
    _check(route, concurrency)
    if not 0 < iou_threshold <= 1:
        raise errors.ParameterError(f"iou_threshold must be in (0, 1], not {iou_threshold}")
    if not inputs:
        raise errors.ParameterError("no inputs to send")
    ids = list(deployed_model_ids) if deployed_model_ids else deployed_models(client)
    if not ids:
        raise errors.ParameterError("the endpoint has no deployed models")
    for dm in dict.fromkeys(ids):  # unknown ids fail here, before the run; opens connections
        client.models(deployed_model_id=dm)
    method = client.segment if route == "segment" else client.detect

    # interleaved (input by input) so every model sees the same conditions over the run
    calls = [
        partial(method, image, deployed_model_id=dm, **params) for image in inputs for dm in ids
    ]
    outcomes, elapsed = _run_all(calls, concurrency, progress, f"A/B {len(ids)} models")
    per_model = [outcomes[j :: len(ids)] for j in range(len(ids))]
    models = [_model_stats(_label(j), dm, per_model[j]) for j, dm in enumerate(ids)]

    def detections(outcome: _Outcome) -> list[Detection] | None:
        return outcome.result.results[0].detections if outcome.result is not None else None

    answers = [[detections(o) for o in column] for column in per_model]
    agreements = [
        agreement(
            answers[0],
            answers[j],
            labels=(models[0].label, models[j].label),
            iou_threshold=iou_threshold,
        )
        for j in range(1, len(ids))
    ]
    return TargetedReport(
        route=route,
        params={k: v for k, v in params.items() if v is not None},
        inputs=len(inputs),
        concurrency=concurrency,
        iou_threshold=iou_threshold,
        elapsed_s=elapsed,
        models=models,
        agreement=agreements,
    )


def split_check(
    client: Client,
    n: int,
    *,
    concurrency: int = 8,
    inputs: Sequence[Any] | None = None,
    route: Route = "detect",
    split: Mapping[str, float] | None = None,
    progress: bool = False,
    **params: Unpack[ImageParams],
) -> SplitReport:
    """``n`` untargeted calls: which deployed model answered each, against the split.

    Without ``inputs`` the calls are ``/models`` (no inference: routing only); with inputs,
    ``route`` calls cycling through them. ``split`` (id -> percent) defaults to the Vertex
    endpoint's configured traffic split.
    """
    _check(route, concurrency)
    if n < 1:
        raise errors.ParameterError(f"the number of calls must be at least 1, not {n}")
    configured = {str(k): float(v) for k, v in (split or configured_split(client)).items()}
    total = sum(v for v in configured.values() if v > 0)
    if total <= 0:
        raise errors.ParameterError("the endpoint's traffic split sends no traffic anywhere")
    if inputs is not None and not inputs:
        raise errors.ParameterError("no inputs to send")
    client.models()  # opens the connection before the threads share it
    if inputs:
        method = client.segment if route == "segment" else client.detect
        calls = [partial(method, inputs[i % len(inputs)], **params) for i in range(n)]
    else:
        calls = [client.models] * n
    outcomes, elapsed = _run_all(calls, concurrency, progress, "split check")
    served: dict[str, list[float]] = {}
    for o in outcomes:
        if o.result is not None:
            served.setdefault(o.result.deployed_model_id, []).append(o.latency_ms)
    answered = sum(len(v) for v in served.values())
    ids = [
        *sorted(configured, key=lambda i: -configured[i]),
        *sorted(set(served) - set(configured)),
    ]
    rows = [
        SplitRow(
            deployed_model_id=dm,
            configured_percent=configured.get(dm, 0.0),
            expected_share=max(configured.get(dm, 0.0), 0.0) / total,
            expected=max(configured.get(dm, 0.0), 0.0) / total * answered,
            observed=len(served.get(dm, [])),
            observed_share=len(served.get(dm, [])) / answered if answered else 0.0,
            latency=latency_stats(served.get(dm, [])),
            latencies_ms=served.get(dm, []),
        )
        for dm in ids
    ]
    chi2, dof, p = _chi_square(rows, answered)
    return SplitReport(
        route=route if inputs else "models",
        calls=n,
        answered=answered,
        errors=n - answered,
        error_kinds=dict(Counter(o.error for o in outcomes if o.error is not None)),
        concurrency=concurrency,
        elapsed_s=elapsed,
        rows=rows,
        chi_square=chi2,
        dof=dof,
        p_value=p,
    )


def _chi_square(rows: list[SplitRow], answered: int) -> tuple[float, int, float]:
    """(statistic, degrees of freedom, p) over the models with a configured share."""
    if answered == 0:
        return 0.0, 0, 1.0
    shared = [r for r in rows if r.expected_share > 0]
    if any(r.observed for r in rows if r.expected_share == 0):
        return float("inf"), max(len(shared) - 1, 0), 0.0  # answered by a model with 0 %
    if len(shared) < 2:
        return 0.0, 0, 1.0  # all answers came from the only model with a share
    chisquare = _needs("scipy.stats").chisquare
    observed = [r.observed for r in shared]
    expected = [r.expected_share * answered for r in shared]
    result = chisquare(observed, expected)
    return float(result.statistic), len(shared) - 1, float(result.pvalue)


# -- output -----------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    """A plain text table: the first ``left`` columns left-aligned, the rest right-aligned."""
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def render_table(report: Report) -> str:
    """The report as text tables, for a terminal."""
    if isinstance(report, SplitReport):
        return _render_split(report)
    m = report.models
    head = (
        f"targeted A/B on /{report.route}: {report.inputs} inputs x {len(m)} deployed models, "
        f"concurrency {report.concurrency}, {report.elapsed_s:.1f} s"
    )
    models = _table(
        [
            "model",
            "deployed model",
            "served by",
            "calls",
            "errors",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "det/img",
            "conf p10/p50/p90",
        ],
        [
            [
                s.label,
                s.deployed_model_id,
                f"{s.model or '-'} {s.version or ''}".strip(),
                s.calls,
                s.errors,
                _fmt(s.latency.p50_ms),
                _fmt(s.latency.p95_ms),
                _fmt(s.latency.p99_ms),
                _fmt(s.detections_per_image, 2),
                "/".join(
                    _fmt(q, 2) for q in (s.confidence.p10, s.confidence.p50, s.confidence.p90)
                ),
            ]
            for s in m
        ],
        left=3,
    )
    parts = [head, "", models]
    kinds = [
        f"{s.label}: " + ", ".join(f"{k} x{v}" for k, v in s.error_kinds.items())
        for s in m
        if s.error_kinds
    ]
    if kinds:
        parts += ["", "errors: " + "; ".join(kinds)]
    classes = sorted({c for s in m for c in s.class_counts})
    if classes:
        parts += [
            "",
            _table(
                ["class", *(s.label for s in m)],
                [[c, *(s.class_counts.get(c, 0) for s in m)] for c in classes],
            ),
        ]
    if report.agreement:
        parts += [
            "",
            f"agreement with {m[0].label} (same class, IoU >= {report.iou_threshold:g}, one to one)",
            _table(
                [
                    "model",
                    "images",
                    "ref boxes",
                    "boxes",
                    "matched",
                    "precision",
                    "recall",
                    "F1",
                    "mean IoU",
                ],
                [
                    [
                        a.candidate,
                        a.images,
                        a.reference_boxes,
                        a.candidate_boxes,
                        a.matched,
                        _fmt(a.precision, 3),
                        _fmt(a.recall, 3),
                        _fmt(a.f1, 3),
                        _fmt(a.mean_iou, 3),
                    ]
                    for a in report.agreement
                ],
            ),
        ]
    return "\n".join(parts)


def _render_split(report: SplitReport) -> str:
    head = (
        f"split check: {report.calls} untargeted /{report.route} calls, {report.answered} "
        f"answered, {report.errors} errors, concurrency {report.concurrency}, "
        f"{report.elapsed_s:.1f} s"
    )
    table = _table(
        [
            "deployed model",
            "configured %",
            "expected",
            "observed",
            "observed %",
            "p50 ms",
            "p95 ms",
        ],
        [
            [
                r.deployed_model_id,
                _fmt(r.configured_percent),
                _fmt(r.expected),
                r.observed,
                _fmt(100 * r.observed_share),
                _fmt(r.latency.p50_ms),
                _fmt(r.latency.p95_ms),
            ]
            for r in report.rows
        ],
    )
    errors_line = ", ".join(f"{k} x{v}" for k, v in report.error_kinds.items())
    fit = f"chi-square {report.chi_square:.2f} (dof {report.dof}), p = {report.p_value:.3g}"
    return "\n".join(
        [head, "", table, "", fit] + ([f"errors: {errors_line}"] if errors_line else [])
    )


def _cdf(ax: Any, series: Sequence[tuple[str, Sequence[float]]]) -> None:
    for name, latencies in series:
        if latencies:
            xs = sorted(latencies)
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.step(xs, ys, where="post", label=name)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("share of calls")
    ax.set_ylim(0, 1.02)
    ax.set_title("latency CDF")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot(report: Report, path: str | Path) -> None:
    """A PNG: the latency CDF per model beside per-class counts (targeted) or configured
    against observed shares (split). matplotlib's Agg canvas, no pyplot state."""
    _needs("matplotlib")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    if isinstance(report, TargetedReport):
        _cdf(left, [(f"{s.label} {s.deployed_model_id}", s.latencies_ms) for s in report.models])
        classes = sorted({c for s in report.models for c in s.class_counts})
        width = 0.8 / max(len(report.models), 1)
        for j, s in enumerate(report.models):
            xs = [i + (j - (len(report.models) - 1) / 2) * width for i in range(len(classes))]
            right.bar(xs, [s.class_counts.get(c, 0) for c in classes], width, label=s.label)
        right.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
        right.set_ylabel("detections")
        right.set_title(f"per-class counts over {report.inputs} inputs")
        right.legend(fontsize=8)
        fig.suptitle(f"A/B on /{report.route}")
    else:
        _cdf(left, [(r.deployed_model_id, r.latencies_ms) for r in report.rows])
        xs = range(len(report.rows))
        right.bar(
            [x - 0.2 for x in xs],
            [100 * r.expected_share for r in report.rows],
            0.4,
            label="configured",
        )
        right.bar(
            [x + 0.2 for x in xs],
            [100 * r.observed_share for r in report.rows],
            0.4,
            label="observed",
        )
        right.set_xticks(list(xs), [r.deployed_model_id for r in report.rows], rotation=15)
        right.set_ylabel("% of calls")
        right.set_title(f"traffic split, p = {report.p_value:.3g}")
        right.legend(fontsize=8)
        fig.suptitle(f"split check: {report.answered} of {report.calls} calls answered")
    try:
        fig.savefig(path, format="png", dpi=100)
    except OSError as exc:
        raise errors.ParameterError(f"cannot write {path}: {exc.strerror or exc}") from None


# -- the CLI subcommand -------------------------------------------------------------------------


def _inputs(args: argparse.Namespace) -> list[Any] | None:
    if args.images:
        return list(image_files(args.images))
    if args.video:
        return list(video_frames(args.video, every=args.every, max_frames=args.max_frames))
    return None


def _output(args: argparse.Namespace, report: Report) -> None:
    from client.cli import writing

    if args.report:
        with writing(args.report):
            Path(args.report).write_bytes(encode_report(report))
    if args.figure:
        plot(report, args.figure)
    sys.stdout.write(encode_report(report).decode() if args.json else render_table(report) + "\n")


def run(args: argparse.Namespace) -> int:
    from client.cli import _params, make_client

    if args.deployed_model_id:
        raise errors.ParameterError(
            "ab sends to several deployed models: use --deployed-models A,B (targeted)"
        )
    try:  # the extras, checked before any call is made
        for module in ("numpy", "scipy", *(("matplotlib",) if args.figure else ())):
            _needs(module)
    except ImportError as exc:
        raise errors.ParameterError(str(exc)) from None
    inputs = _inputs(args)
    params = _params(args, "model", "conf", "iou", "max_det", "classes", "imgsz")
    if args.mode == "split":
        # A retried call is routed again: it would count a failing model's calls as the other's.
        args.retries = 0
    with make_client(args) as client:
        if args.mode == "targeted":
            if inputs is None:
                raise errors.ParameterError("targeted: give --images DIR or --video FILE")
            ids = (
                [i.strip() for i in args.deployed_models.split(",") if i.strip()]
                if args.deployed_models
                else None
            )
            report: Report = targeted(
                client,
                inputs,
                deployed_model_ids=ids,
                concurrency=args.concurrency,
                route=args.route,
                iou_threshold=args.iou_threshold,
                progress=not args.quiet,
                **params,
            )
        else:
            report = split_check(
                client,
                args.n,
                concurrency=args.concurrency,
                inputs=inputs,
                route=args.route,
                progress=not args.quiet,
                **params,
            )
    _output(args, report)
    return 0


def add(sub: Any) -> None:
    """``python -m client ab targeted|split``."""
    from client.cli import connection_options, inference_options

    def shared() -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(add_help=False)
        g = p.add_argument_group("inputs and outputs")
        where = g.add_mutually_exclusive_group()
        where.add_argument("--images", metavar="DIR", help="a folder of jpg/png/webp/bmp images")
        where.add_argument("--video", metavar="FILE", help="a video; its frames are the inputs")
        g.add_argument("--every", type=int, default=1, help="with --video: every n-th frame")
        g.add_argument("--max-frames", type=int, help="with --video: at most this many frames")
        g.add_argument("--route", choices=["detect", "segment"], default="detect")
        g.add_argument("--report", metavar="FILE.json", help="write the JSON report here")
        g.add_argument("--figure", metavar="FILE.png", help="write the PNG figure here")
        g.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
        return p

    parents = [connection_options(), inference_options(), shared()]
    ab = sub.add_parser(
        "ab",
        help="compare deployed models (targeted) or check the traffic split",
        description="A/B checks of an endpoint's deployed models: a table on stdout (--json: "
        "the JSON report), --report FILE.json, --figure FILE.png, progress on stderr.",
    )
    modes = ab.add_subparsers(dest="mode", required=True, metavar="MODE")
    t = modes.add_parser(
        "targeted",
        parents=parents,
        help="the same inputs to each deployed model; latency, detections, agreement",
        description="Sends every input to each deployed model (pinned) and compares: latency "
        "p50/p95/p99, errors, detections per image, per-class counts, confidences; boxes of "
        "each model against the first (same class, IoU >= threshold, one to one): precision, "
        "recall, F1, mean IoU.",
    )
    t.add_argument(
        "--deployed-models",
        metavar="ID,ID",
        help="deployed model ids, the reference first (default: all, largest traffic share "
        "first); an id may repeat",
    )
    t.add_argument("--concurrency", type=int, default=4, help="calls in flight (default 4)")
    t.add_argument("--iou-threshold", type=float, default=0.5, help="IoU a match needs (0.5)")
    t.set_defaults(func=run)
    s = modes.add_parser(
        "split",
        parents=parents,
        help="N untargeted calls against the configured traffic split (chi-square)",
        description="Makes N untargeted calls (/models, or --route over --images/--video) and "
        "compares the share each deployed model answered with the endpoint's traffic split "
        "(Vertex or the emulator only). Prints a chi-square goodness-of-fit p-value.",
    )
    s.add_argument("-n", type=int, default=400, help="number of calls (default 400)")
    s.add_argument("--concurrency", type=int, default=8, help="calls in flight (default 8)")
    s.set_defaults(func=run)

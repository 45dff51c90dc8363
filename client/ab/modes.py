"""The two A/B modes: :func:`targeted` (the same inputs pinned to each deployed model) and
:func:`split_check` (untargeted calls against the endpoint's traffic split)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Literal, Unpack, get_args

from client import errors, names
from client._client import Client, ImageParams
from client.ab.calls import Interrupted, Outcome, run_all
from client.ab.measures import Answer, agreement, chi_square, confidence_stats, latency_stats
from client.ab.reports import ModelStats, SplitReport, SplitRow, TargetedReport
from client.media import ImageInput
from client.schema import Classification, ClassifyResponse, Detection
from client.transports import VertexTransport

Route = Literal["detect", "segment", "classify", "pose", "obb"]
ROUTES: tuple[str, ...] = get_args(Route)


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


def deployed_model_names(client: Client) -> dict[str, str]:
    """Deployed model id -> its display name, as the endpoint lists them (none through one URL)."""
    endpoint = _vertex_endpoint(client)
    if endpoint is None:
        return {}
    return {m.id: m.display_name for m in endpoint.list_models() if m.display_name}


def deployed_models(client: Client) -> list[str]:
    """The endpoint's deployed model ids, largest traffic share first (the incumbent is A).
    Through one URL: that server's own deployed model id."""
    endpoint = _vertex_endpoint(client)
    if endpoint is None:
        return [client.models().deployed_model_id]
    split = endpoint.traffic_split  # reads the endpoint resource, deployed models included
    ids = [m.id for m in endpoint.list_models()]
    return sorted(ids, key=lambda i: -split.get(i, 0))


def _label(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"M{i}"


def _model_stats(
    label: str, deployed_model_id: str, display_name: str | None, outcomes: list[Outcome]
) -> ModelStats:
    answered = [o.result for o in outcomes if o.result is not None]
    detections: list[Detection | Classification] = [
        item for r in answered for image in r.results for item in _objects(image)
    ]
    images = sum(len(r.results) for r in answered)
    latencies = [o.latency_ms for o in outcomes if o.result is not None]
    return ModelStats(
        label=label,
        deployed_model_id=deployed_model_id,
        display_name=display_name,
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
        confidence=confidence_stats([d.confidence for d in detections]),
    )


def _objects(image: Any) -> list[Detection] | list[Classification]:
    """What one image's answer holds: its detections, or a classification's top class (a
    classified image counts as one object of its top class)."""
    return image.classes[:1] if hasattr(image, "classes") else image.detections


def answer_of(outcome: Outcome) -> Answer | None:
    """The first image's answer of a call (``None``: no answer)."""
    if outcome.result is None:
        return None
    image = outcome.result.results[0]
    return image.classes if isinstance(outcome.result, ClassifyResponse) else image.detections


def _check(route: str, concurrency: int) -> None:
    if route not in ROUTES:
        raise errors.ParameterError(f"route must be one of {', '.join(ROUTES)}, not {route!r}")
    if concurrency < 1:
        raise errors.ParameterError(f"concurrency must be at least 1, not {concurrency}")


def targeted(
    client: Client,
    inputs: Sequence[ImageInput],
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
        deployed_model_ids: the models to compare (ids or display names), the reference first;
            the same one may come twice (a determinism check). Default: :func:`deployed_models`.
        concurrency: calls in flight at once.
        route: any inference route: ``"detect"``, ``"segment"`` (boxes are compared either
            way), ``"obb"`` (rotated boxes), ``"pose"`` (boxes, and keypoints by OKS),
            ``"classify"`` (top-1 agreement).
        iou_threshold: the IoU a match needs (with the same class).
        progress: a tqdm bar on stderr.
        params: inference parameters, the same for every call.
    """
    _check(route, concurrency)
    if not 0 < iou_threshold <= 1:
        raise errors.ParameterError(f"iou_threshold must be in (0, 1], not {iou_threshold}")
    if not inputs:
        raise errors.ParameterError("no inputs to send")
    known = names.client_names(client)
    ids = (
        [
            names.resolve(dm, known, "deployed model", errors.DeployedModelNotFoundError)
            for dm in deployed_model_ids
        ]
        if deployed_model_ids
        else deployed_models(client)
    )
    if not ids:
        raise errors.ParameterError("the endpoint has no deployed models")
    for dm in dict.fromkeys(ids):  # unknown ids fail here, before the run; opens connections
        client.models(deployed_model_id=dm)
    method = getattr(client, route)

    # interleaved (input by input) so every model sees the same conditions over the run
    calls = [
        partial(method, image, deployed_model_id=dm, **params) for image in inputs for dm in ids
    ]
    try:
        outcomes, elapsed = run_all(calls, concurrency, progress, f"A/B {len(ids)} models")
    except Interrupted as stop:  # the report over the inputs every model answered, then stop
        rows = [stop.outcomes[i : i + len(ids)] for i in range(0, len(calls), len(ids))]
        whole = [o for row in rows if all(row) for o in row if o is not None]
        report = _targeted_report(
            known, ids, whole, len(whole) // len(ids), route, params, concurrency,
            iou_threshold, stop.elapsed,
        )  # fmt: skip
        raise TargetedInterrupted(report, len(inputs)) from None
    return _targeted_report(
        known, ids, outcomes, len(inputs), route, params, concurrency, iou_threshold, elapsed
    )


class TargetedInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`targeted`: ``report`` covers the first inputs that every deployed
    model answered (``report.inputs`` of ``inputs``)."""

    def __init__(self, report: TargetedReport, inputs: int) -> None:
        super().__init__()
        self.report = report
        self.inputs = inputs


def _targeted_report(
    known: Mapping[str, str] | None,
    ids: list[str],
    outcomes: list[Outcome],
    inputs: int,
    route: str,
    params: Mapping[str, Any],
    concurrency: int,
    iou_threshold: float,
    elapsed: float,
) -> TargetedReport:
    """The report of interleaved ``outcomes`` (input by input, a call per model each)."""
    per_model = [outcomes[j :: len(ids)] for j in range(len(ids))]
    shown = {k: v for k, v in (known or {}).items() if v}
    models = [_model_stats(_label(j), dm, shown.get(dm), per_model[j]) for j, dm in enumerate(ids)]

    answers = [[answer_of(o) for o in column] for column in per_model]
    agreements = [
        agreement(
            answers[0],
            answers[j],
            labels=(models[0].label, models[j].label),
            iou_threshold=iou_threshold,
            task=route,
        )
        for j in range(1, len(ids))
    ]
    return TargetedReport(
        route=route,
        params={k: v for k, v in params.items() if v is not None},
        inputs=inputs,
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
    inputs: Sequence[ImageInput] | None = None,
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
    calls: list[Callable[[], Any]]
    if inputs:
        method = getattr(client, route)
        calls = [partial(method, inputs[i % len(inputs)], **params) for i in range(n)]
    else:
        calls = [client.models] * n
    outcomes, elapsed = run_all(calls, concurrency, progress, "split check")
    served: dict[str, list[float]] = {}
    for o in outcomes:
        if o.result is not None:
            served.setdefault(o.result.deployed_model_id, []).append(o.latency_ms)
    answered = sum(len(v) for v in served.values())
    display = deployed_model_names(client)
    ids = [
        *sorted(configured, key=lambda i: -configured[i]),
        *sorted(set(served) - set(configured)),
    ]
    rows = [
        SplitRow(
            deployed_model_id=dm,
            display_name=display.get(dm),
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
    chi2, dof, p = chi_square(rows, answered)
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

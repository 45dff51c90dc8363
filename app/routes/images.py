"""The image routes, one pipeline and an encoder each: ``/detect``, ``/segment``, ``/pose``,
``/obb`` (one answer shape, :class:`InferenceResponse`), ``/classify``, ``/annotate`` (any
model, drawn) and ``/predict`` (any model, the Vertex guide's shape)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec

from app.config import Settings
from app.frontend import Route
from app.inputs import OCTET_STREAM
from app.pipeline import Inferred, infer
from app.registry import Registry
from app.results import (
    b64,
    classifications,
    classify_result,
    detection_count,
    encode_image,
    image_result,
    render,
)
from app.routes.openapi import operation, problems
from client.schema import (
    BOX_TASKS,
    AnnotatedImage,
    AnnotateParameters,
    AnnotateResponse,
    ClassifyParameters,
    ClassifyResponse,
    DetectParameters,
    GuideDetection,
    GuidePrediction,
    InferenceResponse,
    PredictParameters,
    PredictResponse,
    SegmentParameters,
)

DETECT = Route("/detect", DetectParameters, tasks=BOX_TASKS)
SEGMENT = Route("/segment", SegmentParameters, tasks=("segment",))
POSE = Route("/pose", DetectParameters, tasks=("pose",))
OBB = Route("/obb", DetectParameters, tasks=("obb",))
CLASSIFY = Route("/classify", ClassifyParameters, tasks=("classify",))
ANNOTATE = Route("/annotate", AnnotateParameters)
PREDICT = Route("/predict", PredictParameters, aliases={"confidence": "conf"})

INPUTS = (
    "Send the image as the raw body (image/jpeg, image/png, image/webp, image/bmp or "
    "application/octet-stream) with parameters in the query string; or multipart/form-data "
    "with one or more image files and parameters as form fields; or JSON "
    '`{"instances": [{"image": "<base64>"}], "parameters": {...}}`. Parameters: model, imgsz, '
    "conf, iou, max_det, classes (names or ids); any other is refused."
)
CLASSIFY_INPUTS = INPUTS.replace("conf, iou, max_det, classes (names or ids)", "top_k")
IMAGE_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}
RAW = ["image/jpeg", "image/png", "image/webp", "image/bmp", OCTET_STREAM]
ERRORS = problems(400, 404, 413, 415, 429, 503)


async def _results(
    inferred: Inferred[Any], settings: Settings, with_masks: bool, rle: bool = False
) -> Response[InferenceResponse]:
    """The JSON answer of /detect and /segment."""
    body = await inferred.encode(
        lambda: InferenceResponse(
            model=inferred.model.name,
            version=inferred.model.version,
            deployed_model_id=settings.deployed_model_id,
            task=inferred.model.task,
            results=[image_result(r, with_masks, rle) for r in inferred.results],
            replica_id=settings.replica_id,
            keypoints=inferred.model.keypoints,
        )
    )
    return Response(body, headers=inferred.headers())


class ImagesController(Controller):
    """Image inference routes. Every response carries the model and deployed-model headers."""

    @post(
        "/detect",
        status_code=200,
        summary="Detect objects",
        description=INPUTS,
        responses=ERRORS,
        operation_class=operation(DETECT, RAW, "image"),
    )
    async def detect(
        self,
        request: Request,
        registry: NamedDependency[Registry],
        settings: NamedDependency[Settings],
    ) -> Response[InferenceResponse]:
        inferred = await infer(request, registry, settings, DETECT)
        return await _results(inferred, settings, with_masks=False)

    @post(
        "/segment",
        status_code=200,
        summary="Segment instances",
        description=INPUTS + " Add rle=true for COCO RLE masks. Needs a segmentation model.",
        responses=ERRORS,
        operation_class=operation(SEGMENT, RAW, "image"),
    )
    async def segment(
        self,
        request: Request,
        registry: NamedDependency[Registry],
        settings: NamedDependency[Settings],
    ) -> Response[InferenceResponse]:
        inferred = await infer(request, registry, settings, SEGMENT)
        return await _results(inferred, settings, with_masks=True, rle=inferred.params.rle)

    @post(
        "/pose",
        status_code=200,
        summary="Detect objects with their keypoints",
        description=INPUTS + " Each detection carries its keypoints (x, y, confidence in "
        "pixels) and the answer the model's keypoint layout. Needs a pose model.",
        responses=ERRORS,
        operation_class=operation(POSE, RAW, "image"),
    )
    async def pose(
        self,
        request: Request,
        registry: NamedDependency[Registry],
        settings: NamedDependency[Settings],
    ) -> Response[InferenceResponse]:
        inferred = await infer(request, registry, settings, POSE)
        return await _results(inferred, settings, with_masks=False)

    @post(
        "/obb",
        status_code=200,
        summary="Detect oriented (rotated) boxes",
        description=INPUTS + " Each detection carries its rotated box (centre, width, height, "
        "angle in radians, four corners) beside the axis-aligned box around it. Needs an OBB "
        "model.",
        responses=ERRORS,
        operation_class=operation(OBB, RAW, "image"),
    )
    async def obb(
        self,
        request: Request,
        registry: NamedDependency[Registry],
        settings: NamedDependency[Settings],
    ) -> Response[InferenceResponse]:
        inferred = await infer(request, registry, settings, OBB)
        return await _results(inferred, settings, with_masks=False)

    @post(
        "/classify",
        status_code=200,
        summary="Classify images",
        description=CLASSIFY_INPUTS + " Answers each image's top_k classes (default 5) with "
        "their confidences, best first. Needs a classification model.",
        responses=ERRORS,
        operation_class=operation(CLASSIFY, RAW, "image"),
    )
    async def classify(
        self,
        request: Request,
        registry: NamedDependency[Registry],
        settings: NamedDependency[Settings],
    ) -> Response[ClassifyResponse]:
        inferred = await infer(request, registry, settings, CLASSIFY)
        top_k = inferred.params.top_k
        body = await inferred.encode(
            lambda: ClassifyResponse(
                model=inferred.model.name,
                version=inferred.model.version,
                deployed_model_id=settings.deployed_model_id,
                task=inferred.model.task,
                results=[classify_result(r, top_k) for r in inferred.results],
                replica_id=settings.replica_id,
            )
        )
        return Response(body, headers=inferred.headers())

    @post(
        "/annotate",
        status_code=200,
        summary="Draw the model's answer on the image",
        description=INPUTS
        + " Any model: boxes, masks, keypoints (with the model's skeleton), rotated boxes, or "
        "a classification's top classes. Answers the drawn image (JPEG by default; PNG by "
        "Accept: image/png or format=png) "
        "with its detection count in X-Detection-Count, or, with Accept: application/json, "
        "the detections and the image in base64.",
        responses={
            200: ResponseSpec(
                AnnotateResponse,
                description="The annotated image (image/jpeg, image/png), or the detections "
                "and the images in base64 (application/json)",
                generate_examples=False,
            ),
            **ERRORS,
        },
        operation_class=operation(ANNOTATE, RAW, "image", extra_200=list(IMAGE_TYPES.values())),
    )
    async def annotate(
        self,
        request: Request,
        registry: NamedDependency[Registry],
        settings: NamedDependency[Settings],
    ) -> Response:
        accept = request.accept.best_match(
            ["image/jpeg", "image/png", "application/json"], default="image/jpeg"
        )
        inferred = await infer(
            request,
            registry,
            settings,
            ANNOTATE,
            one_image=None
            if accept == "application/json"
            else "send one image, or ask for Accept: application/json to get all of them",
            draft=False,  # the drawing is the full-size image
        )
        fmt = inferred.params.format or ("png" if accept == "image/png" else "jpeg")
        model = inferred.model
        if accept == "application/json":

            def encode_json() -> AnnotateResponse:
                results = []
                for r in inferred.results:
                    drawn = encode_image(render(r, model.keypoints), fmt)
                    res = image_result(r, with_masks=model.task == "segment")
                    results.append(
                        AnnotatedImage(
                            width=res.width,
                            height=res.height,
                            detections=res.detections,
                            media_type=IMAGE_TYPES[fmt],
                            image=b64(drawn),
                            classes=classifications(r) if model.task == "classify" else None,
                        )
                    )
                return AnnotateResponse(
                    model=inferred.model.name,
                    version=inferred.model.version,
                    deployed_model_id=settings.deployed_model_id,
                    results=results,
                    replica_id=settings.replica_id,
                )

            body = await inferred.encode(encode_json)
            return Response(body, headers=inferred.headers())
        (result,) = inferred.results
        data = await inferred.encode(
            lambda: encode_image(render(result, model.keypoints), fmt), small=False
        )
        headers = inferred.headers()
        headers["X-Detection-Count"] = str(detection_count(result))
        return Response(data, media_type=IMAGE_TYPES[fmt], headers=headers)

    @post(
        "/predict",
        status_code=200,
        summary="Vertex-style predict (the Ultralytics Vertex AI guide's request and response)",
        description='`{"instances": [{"image": "<base64>"}], "parameters": {"confidence": 0.5}}`'
        ' → `{"predictions": [{"detections": [...], "detection_count": N}], ...}` for a model '
        "that answers boxes (with keypoints for pose, xywhr for OBB), "
        '`{"predictions": [{"classes": [...]}]}` (top_k, default 5) for a classification '
        "model. Any model; also accepts every input form of /detect.",
        responses=ERRORS,
        operation_class=operation(PREDICT, RAW, "image"),
    )
    async def predict(
        self,
        request: Request,
        registry: NamedDependency[Registry],
        settings: NamedDependency[Settings],
    ) -> Response[PredictResponse]:
        inferred = await infer(request, registry, settings, PREDICT)

        def encode() -> PredictResponse:
            predictions = []
            for r in inferred.results:
                if inferred.model.task == "classify":
                    classes = classifications(r, inferred.params.top_k)
                    predictions.append(GuidePrediction(classes=classes))
                    continue
                dets = [
                    GuideDetection(
                        class_id=d.class_id,
                        class_name=d.class_name,
                        confidence=d.confidence,
                        bbox=[d.box.x1, d.box.y1, d.box.x2, d.box.y2],
                        keypoints=[
                            [k.x, k.y] + ([] if k.confidence is None else [k.confidence])
                            for k in d.keypoints
                        ]
                        if d.keypoints is not None
                        else None,
                        xywhr=[o.cx, o.cy, o.width, o.height, o.angle]
                        if (o := d.rotated_box) is not None
                        else None,
                    )
                    for d in image_result(r).detections
                ]
                predictions.append(GuidePrediction(detections=dets, detection_count=len(dets)))
            return PredictResponse(
                predictions=predictions,
                deployed_model_id=settings.deployed_model_id,
                model=inferred.model.name,
                model_version_id=inferred.model.version,
            )

        body = await inferred.encode(encode)
        return Response(body, headers=inferred.headers())

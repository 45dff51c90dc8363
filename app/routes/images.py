"""``/detect``, ``/segment``, ``/annotate`` and ``/predict``: one pipeline, four encoders."""

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
from app.results import b64, encode_image, image_result, render
from app.routes.openapi import operation, problems
from client.schema import (
    AnnotatedImage,
    AnnotateParameters,
    AnnotateResponse,
    DetectParameters,
    GuideDetection,
    GuidePrediction,
    InferenceResponse,
    PredictResponse,
    SegmentParameters,
)

DETECT = Route("/detect", DetectParameters)
SEGMENT = Route("/segment", SegmentParameters, task="segment")
ANNOTATE = Route("/annotate", AnnotateParameters)
PREDICT = Route("/predict", DetectParameters, aliases={"confidence": "conf"})

INPUTS = (
    "Send the image as the raw body (image/jpeg, image/png, image/webp, image/bmp or "
    "application/octet-stream) with parameters in the query string; or multipart/form-data "
    "with one or more image files and parameters as form fields; or JSON "
    '`{"instances": [{"image": "<base64>"}], "parameters": {...}}`. Parameters: model, conf, '
    "iou, max_det, classes (names or ids), imgsz; any other is refused."
)
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
        "/annotate",
        status_code=200,
        summary="Draw detections on the image",
        description=INPUTS
        + " Answers the drawn image (JPEG by default; PNG by Accept: image/png or format=png) "
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
        if accept == "application/json":

            def encode_json() -> AnnotateResponse:
                results = []
                for r in inferred.results:
                    drawn = encode_image(render(r), fmt)
                    res = image_result(r, with_masks=inferred.model.task == "segment")
                    results.append(
                        AnnotatedImage(
                            width=res.width,
                            height=res.height,
                            detections=res.detections,
                            media_type=IMAGE_TYPES[fmt],
                            image=b64(drawn),
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
        data = await inferred.encode(lambda: encode_image(render(result), fmt))
        headers = inferred.headers()
        headers["X-Detection-Count"] = str(len(result.boxes) if result.boxes is not None else 0)
        return Response(data, media_type=IMAGE_TYPES[fmt], headers=headers)

    @post(
        "/predict",
        status_code=200,
        summary="Vertex-style predict (the Ultralytics Vertex AI guide's request and response)",
        description='`{"instances": [{"image": "<base64>"}], "parameters": {"confidence": 0.5}}`'
        ' → `{"predictions": [{"detections": [...], "detection_count": N}], ...}`. '
        "Also accepts every input form of /detect.",
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
                dets = [
                    GuideDetection(
                        class_id=d.class_id,
                        class_name=d.class_name,
                        confidence=d.confidence,
                        bbox=[d.box.x1, d.box.y1, d.box.x2, d.box.y2],
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

"""What the OpenAPI schema says about the inference routes' inputs and errors.

The routes read their own bodies (raw image or video, multipart or JSON, see ``app/inputs.py``),
so Litestar cannot infer a request body or query parameters from their signatures. This module
describes them from the wire contract's Structs (``client/schema.py``), so the schema, the
server's validation and the fuzz tests (``tests/test_fuzz.py``) agree on one definition.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, Operation, Parameter, RequestBody
from PIL import Image

from app.errors import PROBLEM_JSON
from app.frontend import Route
from client.schema import FramesRequest, PredictRequest, Problem

BINARY = {"type": "string", "format": "binary"}
ERRORS = {
    400: "Bad input: not an image or video, corrupt, bad JSON or base64, a bad or unknown "
    "parameter, or the wrong model task",
    404: "No such model",
    413: "Over a limit: body size, images per request, pixels, video frames or length",
    415: "A content type or image format that is not accepted",
    429: "The model's queue is full (Retry-After)",
    503: "Models still loading (Retry-After)",
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """``responses=`` for a handler: each status answered with a problem+json document."""
    return {
        s: ResponseSpec(
            Problem, description=ERRORS[s], media_type=PROBLEM_JSON, generate_examples=False
        )
        for s in statuses
    }


def json_schema(kind: Any) -> dict[str, Any]:
    """A type's JSON Schema with every ``$ref`` inlined (OpenAPI components are Litestar's)."""
    root = msgspec.json.schema(kind)
    defs = root.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in node.items() if k not in ("title", "description")}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(root)


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without its ``null`` alternative (absent means null)."""
    options = [o for o in schema.get("anyOf", []) if o != {"type": "null"}]
    if len(options) == 1:
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
        return {**options[0], **rest}
    return {k: v for k, v in schema.items() if k != "default" or v is not None}


def parameter_schemas(kind: type[msgspec.Struct]) -> dict[str, dict[str, Any]]:
    return {k: _not_null(v) for k, v in json_schema(kind)["properties"].items()}


def _example_image() -> str:
    """A small PNG in base64: a white square on black, so the example runs real inference."""
    image = Image.new("RGB", (96, 96))
    image.paste((255, 255, 255), (24, 24, 72, 72))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


EXAMPLE_IMAGE = _example_image()


def sse_schema(events: dict[str, str]) -> dict[str, Any]:
    """The schema of one Server-Sent Event (Open API before 3.2: ``schema`` is one event): its
    name, and its ``data`` as JSON of the component named for that event."""
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"enum": list(events)},
            "data": {"type": "string"},
            "id": {"type": "string"},
        },
        "oneOf": [
            {
                "properties": {
                    "event": {"const": name},
                    "data": {
                        "contentMediaType": "application/json",
                        "contentSchema": {"$ref": f"#/components/schemas/{component}"},
                    },
                }
            }
            for name, component in events.items()
        ],
    }


def _body(
    raw: list[str], files: str, request: Any, params: dict[str, Any], example: dict[str, Any]
) -> RequestBody:
    body_schema = json_schema(request)
    body_schema["properties"]["parameters"] = {
        "type": "object",
        "properties": params,
        "additionalProperties": False,
    }
    multipart = {
        "type": "object",
        "properties": {files: {"type": "array", "items": BINARY}, **params},
    }
    content = {t: OpenAPIMediaType(schema=BINARY) for t in raw}  # type: ignore[arg-type]
    content["multipart/form-data"] = OpenAPIMediaType(schema=multipart)  # type: ignore[arg-type]
    content["application/json"] = OpenAPIMediaType(
        schema=body_schema,  # type: ignore[arg-type]
        example=example,
    )
    return RequestBody(content=content, required=True)


def operation(
    route: Route[Any],
    raw: list[str],
    files: str,
    extra_200: list[str] | None = None,
    events: dict[str, str] | None = None,
) -> type[Operation]:
    """An ``operation_class`` documenting a route's query parameters and its three body forms:
    a raw ``raw`` body, multipart ``files`` (parameters as fields), or JSON (``PredictRequest``;
    ``FramesRequest`` for a streaming route), each parameter being one of the route's own
    (its Struct, and its aliases).

    ``extra_200`` adds binary media types of the success answer (besides its JSON); ``events``
    makes the success answer an event stream (event name -> the component its data is)."""
    params = parameter_schemas(route.parameters)
    for alias, name in route.aliases.items():
        params[alias] = params[name]
    request = FramesRequest if route.stream else PredictRequest
    key = "frames" if route.stream else "instances"
    item = EXAMPLE_IMAGE if route.stream else {"image": EXAMPLE_IMAGE}
    body = _body(raw, files, request, params, {key: [item], "parameters": {"conf": 0.25}})
    query = [
        Parameter(name=name, param_in="query", schema=schema)  # type: ignore[arg-type]
        for name, schema in params.items()
    ]

    @dataclass
    class _Documented(Operation):
        def __post_init__(self) -> None:
            self.request_body = body
            self.parameters = [*(self.parameters or []), *query]
            ok = (self.responses or {}).get("200")
            content = getattr(ok, "content", None)
            if content is None:
                return
            for media_type in extra_200 or ():
                content[media_type] = OpenAPIMediaType(schema=BINARY)  # type: ignore[arg-type]
            if events:
                content["text/event-stream"] = OpenAPIMediaType(schema=sse_schema(events))  # type: ignore[arg-type]

    return _Documented

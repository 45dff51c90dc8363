"""Every bad input gets a clear RFC 9457 problem: status, code and an actionable detail."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from helpers import b64, encode, scenes

RGB, _ = scenes(1)[0]
PNG = encode(RGB)


def assert_problem(r: httpx.Response, status: int, code: str, *needles: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["code"] == code
    assert body["type"] == f"urn:vertex-yolo:problem:{code}"
    assert body["title"] and body["detail"]
    assert body["request_id"] == r.headers["x-request-id"]
    for needle in needles:
        assert needle in body["detail"], body["detail"]
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body


def png_post(client, path="/detect", params=None, data=PNG, ctype="image/png"):
    return client.post(path, params=params, content=data, headers={"Content-Type": ctype})


def test_not_an_image(client):
    assert_problem(
        png_post(client, data=b"hello, this is text"), 400, "invalid-image", "not a decodable image"
    )


def test_corrupt_image(client):
    jpeg = encode(RGB, "JPEG")
    truncated = jpeg[: len(jpeg) // 2]
    assert_problem(
        png_post(client, data=truncated, ctype="image/jpeg"), 400, "invalid-image", "corrupt"
    )


def test_empty_body(client):
    assert_problem(png_post(client, data=b""), 400, "invalid-image", "no image")


def test_unsupported_content_type(client):
    body = assert_problem(
        png_post(client, data=b"x", ctype="text/plain"), 415, "unsupported-media-type", "text/plain"
    )
    assert "image/png" in body["allowed"]


def test_unsupported_image_format(client):
    gif = io.BytesIO()
    Image.fromarray(RGB).save(gif, format="GIF")
    assert_problem(
        png_post(client, data=gif.getvalue(), ctype="application/octet-stream"),
        415,
        "unsupported-media-type",
        "GIF",
    )


def test_body_over_limit_is_refused(client):
    big = b"\0" * (10 * 1024 * 1024 + 1)
    assert_problem(png_post(client, data=big), 413, "payload-too-large", "10485760 bytes")


def test_chunked_body_over_limit_is_refused(client):
    def chunks():
        for _ in range(12):
            yield b"\0" * (1024 * 1024)

    r = client.post("/detect", content=chunks(), headers={"Content-Type": "image/png"})
    assert_problem(r, 413, "payload-too-large")


def test_image_over_pixel_limit(client):
    img = io.BytesIO()
    Image.new("1", (8000, 7000)).save(img, format="PNG")  # 56 MP > the 50 MP default
    assert_problem(
        png_post(client, data=img.getvalue()), 413, "payload-too-large", "8000x7000", "50000000"
    )


def test_decompression_bomb_is_413_not_500(client):
    img = io.BytesIO()
    Image.new("1", (20000, 10000)).save(img, format="PNG")  # 200 MP: Pillow's bomb error
    assert len(img.getvalue()) < 1_000_000
    assert_problem(png_post(client, data=img.getvalue()), 413, "payload-too-large", "pixels")


def test_too_many_images(client):
    files = [("image", (f"{i}.png", PNG, "image/png")) for i in range(9)]  # the fixture allows 8
    assert_problem(client.post("/detect", files=files), 413, "payload-too-large", "8")
    body = {"instances": [{"image": b64(PNG)}] * 9}
    assert_problem(client.post("/detect", json=body), 413, "payload-too-large", "at most 8")


@pytest.mark.parametrize(
    ("params", "field", "needle"),
    [
        ({"conf": "2"}, "conf", "<= 1.0"),
        ({"conf": "abc"}, "conf", "float"),
        ({"iou": "-0.1"}, "iou", ">= 0.0"),
        ({"max_det": "0"}, "max_det", ">= 1"),
        ({"imgsz": "8"}, "imgsz", ">= 32"),
        ({"confidence": "0.5"}, "confidence", "known parameters"),
    ],
)
def test_bad_parameter(client, params, field, needle):
    body = assert_problem(png_post(client, params=params), 400, "invalid-parameter", needle)
    assert body["field"] == field


def test_bad_format_on_annotate(client):
    r = png_post(client, "/annotate", params={"format": "gif"})
    assert assert_problem(r, 400, "invalid-parameter", "jpeg, png")["field"] == "format"


# Each route's own parameters beyond /detect's; the others are refused there.
OWN = {
    "/detect": {},
    "/predict": {"confidence": "0.5"},
    "/segment": {"rle": "true"},
    "/annotate": {"format": "png"},
}


@pytest.mark.parametrize("route", list(OWN))
@pytest.mark.parametrize("source", ["query", "form", "json"])
def test_each_route_takes_exactly_its_own_parameters(client, route, source):
    """A parameter of another route is a 400 naming it, from the query string, a multipart
    field or the JSON parameters alike; the route's own ones are accepted from each source."""

    def post(params: dict[str, str]) -> httpx.Response:
        if source == "query":
            return png_post(client, route, params=params)
        if source == "form":
            return client.post(route, files={"image": ("a.png", PNG, "image/png")}, data=params)
        body = {"instances": [{"image": b64(PNG)}], "parameters": params}
        return client.post(route, json=body, headers={"Accept": "application/json"})

    others = {k: v for r, own in OWN.items() if r != route for k, v in own.items()}
    for name, value in others.items():
        if name in OWN[route]:
            continue
        body = assert_problem(post({name: value}), 400, "invalid-parameter", "known parameters")
        assert body["field"] == name, (route, source, body)
    for name in ("track", "vid_stride", "max_frames"):  # /stream's
        assert assert_problem(post({name: "1"}), 400, "invalid-parameter")["field"] == name
    assert post({**OWN[route], "conf": "0.3"}).status_code == 200


def test_detect_refuses_rle_and_format(client):
    """The bug this guards against: /detect used to take /segment's rle and /annotate's format."""
    for query in ("rle=true", "format=png"):
        r = client.post(f"/detect?{query}", content=PNG, headers={"Content-Type": "image/png"})
        body = assert_problem(r, 400, "invalid-parameter", "unknown field")
        assert body["field"] == query.split("=")[0]


def test_bad_parameter_in_json_and_form(client):
    r = client.post("/detect", json={"instances": [{"image": b64(PNG)}], "parameters": {"conf": 7}})
    assert assert_problem(r, 400, "invalid-parameter", "<= 1.0")["field"] == "conf"
    r = client.post("/detect", files={"f": ("a.png", PNG, "image/png")}, data={"max_det": "-3"})
    assert assert_problem(r, 400, "invalid-parameter", ">= 1")["field"] == "max_det"


def test_unknown_class(client):
    body = assert_problem(
        png_post(client, params={"classes": "circle,hexagon"}),
        400,
        "invalid-parameter",
        "hexagon",
        "triangle",
    )
    assert body["field"] == "classes"


def test_unknown_model(client):
    body = assert_problem(
        png_post(client, params={"model": "nope"}),
        404,
        "unknown-model",
        "nope",
        "shapes-detect",
        "shapes-segment",
    )
    assert body["allowed"] == [
        "shapes-detect",
        "shapes-segment",
        "shapes-classify",
        "shapes-pose",
        "shapes-obb",
    ]
    assert_problem(client.get("/models/nope"), 404, "unknown-model", "shapes-detect")


def test_segment_on_detect_model(client):
    body = assert_problem(
        png_post(client, "/segment", params={"model": "shapes-detect"}),
        400,
        "wrong-task",
        "detect model",
        "segment",
    )
    assert body["allowed"] == ["shapes-segment"]


def test_bad_json(client):
    r = client.post("/detect", content=b"{not json", headers={"Content-Type": "application/json"})
    assert_problem(r, 400, "bad-request", "not valid JSON")
    r = client.post("/detect", json={"images": []})
    assert_problem(r, 400, "bad-request", "instances")
    r = client.post("/detect", json={"instances": [{"image": "%%%not-base64"}]})
    assert_problem(r, 400, "invalid-image", "instances[0].image", "base64")


def test_annotate_several_images_as_one_image(client):
    files = [("image", (f"{i}.png", PNG, "image/png")) for i in range(2)]
    assert_problem(client.post("/annotate", files=files), 400, "bad-request", "application/json")


def test_unknown_route_and_method(client):
    assert_problem(client.get("/nope"), 404, "not-found", "/nope")
    assert_problem(client.get("/detect"), 405, "method-not-allowed", "GET")


def test_error_does_not_break_the_next_request(client):
    png_post(client, data=b"garbage")
    r = png_post(client)
    assert r.status_code == 200 and np.asarray(r.json()["results"][0]["width"]) == RGB.shape[1]


def test_every_response_says_which_deployed_model_answered(client):
    """Vertex does not say which deployed model answered an /invoke call: the server does, on
    successes, errors and unknown routes alike; /models answers POST (invoke only POSTs)."""
    responses = [
        client.post("/models"),
        client.get("/health"),
        client.post("/detect", content=b"not an image", headers={"Content-Type": "image/png"}),
        client.post("/no-such-route"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 400, 404]
    assert all(r.headers["x-deployed-model-id"] == "dm-test-1" for r in responses)
    assert responses[0].json()["deployed_model_id"] == "dm-test-1"

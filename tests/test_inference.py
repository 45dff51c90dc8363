"""Real inference through a real server process: the demo models on fresh shape images."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from app.config import DEMO_MODELS
from helpers import (
    b64,
    decode,
    det_box,
    encode,
    hit_rate,
    mask_iou,
    match,
    polygons_mask,
    scenes,
)

SCENES = scenes(24)


def test_detect_raw_body(client):
    results, truth = [], []
    for i, (rgb, shapes) in enumerate(SCENES):
        fmt, ctype = (("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp"))[i % 3]
        kw = {"quality": 95} if fmt != "PNG" else {}
        r = client.post("/detect", content=encode(rgb, fmt, **kw), headers={"Content-Type": ctype})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "shapes-detect" and body["task"] == "detect"
        assert body["deployed_model_id"] == "dm-test-1"
        (result,) = body["results"]
        assert (result["width"], result["height"]) == (rgb.shape[1], rgb.shape[0])
        results.append(result)
        truth.append(shapes)
    assert hit_rate(truth, results) >= 0.9


def test_detect_multipart_several_images_in_order(client):
    batch = SCENES[:8]
    files = [("image", (f"{i}.png", encode(rgb), "image/png")) for i, (rgb, _) in enumerate(batch)]
    r = client.post("/detect", files=files, data={"conf": "0.3"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == len(batch)
    assert [(x["width"], x["height"]) for x in results] == [
        (rgb.shape[1], rgb.shape[0]) for rgb, _ in batch
    ]
    assert all(d["confidence"] >= 0.3 for x in results for d in x["detections"])
    assert hit_rate([s for _, s in batch], results) >= 0.9


def test_detect_json_vertex_shape(client):
    batch = SCENES[8:16]
    instances = [{"image": b64(encode(rgb, "JPEG", quality=95))} for rgb, _ in batch]
    instances[0] = {"image": {"b64": instances[0]["image"]}}  # Vertex's {"b64": ...} form
    r = client.post("/detect", json={"instances": instances, "parameters": {"max_det": 10}})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == len(batch)
    assert hit_rate([s for _, s in batch], results) >= 0.9


def test_class_filter_by_name_and_id(client):
    rgb, shapes = next((rgb, s) for rgb, s in SCENES if len({x.name for x in s}) >= 2)
    keep = shapes[0].name
    for value in (keep, str(["circle", "square", "triangle"].index(keep))):
        r = client.post(
            "/detect",
            params={"classes": value},
            content=encode(rgb),
            headers={"Content-Type": "image/png"},
        )
        assert r.status_code == 200, r.text
        names = {d["class_name"] for d in r.json()["results"][0]["detections"]}
        assert names == {keep}


def test_inference_headers(client):
    rgb, _ = SCENES[0]
    r = client.post(
        "/detect",
        content=encode(rgb),
        headers={"Content-Type": "application/octet-stream", "X-Request-Id": "abc-123"},
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "abc-123"
    assert r.headers["x-deployed-model-id"] == "dm-test-1"
    assert r.headers["x-model-name"] == "shapes-detect"
    models = client.get("/models").json()["models"]
    version = next(m["version"] for m in models if m["name"] == "shapes-detect")
    assert r.headers["x-model-version"] == version
    timing = dict(part.strip().split(";dur=") for part in r.headers["server-timing"].split(","))
    assert set(timing) == {"decode", "inference", "encode"}
    assert all(float(v) >= 0 for v in timing.values())
    generated = client.post("/detect", content=encode(rgb), headers={"Content-Type": "image/png"})
    assert len(generated.headers["x-request-id"]) >= 16


def test_segment_masks_match_drawn_polygons(client):
    hits = total = 0
    for rgb, shapes in SCENES[:12]:
        r = client.post(
            "/segment",
            params={"rle": "true"},
            content=encode(rgb),
            headers={"Content-Type": "image/png"},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "shapes-segment" and body["task"] == "segment"
        h, w = rgb.shape[:2]
        dets = body["results"][0]["detections"]
        for s in shapes:
            total += 1
            det, iou = match(s, dets)
            if det is None or iou < 0.5:
                continue
            poly = polygons_mask(det["mask"]["polygons"], h, w)
            rle = det["mask"]["rle"]
            assert rle["size"] == [h, w]
            rle_mask = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            assert mask_iou(poly, rle_mask) >= 0.8  # the two encodings agree
            hits += mask_iou(poly, s.mask(h, w)) >= 0.5
    assert hits / total >= 0.9, f"{hits}/{total} masks with IoU >= 0.5"


def test_segment_without_rle_has_polygons_only(client):
    rgb, _ = SCENES[1]
    r = client.post("/segment", files={"f": ("a.png", encode(rgb), "image/png")})
    assert r.status_code == 200
    dets = r.json()["results"][0]["detections"]
    assert dets and all("rle" not in d["mask"] and d["mask"]["polygons"] for d in dets)


@pytest.mark.parametrize(
    ("accept", "params", "media"),
    [
        (None, {}, "image/jpeg"),
        ("image/png", {}, "image/png"),
        ("image/jpeg", {"format": "png"}, "image/png"),
    ],
)
def test_annotate_returns_drawn_image(client, accept, params, media):
    rgb, _ = SCENES[2]
    headers = {"Content-Type": "image/png"} | ({"Accept": accept} if accept else {})
    r = client.post("/annotate", params=params, content=encode(rgb), headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == media
    count = int(r.headers["x-detection-count"])
    drawn = decode(r.content)
    assert drawn.shape == rgb.shape
    dets = client.post("/detect", content=encode(rgb), headers={"Content-Type": "image/png"}).json()
    boxes = [det_box(d) for d in dets["results"][0]["detections"]]
    assert count == len(boxes) > 0
    diff = np.abs(drawn.astype(int) - rgb.astype(int)).sum(axis=2) > 60
    for x1, y1, x2, y2 in boxes:  # the box outline is drawn: pixels changed inside each box
        region = diff[int(y1) : int(y2) + 1, int(x1) : int(x2) + 1]
        assert region.mean() > 0.02


def test_annotate_json(client):
    batch = SCENES[3:5]
    files = [
        ("image", (f"{i}.jpg", encode(rgb, "JPEG"), "image/jpeg"))
        for i, (rgb, _) in enumerate(batch)
    ]
    r = client.post("/annotate", files=files, headers={"Accept": "application/json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "shapes-detect"
    for (rgb, _), res in zip(batch, body["results"], strict=True):
        assert res["media_type"] == "image/jpeg"
        assert decode(__import__("base64").b64decode(res["image"])).shape == rgb.shape
        assert res["detections"]


def test_predict_guide_shape(client):
    batch = SCENES[5:8]
    body = {
        "instances": [{"image": b64(encode(rgb))} for rgb, _ in batch],
        "parameters": {"confidence": 0.5},
    }
    r = client.post(
        "/predict", content=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["deployedModelId"] == "dm-test-1" and out["model"] == "shapes-detect"
    assert len(out["predictions"]) == len(batch)
    for (_, shapes), pred in zip(batch, out["predictions"], strict=True):
        assert pred["detection_count"] == len(pred["detections"])
        assert all(d["confidence"] >= 0.5 and len(d["bbox"]) == 4 for d in pred["detections"])
        found = {d["class_name"] for d in pred["detections"]}
        assert {s.name for s in shapes} <= found


def test_models_describe_the_demo_models(client):
    r = client.get("/models")
    assert r.status_code == 200
    body = r.json()
    assert body["default_model"] == "shapes-detect"
    by_name = {m["name"]: m for m in body["models"]}
    assert set(by_name) == {name for name, _ in DEMO_MODELS}
    for name, task in (("shapes-detect", "detect"), ("shapes-segment", "segment")):
        m = by_name[name]
        assert m["task"] == task
        assert m["classes"] == {"0": "circle", "1": "square", "2": "triangle"}
        assert m["imgsz"] == 160 and m["device"] == "cpu"
        assert len(m["sha256"]) == 64 and m["sha256"].startswith(m["version"])
        assert m["source"].endswith(f"{name}.pt")
        one = client.get(f"/models/{name}")
        assert one.status_code == 200 and one.json() == m


def test_openapi_documents_routes(client):
    spec = client.get("/openapi/openapi.json").json()
    for path in ("/detect", "/segment", "/annotate", "/predict", "/models", "/health"):
        assert path in spec["paths"]


def test_exif_orientation_is_applied(client):
    """A phone photo stored sideways with EXIF orientation 6 is handled as displayed."""
    rgb, shapes = SCENES[0]
    stored = Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_90)  # as the sensor wrote it
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    r = client.post("/detect", content=buf.getvalue(), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200
    result = r.json()["results"][0]
    assert (result["width"], result["height"]) == (rgb.shape[1], rgb.shape[0])
    assert hit_rate([shapes], [result]) == 1.0


def test_classes_as_json_string(client):
    rgb, _ = SCENES[0]
    body = {"instances": [{"image": b64(encode(rgb))}], "parameters": {"classes": "circle, square"}}
    r = client.post("/detect", json=body)
    assert r.status_code == 200, r.text
    assert {d["class_name"] for d in r.json()["results"][0]["detections"]} <= {"circle", "square"}


def test_concurrent_requests_get_their_own_results(client):
    """Requests racing for the model pool each get the answer for their own images."""
    batch = SCENES[:12]

    def one(item):
        rgb, _ = item
        r = client.post("/detect", content=encode(rgb), headers={"Content-Type": "image/png"})
        assert r.status_code == 200, r.text
        return r.json()["results"][0]

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, batch))
    assert [(r["width"], r["height"]) for r in results] == [
        (rgb.shape[1], rgb.shape[0]) for rgb, _ in batch
    ]
    assert hit_rate([s for _, s in batch], results) >= 0.9

"""Exported models (ONNX through onnxruntime, OpenVINO) served by a real server process.

The bundled demo models are exported with Ultralytics (offline, nothing installed) once per
session; one server serves them beside the PyTorch originals, so answers can be compared on the
same images.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from httpx_sse import connect_sse

from app.config import Settings, SettingsError
from app.demo.shapes import CLASSIFY_SCALE, draw_scene
from app.registry import Registry
from conftest import PATIENCE_S, ROOT, Server, serving, start_server
from helpers import box_iou, det_box, encode, mask_iou, polygons_mask, scenes, upload

DEMO = ROOT / "app/demo/weights"
# Every task's demo model, at its own input size.
EXPORTED = {
    "shapes-detect": 160,
    "shapes-segment": 160,
    "shapes-classify": 96,
    "shapes-pose": 160,
    "shapes-obb": 160,
}
# Every task's model in ONNX, the detector and segmenter in OpenVINO too (an OpenVINO export
# takes 2 s here; the other tasks' outputs go through the same Ultralytics backend as ONNX's).
# ONNX without onnxslim's simplification (1.9 s a model, 0.4 s without; onnxruntime optimises
# the graph when it loads it anyway): the answers are compared with the .pt's all the same.
OPENVINO = ("shapes-detect", "shapes-segment")
EXPORT = f"""
from ultralytics import YOLO
for name, size in {EXPORTED!r}.items():
    YOLO(f"{{name}}.pt").export(format="onnx", imgsz=size, device="cpu", simplify=False)
    if name in {OPENVINO!r}:
        YOLO(f"{{name}}.pt").export(format="openvino", imgsz=size, device="cpu")
"""


def offline_env(workdir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "false",
        "YOLO_CONFIG_DIR": str(workdir / "yolo-config"),
    }


@pytest.fixture(scope="session")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the demo .pt files, their ONNX exports and the detector's and segmenter's
    OpenVINO ones (static, each at its model's input size)."""
    out = tmp_path_factory.mktemp("exports")
    for name in EXPORTED:
        shutil.copy(DEMO / f"{name}.pt", out / f"{name}.pt")
    done = subprocess.run(
        [sys.executable, "-c", EXPORT], cwd=out, env=offline_env(out), capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return out


MODELS = {
    "det-pt": "shapes-detect.pt",
    "det-onnx": "shapes-detect.onnx",
    "det-ov": "shapes-detect_openvino_model/",  # a trailing slash is accepted
    "seg-pt": "shapes-segment.pt",
    "seg-onnx": "shapes-segment.onnx",
    "seg-ov": "shapes-segment_openvino_model",
    **{
        f"{task}-{fmt}": f"shapes-{task}{suffix}"
        for task in ("classify", "pose", "obb")
        for fmt, suffix in (("pt", ".pt"), ("onnx", ".onnx"))
    },
}


@pytest.fixture(scope="module")
def fmt_server(exports: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    spec = ",".join(f"{name}={exports / source}" for name, source in MODELS.items())
    with serving(tmp_path_factory.mktemp("formats"), {"SERVE_MODELS": spec}) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(fmt_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fmt_server.url, timeout=120) as c:
        yield c


def tree_sha256(directory: Path) -> str:
    lines = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{path.relative_to(directory).as_posix()} {digest}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def test_models_report_format_task_classes_size_and_version(http, exports):
    models = {m["name"]: m for m in http.get("/models").json()["models"]}
    assert list(models) == list(MODELS)
    formats = {n: m["format"] for n, m in models.items()}
    kinds = {"pt": "pt", "onnx": "onnx", "ov": "openvino"}
    assert formats == {n: kinds[n.rsplit("-", 1)[1]] for n in MODELS}
    tasks = {
        "det": "detect",
        "seg": "segment",
        "classify": "classify",
        "pose": "pose",
        "obb": "obb",
    }
    for name, m in models.items():
        task = tasks[name.rsplit("-", 1)[0]]
        assert m["task"] == task, m
        classes = (
            {"0": "square"} if task == "pose" else {"0": "circle", "1": "square", "2": "triangle"}
        )
        assert m["classes"] == classes
        assert m["imgsz"] == (96 if task == "classify" else 160)
        assert (m["keypoints"] or {}).get("shape") == ([4, 3] if task == "pose" else None)
        assert m["device"] == "cpu"
        assert m["version"] == m["sha256"][:12]
    onnx = exports / "shapes-detect.onnx"
    assert models["det-onnx"]["sha256"] == hashlib.sha256(onnx.read_bytes()).hexdigest()
    openvino = exports / "shapes-detect_openvino_model"
    assert models["det-ov"]["sha256"] == tree_sha256(openvino)
    assert models["det-ov"]["source"].endswith("shapes-detect_openvino_model")


def post_multipart(http: httpx.Client, route: str, blobs: list[bytes], **params) -> dict:
    files = [("image", (f"{i}.png", b, "image/png")) for i, b in enumerate(blobs)]
    r = http.post(route, files=files, data={k: str(v) for k, v in params.items()})
    assert r.status_code == 200, r.text
    return r.json()


SCENES = scenes(6)
BLOBS = [encode(rgb) for rgb, _ in SCENES]


def assert_same_detections(reference: dict, other: dict) -> None:
    """Every confident reference detection has a same-class twin with box IoU > 0.9."""
    for ref, res in zip(reference["results"], other["results"], strict=True):
        assert (ref["width"], ref["height"]) == (res["width"], res["height"])
        for d in ref["detections"]:
            if d["confidence"] < 0.5:
                continue
            twins = [box_iou(det_box(d), det_box(e)) for e in res["detections"]
                     if e["class_name"] == d["class_name"]]  # fmt: skip
            assert max(twins, default=0.0) > 0.9, (d, res["detections"])


@pytest.mark.parametrize("name", ["det-onnx", "det-ov"])
def test_detect_with_an_export_matches_pytorch_on_several_images(http, name):
    reference = post_multipart(http, "/detect", BLOBS, model="det-pt")
    exported = post_multipart(http, "/detect", BLOBS, model=name)
    assert exported["model"] == name and len(exported["results"]) == len(BLOBS)
    found = sum(len(r["detections"]) for r in exported["results"])
    assert found >= sum(len(s) for _, s in SCENES) * 0.8  # the exports find the shapes
    assert_same_detections(reference, exported)


@pytest.mark.parametrize("name", ["seg-onnx", "seg-ov"])
def test_segment_with_an_export(http, name):
    reference = post_multipart(http, "/segment", BLOBS, model="seg-pt")
    exported = post_multipart(http, "/segment", BLOBS, model=name, rle="true")
    assert_same_detections(reference, exported)
    ious = []
    for (rgb, truth), result in zip(SCENES, exported["results"], strict=True):
        h, w = rgb.shape[:2]
        for shape in truth:
            best = max(
                (mask_iou(polygons_mask(d["mask"]["polygons"], h, w), shape.mask(h, w))
                 for d in result["detections"] if d["class_name"] == shape.name),
                default=0.0,
            )  # fmt: skip
            ious.append(best)
        assert all(d["mask"]["rle"]["size"] == [h, w] for d in result["detections"])
    assert sum(ious) / len(ious) > 0.7, ious


def test_classify_pose_and_obb_exports_answer_as_their_pytorch_weights(http):
    """The same top class; the same boxes, keypoints (within 2 px) and rotated boxes."""
    from client.matching import polygon_iou

    rng = np.random.default_rng(7)
    singles = [encode(draw_scene(rng, 96, 96, 1, CLASSIFY_SCALE)[0]) for _ in range(4)]
    reference = post_multipart(http, "/classify", singles, model="classify-pt")
    exported = post_multipart(http, "/classify", singles, model="classify-onnx")
    for ref, res in zip(reference["results"], exported["results"], strict=True):
        assert ref["classes"][0]["class_name"] == res["classes"][0]["class_name"]
        assert abs(ref["classes"][0]["confidence"] - res["classes"][0]["confidence"]) < 0.02
    # scenes with squares in them (the pose model finds only squares)
    busy = [encode(rgb) for rgb, shapes in scenes(40) if any(x.name == "square" for x in shapes)]
    for task in ("pose", "obb"):
        reference = post_multipart(http, f"/{task}", busy[:6], model=f"{task}-pt")
        exported = post_multipart(http, f"/{task}", busy[:6], model=f"{task}-onnx")
        assert_same_detections(reference, exported)
        found = 0
        for ref, res in zip(reference["results"], exported["results"], strict=True):
            for d in ref["detections"]:
                if d["confidence"] < 0.5:
                    continue
                twin = max(res["detections"], key=lambda e: box_iou(det_box(d), det_box(e)))
                found += 1
                if task == "pose":
                    gaps = [max(abs(a["x"] - b["x"]), abs(a["y"] - b["y"]))
                            for a, b in zip(d["keypoints"], twin["keypoints"], strict=True)]  # fmt: skip
                    assert max(gaps) <= 2, (d, twin)
                else:
                    iou = polygon_iou(d["rotated_box"]["corners"], twin["rotated_box"]["corners"])
                    assert iou > 0.9, (d, twin)
        assert found >= 3, task


def test_a_static_export_refuses_another_imgsz(http):
    r = http.post(
        "/detect?model=det-onnx&imgsz=320", content=BLOBS[0], headers={"Content-Type": "image/png"}
    )
    assert r.status_code == 400, r.text
    problem = r.json()
    assert problem["field"] == "imgsz" and problem["allowed"] == ["160"]
    assert "fixed input size of 160" in problem["detail"]
    r = http.post(
        "/detect?model=det-onnx&imgsz=160", content=BLOBS[0], headers={"Content-Type": "image/png"}
    )
    assert r.status_code == 200, r.text
    frames = [base64.b64encode(BLOBS[0]).decode()]
    r = http.post("/stream?model=det-ov&imgsz=640", json={"frames": frames})
    assert r.status_code == 400 and r.json()["field"] == "imgsz", r.text
    # the PyTorch model takes any size
    r = http.post(
        "/detect?model=det-pt&imgsz=320", content=BLOBS[0], headers={"Content-Type": "image/png"}
    )
    assert r.status_code == 200, r.text


def test_stream_frames_through_an_openvino_export(http):
    frames = [base64.b64encode(encode(rgb)).decode() for rgb, _ in scenes(4, sizes=((160, 160),))]
    with connect_sse(
        http, "POST", "/stream", json={"frames": frames, "parameters": {"model": "det-ov"}}
    ) as source:
        assert source.response.status_code == 200, source.response.read()
        events = [(e.event, json.loads(e.data)) for e in source.iter_sse() if e.data]
    assert [e for e, _ in events] == ["start"] + ["frame"] * 4 + ["end"]
    assert events[0][1]["model"] == "det-ov"
    assert sum(len(body["detections"]) for e, body in events if e == "frame") >= 4


def test_unknown_export_paths_are_refused_at_start(tmp_path):
    with pytest.raises(SettingsError) as err:
        Settings.from_env(
            {"SERVE_MODELS": f"a={tmp_path}/x_openvino_model,b={tmp_path}/y.onnx,c=z.tflite"}
        )
    message = str(err.value)
    assert f"{tmp_path}/x_openvino_model' is not a directory" in message
    assert f"{tmp_path}/y.onnx' is not a file" in message
    assert "'z.tflite' must end with one of" in message and ".onnx" in message


def test_missing_runtime_is_a_clear_startup_error(exports, tmp_path):
    """Without onnxruntime the server stops at start-up naming the `export` extra; nothing is
    installed. A module on PYTHONPATH that fails to import stands in for the missing package
    (uninstalling it from the shared environment is not an option)."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "onnxruntime.py").write_text("raise ImportError('No module named onnxruntime')\n")
    srv = start_server(
        tmp_path,
        {
            "SERVE_MODELS": f"m={exports / 'shapes-detect.onnx'}",
            "PYTHONPATH": os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")]),
        },
    )
    try:
        assert srv.proc.wait(120) == 1
    finally:
        srv.stop()
    logs = srv.logs()
    assert "needs the 'onnxruntime' package" in logs, logs
    assert "export` extra" in logs and "pip install" in logs


def test_storage_uri_discovers_exports_in_cloud_storage(exports, tmp_path, gcs):
    """AIP_STORAGE_URI=gs://... (a GCS API server, the real storage client) with a .pt, its
    .onnx and its OpenVINO directory: all three are downloaded into the cache and served; the
    shared stem names the PyTorch one."""
    root = "gs://weights/formats"
    upload(gcs, f"{root}/shapes.pt", exports / "shapes-detect.pt")
    upload(gcs, f"{root}/shapes.onnx", exports / "shapes-detect.onnx")
    upload(gcs, f"{root}/shapes_openvino_model", exports / "shapes-detect_openvino_model")
    cache = tmp_path / "cache"
    env = {"AIP_STORAGE_URI": root + "/", "SERVE_CACHE_DIR": str(cache)}
    with serving(tmp_path, env) as srv:
        models = httpx.get(srv.url + "/models").json()["models"]
        assert [(m["name"], m["format"], m["source"]) for m in models] == [
            ("shapes", "pt", "shapes.pt"),
            ("shapes-onnx", "onnx", "shapes.onnx"),
            ("shapes-openvino", "openvino", "shapes_openvino_model"),
        ]
        r = httpx.post(
            srv.url + "/detect?model=shapes-openvino",
            content=BLOBS[0],
            headers={"Content-Type": "image/png"},
            timeout=60,
        )
        assert r.status_code == 200 and r.json()["model"] == "shapes-openvino", r.text
    downloaded = cache / "weights" / "formats"
    assert (downloaded / "shapes.pt").read_bytes() == (exports / "shapes-detect.pt").read_bytes()
    assert (downloaded / "shapes.onnx").is_file()
    assert (downloaded / "shapes_openvino_model" / "shapes-detect.xml").is_file() or any(
        (downloaded / "shapes_openvino_model").glob("*.xml")
    )


def test_missing_cloud_storage_weights_stop_the_server(tmp_path, gcs):
    """The load fails naming the object, and the server exits 1 (Vertex restarts a container
    that exits; one that stayed up unhealthy would only be probed)."""
    srv = start_server(tmp_path, {"SERVE_MODELS": "x=gs://weights/nowhere/x.pt"})
    try:
        code = srv.proc.wait(PATIENCE_S)
    finally:
        srv.stop()
    named = "gs://weights/nowhere/x.pt: no such object"
    assert code == 1 and named in srv.logs(), srv.logs()[-3000:]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"SERVE_MODELS": "x=gs://no-such-bucket/x.pt"},
            "gs://no-such-bucket/x.pt: no such object",
        ),
        (
            {"AIP_STORAGE_URI": "gs://no-such-bucket/models/"},
            "gs://no-such-bucket/models/: no such bucket",
        ),
    ],
)
def test_missing_cloud_storage_weights_are_named(env, named, tmp_path, gcs):
    """The other missing sources, through the loader the start runs (``Registry._load_all``,
    in this process: the exit that follows is the test above's)."""
    registry = Registry(Settings.from_env({**env, "SERVE_CACHE_DIR": str(tmp_path / "cache")}))
    try:
        with pytest.raises(FileNotFoundError) as missing:
            registry._load_all()
    finally:
        if registry.threads is not None:
            registry.threads.close()
    assert named in str(missing.value)

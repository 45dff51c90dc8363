"""Exact by default: the server's answer equals Ultralytics' own ``YOLO(weights).predict(path)``
for the same file and weights, whatever the file holds: PNG and JPEG, EXIF-rotated JPEG, PNG and
WebP, grey, RGBA (alpha dropped, not composited), palette, 16-bit PNG, WebP and BMP.

Ultralytics reads a path with ``cv2.imdecode(bytes, cv2.IMREAD_COLOR)``; the server decodes the
request body the same way (``app.images.imdecode``). The session's server answers; the demo
models are loaded in this process, as a user validating them offline would.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from app.demo.shapes import draw_scene
from app.images import imdecode, open_image, to_bgr, turbo_decode
from conftest import ROOT

WEIGHTS = ROOT / "app/demo/weights"
MODELS = {"detect": "shapes-detect", "segment": "shapes-segment"}
MEDIA = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp", ".bmp": "image/bmp"}
ROTATE = Image.Transpose.ROTATE_90  # stored turned left; orientation 6 turns it back


def scene(seed: int) -> np.ndarray:
    """An RGB scene of 320x240 with up to four shapes."""
    rgb, _ = draw_scene(np.random.default_rng(seed), 320, 240, max_shapes=4)
    return rgb


def pil_bytes(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def exif_rotated(rgb: np.ndarray, fmt: str, **kw) -> bytes:
    """The scene stored turned a quarter left, with EXIF orientation 6 to show it upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return pil_bytes(Image.fromarray(rgb).transpose(ROTATE), fmt, exif=exif.tobytes(), **kw)


def upright_exif(rgb: np.ndarray) -> bytes:
    """An EXIF block whose orientation is 1 (upright): decoded as it is stored."""
    exif = Image.Exif()
    exif[0x0112] = 1
    return pil_bytes(Image.fromarray(rgb), "JPEG", exif=exif.tobytes())


def rgba(rgb: np.ndarray) -> bytes:
    """Alpha from 0 (left) to 255 (right): Ultralytics drops it, it does not composite."""
    alpha = np.tile(np.linspace(0, 255, rgb.shape[1]).astype(np.uint8), (rgb.shape[0], 1))
    return pil_bytes(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG")


def png16(rgb: np.ndarray) -> bytes:
    """A 16-bit colour PNG whose low bytes are noise: Ultralytics keeps the high byte."""
    noise = np.random.default_rng(7).integers(0, 256, rgb.shape, dtype=np.uint16)
    deep = rgb[:, :, ::-1].astype(np.uint16) * 256 + noise  # BGR for OpenCV
    ok, buf = cv2.imencode(".png", deep)
    assert ok
    return buf.tobytes()


VARIANTS: dict[str, tuple[str, Callable[[np.ndarray], bytes]]] = {
    "rgb.png": (".png", lambda x: pil_bytes(Image.fromarray(x), "PNG")),
    "rgb.jpg": (".jpg", lambda x: pil_bytes(Image.fromarray(x), "JPEG", quality=90)),
    "progressive.jpg": (
        ".jpg",
        lambda x: pil_bytes(Image.fromarray(x), "JPEG", quality=85, progressive=True),
    ),
    "444.jpg": (".jpg", lambda x: pil_bytes(Image.fromarray(x), "JPEG", subsampling=0)),
    "upright.jpg": (".jpg", upright_exif),
    "cmyk.jpg": (".jpg", lambda x: pil_bytes(Image.fromarray(x).convert("CMYK"), "JPEG")),
    "exif.jpg": (".jpg", lambda x: exif_rotated(x, "JPEG", quality=90)),
    "exif.png": (".png", lambda x: exif_rotated(x, "PNG")),
    "exif.webp": (".webp", lambda x: exif_rotated(x, "WEBP", quality=90)),
    "grey.png": (".png", lambda x: pil_bytes(Image.fromarray(x).convert("L"), "PNG")),
    "grey.jpg": (".jpg", lambda x: pil_bytes(Image.fromarray(x).convert("L"), "JPEG")),
    "rgba.png": (".png", rgba),
    "palette.png": (".png", lambda x: pil_bytes(Image.fromarray(x).quantize(64), "PNG")),
    "16bit.png": (".png", png16),
    "lossy.webp": (".webp", lambda x: pil_bytes(Image.fromarray(x), "WEBP", quality=80)),
    "rgb.bmp": (".bmp", lambda x: pil_bytes(Image.fromarray(x), "BMP")),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("exact")
    out = {}
    for i, (name, (suffix, make)) in enumerate(VARIANTS.items()):
        path = folder / f"{name.split('.')[0]}-{i}{suffix}"
        path.write_bytes(make(scene(2026_12_07 + i)))
        out[name] = path
    return out


@pytest.fixture(scope="module")
def local_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    from app.offline import configure_ultralytics

    configure_ultralytics(tmp_path_factory.mktemp("yolo-config"))
    from ultralytics import YOLO

    return {task: YOLO(str(WEIGHTS / f"{name}.pt")) for task, name in MODELS.items()}


def test_the_decode_gives_the_pixels_ultralytics_reads(files):
    from ultralytics.utils.patches import imread

    for name, path in files.items():
        blob = path.read_bytes()
        expected = imread(str(path))
        decoded = to_bgr(blob, open_image(blob, "the image", 50_000_000), "the image")
        assert decoded.bgr.dtype == np.uint8 and decoded.bgr.shape == expected.shape, name
        assert np.array_equal(decoded.bgr, expected), name
        assert (decoded.height, decoded.width) == expected.shape[:2] and not decoded.reduced
        assert np.array_equal(imdecode(blob, "the image"), expected), name
    upright = imread(str(files["exif.jpg"]))
    assert upright.shape == (240, 320, 3)  # EXIF orientation applied
    # libjpeg-turbo through simplejpeg decodes the plain JPEGs, OpenCV the rotated and CMYK ones
    # (both compared with imread above)
    turbo = {
        name: turbo_decode(blob, open_image(blob, "the image", 50_000_000)) is not None
        for name, blob in ((n, p.read_bytes()) for n, p in files.items())
        if name.endswith(".jpg")
    }
    assert turbo == {
        "rgb.jpg": True, "progressive.jpg": True, "444.jpg": True, "upright.jpg": True,
        "grey.jpg": True, "exif.jpg": False, "cmyk.jpg": False,
    }  # fmt: skip


@pytest.mark.parametrize("task", list(MODELS))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_answers_equal_ultralytics_predict(client, files, local_models, task, variant):
    path = files[variant]
    conf = 0.01 if variant.startswith("grey") else 0.25  # colourless shapes: less sure
    (expected,) = local_models[task].predict(str(path), conf=conf, verbose=False)
    r = client.post(
        f"/{task}",
        params={"model": MODELS[task], "conf": conf},
        content=path.read_bytes(),
        headers={"Content-Type": MEDIA[path.suffix]},
    )
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    height, width = expected.orig_shape
    assert (result["width"], result["height"]) == (width, height)
    detections = result["detections"]
    assert len(detections) == len(expected.boxes), (variant, detections)
    if not variant.startswith("grey"):  # the colourless scenes may hold nothing found
        assert detections, variant
    for d, cls, conf, box in zip(
        detections,
        expected.boxes.cls.tolist(),
        expected.boxes.conf.tolist(),
        expected.boxes.xyxy.tolist(),
        strict=True,
    ):
        assert d["class_id"] == int(cls) and abs(d["confidence"] - conf) < 0.01
        got = [d["box"][k] for k in ("x1", "y1", "x2", "y2")]
        assert np.allclose(got, box, atol=1), (got, box)

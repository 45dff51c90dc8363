"""Decoding: JPEG draft mode (a large JPEG decoded reduced, results in full-size coordinates),
colour order and EXIF orientation, through ``app.images`` and through real servers with
``SERVE_JPEG_DRAFT`` off (the default: exact) and on."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from app.images import decode_images, draft_size, open_image, to_bgr
from conftest import Server, serving
from helpers import box_iou, det_box, encode, mask_iou, match, polygons_mask, scenes


@pytest.fixture(scope="module")
def big() -> list:
    """Three 2560x1920 scenes and their shapes (drawn when a test here first asks: a second each)."""
    return scenes(3, sizes=((2560, 1920),))


def jpeg(rgb: np.ndarray, **kw) -> bytes:
    return encode(rgb, "JPEG", quality=90, **kw)


def decode(blob: bytes, draft_to: int | None):
    return to_bgr(blob, open_image(blob, "the image", 50_000_000), "the image", draft_to)


def test_draft_size_keeps_what_the_letterbox_keeps():
    assert draft_size((4000, 3000), 640) == (640, 480)
    assert draft_size((3000, 4000), 160) == (120, 160)
    assert draft_size((1001, 999), 160) == (160, 160)


def test_a_large_jpeg_is_decoded_reduced_but_reports_its_full_size(big):
    blob = jpeg(big[0][0])
    full = decode(blob, None)
    assert full.bgr.shape == (1920, 2560, 3) and not full.reduced
    small = decode(blob, 160)  # 1/8 of 2560x1920 is 320x240, still >= 160x120
    assert small.bgr.shape == (240, 320, 3) and small.reduced
    assert (small.width, small.height) == (2560, 1920)
    assert small.bgr.flags.c_contiguous and small.bgr.flags.writeable
    assert decode(blob, 640).bgr.shape == (480, 640, 3)  # 1/4: exactly 640x480
    assert decode(blob, 700).bgr.shape == (960, 1280, 3)  # 1/2: 1/4 would be below 700x525
    reference = np.asarray(Image.fromarray(full.bgr).resize((320, 240), Image.Resampling.BOX))
    assert np.abs(reference.astype(int) - small.bgr).mean() < 6  # the same picture


def test_draft_needs_a_jpeg_twice_the_input_size(big):
    rgb = big[0][0][:225, :300]
    assert not decode(jpeg(rgb), 160).reduced  # 300x225: under twice 160x120
    assert decode(jpeg(big[0][0][:240, :320]), 160).bgr.shape == (120, 160, 3)  # exactly twice
    png = encode(big[0][0])
    assert not decode(png, 160).reduced  # not a JPEG


def test_colour_order_and_exif_orientation_with_draft():
    stored = np.zeros((1200, 1600, 3), np.uint8)
    stored[:, :800] = (255, 0, 0)  # left half red, right half blue, as stored
    stored[:, 800:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise: red on top
    blob = jpeg(stored, exif=exif.tobytes())
    for draft_to in (None, 160):
        image = decode(blob, draft_to)
        assert (image.width, image.height) == (1200, 1600)
        h, w = image.bgr.shape[:2]
        assert h > w
        top, bottom = image.bgr[h // 4, w // 2], image.bgr[3 * h // 4, w // 2]
        assert top[2] > 200 and top[0] < 50  # BGR: red on top
        assert bottom[0] > 200 and bottom[2] < 50


def test_limits_are_checked_before_any_image_is_decoded(big):
    from app.errors import PayloadTooLarge

    with pytest.raises(PayloadTooLarge, match="image 1 is 2560x1920"):
        decode_images([encode(big[1][0][:10, :10]), jpeg(big[0][0])], 1_000_000, 160)


@pytest.fixture(scope="module")
def draft_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("draft"), {"SERVE_JPEG_DRAFT": "true"}) as srv:
        yield srv


def detect(url: str, route: str, blob: bytes, **params) -> dict:
    r = httpx.post(
        f"{url}{route}",
        params=params,
        content=blob,
        headers={"Content-Type": "image/jpeg"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("route", ["/detect", "/segment"])
def test_draft_gives_the_same_results_in_full_size_coordinates(draft_server, server, route, big):
    params = {"rle": "true"} if route == "/segment" else {}
    for rgb, truth in big:
        blob = jpeg(rgb)
        (on,) = detect(draft_server.url, route, blob, **params)["results"]
        (off,) = detect(server.url, route, blob, **params)["results"]
        assert (on["width"], on["height"]) == (off["width"], off["height"]) == (2560, 1920)
        assert len(on["detections"]) == len(off["detections"])
        for d in off["detections"]:
            twins = [box_iou(det_box(d), det_box(e)) for e in on["detections"]
                     if e["class_name"] == d["class_name"]]  # fmt: skip
            assert max(twins, default=0.0) > 0.9, (d, on["detections"])
        for shape in truth:
            found, iou = match(shape, on["detections"])
            assert iou > 0.7, (shape.name, shape.box, on["detections"])
            if route == "/segment":
                assert found["mask"]["rle"]["size"] == [1920, 2560]
                drawn = polygons_mask(found["mask"]["polygons"], 1920, 2560)
                assert mask_iou(drawn, shape.mask(1920, 2560)) > 0.7


def test_annotate_draws_on_the_full_size_image(server, big):
    r = httpx.post(
        server.url + "/annotate",
        content=jpeg(big[0][0]),
        headers={"Content-Type": "image/jpeg", "Accept": "image/png"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"  # binary, no base64
    assert Image.open(io.BytesIO(r.content)).size == (2560, 1920)
    assert int(r.headers["x-detection-count"]) >= len(big[0][1])

"""Photos bigger than the endpoint takes: the client scales them down before upload, says so
once on stderr, and answers in the original image's pixels (``client.resize``).

Through the session's emulator (the real SDK, the Vertex 10 MB request limit) with the CLI and
the library, pinned to ``shapes-a`` (the detector); each answer is checked against the same
image sent pre-scaled. ``--max-side 0`` / ``max_side=0`` sends the original and gets the
endpoint's or the server's refusal, as before.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.demo.shapes import SQUARE, draw_scene
from client import Client, resize
from client.cli import main
from client.errors import VertexYoloError


def jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``photo.jpg``: 6000x4500 (27 MP, ~3 MB); ``heavy.jpg``: 4000x3000 of grainy pixels,
    over 11 MB, so over the 10 MB request limit."""
    folder = tmp_path_factory.mktemp("big")
    rgb, _ = draw_scene(np.random.default_rng(5), 1500, 1125, max_shapes=4)
    photo = folder / "photo.jpg"
    photo.write_bytes(jpeg(Image.fromarray(rgb).resize((6000, 4500)), 90))
    rgb, _ = draw_scene(np.random.default_rng(6), 2000, 1500, max_shapes=4)
    grain = np.random.default_rng(1).normal(0, 30, rgb.shape)
    grainy = np.clip(rgb + grain, 0, 255).astype(np.uint8)
    heavy = folder / "heavy.jpg"
    heavy.write_bytes(jpeg(Image.fromarray(grainy).resize((4000, 3000), Image.NEAREST), 97))
    assert len(heavy.read_bytes()) > 11_000_000
    return {"photo": photo, "heavy": heavy}


def prescaled(path: Path, tmp_path: Path, size: tuple[int, int]) -> Path:
    """The photo scaled as a user would before sending it (Lanczos, JPEG q95)."""
    out = tmp_path / f"prescaled-{path.name}"
    with Image.open(path) as image:
        out.write_bytes(jpeg(image.resize(size, Image.Resampling.LANCZOS), 95))
    return out


def assert_scaled_back(big: dict, small: dict, factor: tuple[float, float]) -> None:
    """``big``'s detections are ``small``'s, in pixels ``factor`` times larger."""
    assert len(big["detections"]) == len(small["detections"]) > 0
    fx, fy = factor
    for d, e in zip(big["detections"], small["detections"], strict=True):
        assert d["class_id"] == e["class_id"] and abs(d["confidence"] - e["confidence"]) < 0.01
        b, s = d["box"], e["box"]
        expected = [s["x1"] * fx, s["y1"] * fy, s["x2"] * fx, s["y2"] * fy]
        assert np.allclose([b["x1"], b["y1"], b["x2"], b["y2"]], expected, atol=1), (b, s)


def cli(emulator_info_file: Path, capsys, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--emulator-info", str(emulator_info_file)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_scales_a_big_photo_to_max_side(emulator, emulator_info_file, photos, tmp_path, capsys):
    a = emulator.deployed_models["shapes-a"]
    photo = str(photos["photo"])
    code, out, err = cli(
        emulator_info_file, capsys, "detect", photo, "--max-side", "4000",
        "--deployed-model-id", a, "--json",
    )  # fmt: skip
    assert code == 0, err
    assert err.splitlines() == [f"{photo}: 6000x4500 sent as 4000x3000"]
    (big,) = json.loads(out)["results"]
    assert (big["width"], big["height"]) == (6000, 4500)
    small_path = str(prescaled(photos["photo"], tmp_path, (4000, 3000)))
    code, out, err = cli(
        emulator_info_file, capsys, "detect", small_path, "--deployed-model-id", a, "--json"
    )
    assert code == 0 and err == "", err
    (small,) = json.loads(out)["results"]
    assert_scaled_back(big, small, (1.5, 1.5))


def test_cli_scales_a_photo_over_10_mb_and_max_side_0_sends_it_as_it_is(
    emulator, emulator_info_file, photos, capsys
):
    a = emulator.deployed_models["shapes-a"]
    heavy = str(photos["heavy"])
    code, out, err = cli(emulator_info_file, capsys, "detect", heavy, "--deployed-model-id", a)
    assert code == 0, err
    (line,) = err.splitlines()
    assert line.startswith(f"{heavy}: 4000x3000 sent as ")
    assert f"{heavy}: 4000x3000, " in out  # the original's size
    code, out, err = cli(
        emulator_info_file, capsys, "detect", heavy, "--max-side", "0", "--deployed-model-id", a
    )
    assert code != 0 and "Request payload size exceeds the limit" in err
    assert "sent as" not in err and "Traceback" not in err


def test_library_gives_the_original_pixels(emulator, photos, tmp_path, capsys):
    a = emulator.deployed_models["shapes-a"]
    heavy = photos["heavy"]
    data = heavy.read_bytes()
    sent, scaled = resize.fit(data, "x", resize.Limits(), resize.BODY_LIMIT - resize.BODY_MARGIN)
    assert scaled is not None and len(sent) <= resize.BODY_LIMIT
    (sw, sh) = scaled.sent
    with Client.from_vertex(endpoint=emulator.endpoint_id, **emulator.init_kwargs()) as client:
        big = client.detect(str(heavy), deployed_model_id=a)
        assert capsys.readouterr().err == f"{heavy}: 4000x3000 sent as {sw}x{sh}\n"
        small = client.detect(sent, deployed_model_id=a)
        assert client.server_limits == (50_000_000, 10 * 1024 * 1024)
        photo = client.detect(photos["photo"], deployed_model_id=a)  # 27 MP: under both
        assert capsys.readouterr().err == ""
        assert (photo.results[0].width, photo.results[0].height) == (6000, 4500)
    (b,) = json.loads(json_of(big))["results"]
    (s,) = json.loads(json_of(small))["results"]
    assert (b["width"], b["height"]) == (4000, 3000) and (s["width"], s["height"]) == (sw, sh)
    assert_scaled_back(b, s, (4000 / sw, 3000 / sh))
    with (
        Client.from_vertex(
            endpoint=emulator.endpoint_id, **emulator.init_kwargs(), max_side=0, retries=0
        ) as client,
        pytest.raises(VertexYoloError, match="Request payload size exceeds the limit"),
    ):
        client.detect(str(heavy), deployed_model_id=a)


def json_of(value: object) -> bytes:
    import msgspec

    return msgspec.json.encode(value)


def test_async_client_scales_keypoints_and_rotated_boxes_back(server, capsys):
    """``max_side`` through ``AsyncClient`` on the session server: pose keypoints and rotated
    boxes come back in the original's pixels, equal to the pre-scaled image's times two."""
    import asyncio

    from client import AsyncClient

    seed = 11
    while True:  # a scene with a square: what the pose and OBB demo models find
        rgb, shapes = draw_scene(np.random.default_rng(seed), 320, 320, max_shapes=3)
        if any(shape.class_id == SQUARE for shape in shapes):
            break
        seed += 1
    original = io.BytesIO()
    Image.fromarray(rgb).save(original, format="PNG")
    small = jpeg(Image.fromarray(rgb).resize((160, 160), Image.Resampling.LANCZOS), 95)

    async def both(route: str):
        async with AsyncClient.from_url(server.url, max_side=160) as client:
            call = getattr(client, route)
            return await call(original.getvalue()), await call(small)

    for route, model in (("pose", "shapes-pose"), ("obb", "shapes-obb")):
        big, ref = asyncio.run(both(route))
        assert capsys.readouterr().err == "the image: 320x320 sent as 160x160\n"
        assert big.model == model and (big.results[0].width, big.results[0].height) == (320, 320)
        pairs = list(zip(big.results[0].detections, ref.results[0].detections, strict=True))
        assert pairs, route
        for d, e in pairs:
            assert d.class_id == e.class_id and abs(d.confidence - e.confidence) < 1e-3
            assert np.allclose([d.box.x1, d.box.y2], [e.box.x1 * 2, e.box.y2 * 2], atol=0.01)
            if route == "pose":
                assert d.keypoints and e.keypoints
                for k, j in zip(d.keypoints, e.keypoints, strict=True):
                    assert np.allclose([k.x, k.y], [j.x * 2, j.y * 2], atol=0.01)
            else:
                r, s = d.rotated_box, e.rotated_box
                assert r is not None and s is not None and r.angle == s.angle
                assert np.allclose(
                    [r.cx, r.cy, r.width, r.height],
                    [s.cx * 2, s.cy * 2, s.width * 2, s.height * 2],
                    atol=0.01,
                )
                assert np.allclose(r.corners, np.array(s.corners) * 2, atol=0.01)

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

from app.demo.shapes import draw_scene
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

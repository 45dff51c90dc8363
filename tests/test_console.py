"""The web console (``python -m client console``) in a real headless browser: Debian's chromium
driven by Playwright (no browser download), one console process and one browser for the module,
against the session's emulator (shapes-a 80 % on two replicas, shapes-b 20 % whose /detect runs
the segmenter).

Each test waits for the page's own state (``data-`` attributes the page sets when a call is
done), never for a time; the drawn results are read back from the canvas's ``data-drawn`` /
``data-history`` (what the drawing code drew, in image pixels). Screenshots of each view go to
the test's tmp dir, and to ``$CONSOLE_SCREENSHOTS`` when set (the README's, under
``tests/screenshots/``: ``CONSOLE_SCREENSHOTS=tests/screenshots``).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.demo.shapes import moving_shape_frames, write_video
from client import Client, errors
from client.emulator import EmulatorInfo
from conftest import PATIENCE_S, ROOT
from helpers import encode, scenes

CHROMIUM = Path("/usr/bin/chromium")
ENABLE = "apt-get install -y chromium"
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # the test extra has it; a bare venv may not
    sync_playwright = None  # type: ignore[assignment]

if sync_playwright is None or not CHROMIUM.exists():  # one line in pytest's summary (-ra)
    pytest.skip(
        f"the browser tests did not run: no {CHROMIUM} (Debian's chromium); enable them with "
        f"`{ENABLE}`" + ("" if sync_playwright else " and the test extra (playwright)"),
        allow_module_level=True,
    )

# Chromium as these tests run it: headless, nothing of its own on the network.
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # a camera: Chromium's synthetic one, allowed without asking
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
VIDEO_FRAMES, VIDEO_CENTRES = moving_shape_frames(12)  # 160x120, a square moving left to right


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where a rollout report will be written (the console is started pointing at it)."""
    return tmp_path_factory.mktemp("console-rollout") / "rollout.json"


class ConsoleProcess:
    """A started ``python -m client console``; :meth:`url` waits for the line it prints once it
    listens (so the browser starts while the console imports the SDK)."""

    def __init__(self, proc: subprocess.Popen[str], log: Path) -> None:
        self.proc, self.log, self._url = proc, log, ""

    def url(self) -> str:
        if not self._url:
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()  # "console on http://127.0.0.1:PORT/ (...)"
            assert line.startswith("console on http://127.0.0.1:"), (line, self.log.read_text())
            self._url = line.split()[2]
        return self._url


@pytest.fixture(scope="module")
def console(
    emulator_process: Any, report_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleProcess]:
    """``python -m client console`` on the emulator's live info file (its replicas as they are
    now), on a free port, pointed at the rollout report file."""
    log = tmp_path_factory.mktemp("console") / "console.log"
    info_file = emulator_process.workdir / "info.json"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "client", "console", "--emulator-info", str(info_file)]
            + ["--no-browser", "--rollout-report", str(report_file)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        yield ConsoleProcess(proc, log)
    finally:
        proc.terminate()
        proc.wait(PATIENCE_S)


@pytest.fixture(scope="module")
def page(console: ConsoleProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One browser for the module, on the console's page once the endpoint view is filled."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=BROWSER_ARGS,
            viewport={"width": 1280, "height": 860},
        )
        context.set_default_timeout(PATIENCE_S * 1000)  # a bound on a broken page, not a speed
        page = context.pages[0] if context.pages else context.new_page()
        page.goto(console.url())
        page.wait_for_function("document.body.dataset.endpointLoaded === '1'")
        yield page
        context.close()


@pytest.fixture(scope="module")
def sdk_client(emulator: EmulatorInfo) -> Iterator[Client]:
    with Client.from_vertex(endpoint=emulator.endpoint_id, **emulator.init_kwargs()) as c:
        yield c


#: the views the README shows (tests/screenshots/console-NAME.png)
README_SHOTS = ("endpoint", "playground", "pose", "video", "compare", "rollout", "error")


def screenshot(page: Any, tmp_path: Path, name: str) -> None:
    """The page as it is, in the test's tmp dir (and the README's, with ``CONSOLE_SCREENSHOTS``)."""
    path = tmp_path / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("CONSOLE_SCREENSHOTS") and name in README_SHOTS:  # 256 colours
        from PIL import Image

        out = Path(os.environ["CONSOLE_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("RGB").quantize(256).save(out / path.name, optimize=True)


def drawn(page: Any, canvas: str, attribute: str = "drawn") -> Any:
    return json.loads(page.get_attribute(canvas, f"data-{attribute}") or "null")


def drop(page: Any, selector: str, data: bytes, name: str, media_type: str) -> None:
    """A file dropped on an element, as a user's drag and drop delivers it."""
    transfer = page.evaluate_handle(
        """([b64, name, type]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type }));
            return dt;
        }""",
        [base64.b64encode(data).decode(), name, media_type],
    )
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def run_playground(page: Any, act: Any) -> str:
    """Act (drop or pick a file), then wait until the page says the run is over."""
    page.evaluate("document.body.dataset.pgState = ''")
    act()
    page.wait_for_function("['done', 'error'].includes(document.body.dataset.pgState)")
    return str(page.evaluate("document.body.dataset.pgState"))


def test_endpoint_view_lists_both_deployed_models_with_split_and_replicas(
    page: Any, emulator: EmulatorInfo, tmp_path: Path
) -> None:
    page.click("button[data-view=endpoint]")
    rows = page.locator("#ep-models tbody tr")
    seen = {
        rows.nth(i).get_attribute("data-name"): (
            rows.nth(i).get_attribute("data-deployed-model-id"),
            int(rows.nth(i).get_attribute("data-traffic") or -1),
            int(rows.nth(i).get_attribute("data-replicas") or -1),
        )
        for i in range(rows.count())
    }
    ids = emulator.deployed_models
    assert seen == {"shapes-a": (ids["shapes-a"], 80, 2), "shapes-b": (ids["shapes-b"], 20, 1)}
    states = page.locator("#ep-models .replica").evaluate_all("rs => rs.map(r => r.dataset.state)")
    assert states == ["ready"] * 3
    text = page.inner_text("#ep-models")
    assert "shapes-detect (detect)" in text and "shapes-segment (segment)" in text
    assert page.is_hidden("#ep-error")
    screenshot(page, tmp_path, "endpoint")


def test_dropped_image_shows_the_detections_detect_returns(
    page: Any, emulator: EmulatorInfo, sdk_client: Client, tmp_path: Path
) -> None:
    rgb, _ = scenes(3)[2]  # 320x320
    image = encode(rgb)
    a = emulator.deployed_models["shapes-a"]
    page.click("button[data-view=playground]")
    page.select_option("#pg-target", a)
    page.select_option("#pg-route", "detect")
    assert run_playground(
        page, lambda: drop(page, "#pg-drop", image, "scene.png", "image/png")
    ) == ("done")
    shown = drawn(page, "#pg-canvas")
    expected = sdk_client.detect(image, deployed_model_id=a).results[0].detections
    assert expected, "the scene holds shapes the detector finds"
    assert len(shown) == len(expected)
    for d, e in zip(shown, expected, strict=True):
        assert d["class_name"] == e.class_name
        got = (d["x1"], d["y1"], d["x2"], d["y2"])
        assert got == pytest.approx((e.box.x1, e.box.y1, e.box.x2, e.box.y2), abs=0.5)
    info = page.inner_text("#pg-info")
    assert f"on deployed model {a}, replica " in info and " ms" in info
    assert json.loads(page.text_content("#pg-json") or "null")["result"]["deployed_model_id"] == a
    assert (page.get_attribute("#pg-download", "href") or "").startswith("blob:")
    screenshot(page, tmp_path, "playground")


def scene_with_a_square() -> bytes:
    """A fresh 320x320 scene holding a square (what the pose model finds: its four corners)."""
    return next(
        encode(rgb)
        for rgb, shapes in scenes(12)
        if rgb.shape[0] == 320 and any(s.name == "square" for s in shapes)
    )


def test_every_task_is_drawn_as_its_route_answers(
    page: Any, emulator: EmulatorInfo, tmp_path: Path
) -> None:
    """/segment, /pose, /obb and /classify on one image (shapes-a serves every demo model; the
    page picks the model for the route): the canvas holds what the answer holds."""
    image = scene_with_a_square()
    page.click("button[data-view=playground]")
    page.select_option("#pg-target", emulator.deployed_models["shapes-a"])
    for route, model in [
        ("segment", "shapes-segment"),
        ("pose", "shapes-pose"),
        ("obb", "shapes-obb"),
        ("classify", "shapes-classify"),
    ]:
        page.select_option("#pg-route", route)
        assert page.input_value("#pg-model") == model
        state = run_playground(
            page, lambda: drop(page, "#pg-drop", image, "scene.png", "image/png")
        )
        assert state == "done", page.inner_text("#pg-error")
        answer = json.loads(page.text_content("#pg-json") or "null")["result"]
        assert (answer["model"], answer["task"]) == (model, route)
        shown = drawn(page, "#pg-canvas")
        if route == "classify":
            classes = answer["results"][0]["classes"]
            assert [d["class_name"] for d in shown] == [c["class_name"] for c in classes]
            continue
        detections = answer["results"][0]["detections"]
        assert detections and len(shown) == len(detections)
        if route == "segment":
            assert all(d["mask"] for d in shown)
        elif route == "pose":
            assert [d["keypoints"] for d in shown] == [len(d["keypoints"]) for d in detections]
            assert all(d["keypoints"] == 4 for d in shown)
        else:
            assert all(d["rotated"] for d in shown)
        screenshot(page, tmp_path, route)


def test_video_plays_with_one_tracked_box_following_the_shape(
    page: Any, emulator: EmulatorInfo, tmp_path: Path
) -> None:
    video = tmp_path / "moving.mp4"
    write_video(video, VIDEO_FRAMES, fps=10)
    page.click("button[data-view=playground]")
    page.select_option("#pg-target", emulator.deployed_models["shapes-a"])
    page.select_option("#pg-route", "detect")  # the model: the detector
    page.select_option("#pg-track", "bytetrack")
    state = run_playground(page, lambda: page.set_input_files("#pg-file", str(video)))
    assert state == "done", page.inner_text("#pg-error")
    history = drawn(page, "#pg-canvas", "history")
    assert [h["index"] for h in history] == list(range(len(VIDEO_FRAMES)))
    followed, track_ids = 0, set()
    for h, (cx, cy) in zip(history, VIDEO_CENTRES, strict=True):
        squares = [d for d in h["drawn"] if d["class_name"] == "square"]
        if len(squares) == 1:
            b = squares[0]
            x, y = (b["x1"] + b["x2"]) / 2, (b["y1"] + b["y2"]) / 2
            followed += abs(x - cx) <= 6 and abs(y - cy) <= 6
        track_ids |= {d["track_id"] for d in h["drawn"]}
    assert followed >= 0.9 * len(VIDEO_FRAMES)
    assert len(track_ids) == 1 and None not in track_ids
    assert "done:" in page.inner_text("#pg-info")
    screenshot(page, tmp_path, "video")


def test_compare_shows_both_models_results_and_their_agreement(
    page: Any, emulator: EmulatorInfo, tmp_path: Path
) -> None:
    rgb, _ = scenes(2)[1]
    image = tmp_path / "scene.png"
    image.write_bytes(encode(rgb))
    ids = emulator.deployed_models
    page.click("button[data-view=compare]")
    page.select_option("#cmp-a", ids["shapes-a"])
    page.select_option("#cmp-b", ids["shapes-b"])
    page.select_option("#cmp-route", "detect")
    page.set_input_files("#cmp-file", str(image))
    page.evaluate("document.body.dataset.cmpState = ''")
    page.click("#cmp-run")
    page.wait_for_function("['done', 'error'].includes(document.body.dataset.cmpState)")
    assert page.is_hidden("#cmp-error"), page.inner_text("#cmp-error")
    a, b = drawn(page, "#cmp-canvas-a"), drawn(page, "#cmp-canvas-b")
    assert a and b
    assert page.get_attribute("#cmp-canvas-a", "data-deployed-model-id") == ids["shapes-a"]
    assert page.get_attribute("#cmp-canvas-b", "data-deployed-model-id") == ids["shapes-b"]
    f1 = float(page.get_attribute("#cmp-agreement", "data-f1") or -1)
    assert 0 <= f1 <= 1
    assert "precision" in page.inner_text("#cmp-agreement")
    assert "ms over 1 call(s)" in page.inner_text("#cmp-info-a")
    screenshot(page, tmp_path, "compare")


def test_camera_frames_are_sent_and_drawn_until_stopped(page: Any, emulator: EmulatorInfo) -> None:
    """Chromium's synthetic camera: a frame goes to /detect, its answer is drawn, the next
    frame follows; Stop ends the loop and releases the camera."""
    page.click("button[data-view=playground]")
    page.select_option("#pg-target", emulator.deployed_models["shapes-a"])
    page.select_option("#pg-route", "detect")
    page.click("#pg-camera")
    page.wait_for_function("Number(document.body.dataset.cameraAnswers || 0) >= 2")
    page.click("#pg-camera")
    page.wait_for_function("document.body.dataset.camera === 'off'")
    info = page.inner_text("#pg-info")
    assert (
        info.startswith("camera: shapes-detect ") and emulator.deployed_models["shapes-a"] in info
    )
    assert page.is_hidden("#pg-error")
    assert page.inner_text("#pg-camera") == "Camera"


def test_a_bad_file_shows_the_cli_error_line(
    page: Any, emulator: EmulatorInfo, sdk_client: Client, tmp_path: Path
) -> None:
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"these are notes, not an image\n")
    page.click("button[data-view=playground]")
    page.select_option("#pg-target", emulator.deployed_models["shapes-a"])
    page.select_option("#pg-route", "detect")
    assert run_playground(page, lambda: page.set_input_files("#pg-file", str(bad))) == "error"
    line = page.inner_text("#pg-error")
    with pytest.raises(errors.APIError) as raised:
        sdk_client.detect(bad.read_bytes(), deployed_model_id=emulator.deployed_models["shapes-a"])
    assert line.startswith(f"error: {raised.value}".split(" (request id")[0][:40])
    assert "\n" not in line
    screenshot(page, tmp_path, "error")


def test_rollout_page_follows_the_report_as_the_rollout_writes_it(
    page: Any,
    emulator: EmulatorInfo,
    sdk_client: Client,
    report_file: Path,
    tmp_path: Path,
) -> None:
    """A real rollout (shapes-a -> shapes-b, two steps, no hold, one probe image) writing its
    report as ``client rollout --report`` does; the page, left open, shows each version the
    test puts in the file: a running one, then the final one. The split is restored after."""
    from client import deploy
    from client.cli.rollout import _write_report
    from client.rollout import encode_report, rollout

    ids = emulator.deployed_models
    page.click("button[data-view=rollout]")
    page.wait_for_function("document.getElementById('ro-summary').textContent.includes('Waiting')")
    written: list[Any] = []
    write = _write_report(str(tmp_path / "live.json"))

    def progress(report: Any) -> None:
        written.append(report)
        write(report)

    rgb, _ = scenes(1)[0]
    try:
        final = rollout(
            sdk_client,
            "shapes-a",
            "shapes-b",
            [50, 100],
            hold_s=0,
            probes=[encode(rgb)],
            concurrency=1,
            progress=progress,
        )
    finally:
        deploy.set_traffic_split(emulator.endpoint, {ids["shapes-a"]: 80, ids["shapes-b"]: 20})
    assert [r.verdict for r in written] == ["running"] * len(written)
    assert [len(r.timeline) for r in written] == [0, 1, 1, 2]  # split, step, split, step
    assert final.verdict == "done" and len(final.timeline) == 2

    running = written[-1]
    report_file.write_bytes(encode_report(running))
    page.wait_for_function("document.getElementById('ro-summary').dataset.verdict === 'running'")
    assert page.locator("#ro-steps tbody tr").count() == 2
    report_file.write_bytes(encode_report(final))
    page.wait_for_function("document.getElementById('ro-summary').dataset.verdict === 'done'")
    rows = page.locator("#ro-steps tbody tr").evaluate_all("rs => rs.map(r => r.dataset.verdict)")
    assert rows == ["pass", "pass"]
    assert "shapes-a -> shapes-b" in page.inner_text("#ro-summary")
    screenshot(page, tmp_path, "rollout")

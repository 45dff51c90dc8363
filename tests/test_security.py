"""The security review's findings, each held by a test: object names that would leave the model
cache (against the session's GCS API server), what ``/models`` and ``/health`` show callers,
the emulator's warning off loopback, the SSE line cap, the weights' sha256 pin, and the
library leaving the caller's environment alone."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from litestar.testing import TestClient

from app.config import DEMO_MODELS, Settings, SettingsError
from app.main import create_app
from app.model_sources import (
    PinMismatch,
    _download_gs,
    _inside,
    check_pin,
    check_pins_name_models,
    load_error_code,
    public_source,
)
from app.registry import Registry
from client import errors, vertex
from client.emulator.__main__ import exposure_warning
from client.sse import MAX_LINE_BYTES, LineSplitter, StreamDecoder, iter_lines
from conftest import wait_until

DETECT = Path(dict(DEMO_MODELS)["shapes-detect"])
DETECT_SHA = hashlib.sha256(DETECT.read_bytes()).hexdigest()


# --- Cloud Storage object names that would leave the cache --------------------------------------


@pytest.mark.parametrize(
    "name", ["/abs/escaped.bin", "./here.bin", "sub//x.bin"], ids=["absolute", "dot", "empty-part"]
)
def test_an_openvino_folder_with_an_escaping_object_name_is_refused(
    gcs: Any, tmp_path: Path, name: str
) -> None:
    """Real objects on the GCS API server (``prefix + "/" + "/abs/..."`` was written to
    ``/abs/...`` before: a join with an absolute path); nothing at all is written."""
    prefix = f"traversal/{name.strip('/.').replace('/', '-')}/m_openvino_model"
    bucket = gcs.bucket("weights")
    bucket.blob(f"{prefix}/m.xml").upload_from_string(b"<net/>")
    bucket.blob(f"{prefix}/{name}").upload_from_string(b"written outside")
    assert f"{prefix}/{name}" in {b.name for b in gcs.list_blobs("weights", prefix=prefix)}
    cache = tmp_path / "deep" / "cache"
    cache.mkdir(parents=True)
    with pytest.raises(ValueError, match="is not a plain relative path") as refused:
        _download_gs(f"gs://weights/{prefix}", cache)
    assert repr(name) in str(refused.value)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert load_error_code(refused.value) == "bad-weights-source"


def test_dot_dot_in_an_object_name_is_refused(tmp_path: Path) -> None:
    """Cloud Storage keeps ``..`` in object names; the GCS API server here refuses to store
    them (its own files), so the check that every name goes through is called directly."""
    for name in ("../escaped.bin", "a/../../escaped.bin", "a/.."):
        with pytest.raises(ValueError, match="not a plain relative path"):
            _inside(tmp_path, name, "gs://b/m_openvino_model")
    assert _inside(tmp_path, "a/b..c/d.bin", "gs://b/x") == tmp_path / "a" / "b..c" / "d.bin"


def test_a_gs_uri_whose_path_leaves_the_cache_is_refused(gcs: Any, tmp_path: Path) -> None:
    gcs.bucket("weights").blob("escaped.pt").upload_from_string(b"x")
    with pytest.raises(ValueError, match="not a plain relative path"):
        _download_gs("gs://weights/traversal/../../escaped.pt", tmp_path / "cache")
    assert not any(tmp_path.rglob("*.pt"))


# --- /models and /health show callers what they need, the log the rest --------------------------


def test_models_shows_file_names_not_the_servers_paths(client) -> None:
    models = client.get("/models").json()["models"]
    assert {m["source"] for m in models} == {f"{name}.pt" for name, _ in DEMO_MODELS}
    assert public_source("gs://b/x/y_openvino_model") == "gs://b/x/y_openvino_model"
    assert public_source("/srv/private/dir/w.pt/") == "w.pt"
    assert public_source("yolo11n.pt") == "yolo11n.pt"


@pytest.fixture
def failing_app(tmp_path: Path) -> Iterator[TestClient]:
    """The app in this process (the same create_app ``python -m app`` serves, without its exit
    on a failed load) with weights that are not a pickle, under a folder whose name must not
    reach callers."""
    secret = tmp_path / "secret-folder-name"
    secret.mkdir()
    (secret / "bad.pt").write_bytes(b"these are not weights")
    env = {"SERVE_MODELS": f"m={secret / 'bad.pt'}", "SERVE_TORCH_THREADS": "1"}
    with mock.patch.dict(os.environ), TestClient(create_app(Settings.from_env(env))) as test:
        wait_until(lambda: test.get("/health").json()["status"] == "failed", "the load to fail")
        yield test


def test_a_failed_load_shows_callers_a_code_and_the_log_the_text(failing_app, caplog) -> None:
    health = failing_app.get("/health")
    assert health.status_code == 503
    detail = "model loading failed: load-failed (the server's log has the details)"
    assert health.json()["detail"] == detail
    detect = failing_app.post("/detect", content=b"x", headers={"Content-Type": "image/png"})
    assert detect.status_code == 503 and detect.json()["detail"] == detail
    assert "secret-folder-name" not in health.text + detect.text
    logged = "".join(r.getMessage() + str(r.exc_info) for r in caplog.get_records("setup"))
    assert "secret-folder-name" in logged  # the whole error is logged


def test_load_error_codes() -> None:
    assert load_error_code(FileNotFoundError("gs://b/x.pt: no such object")) == "weights-not-found"
    assert load_error_code(PermissionError("no")) == "weights-forbidden"
    assert load_error_code(PinMismatch("sha")) == "sha256-mismatch"
    assert load_error_code(RuntimeError("torch said something")) == "load-failed"


# --- the emulator off loopback ------------------------------------------------------------------


def test_the_emulator_warns_loudly_off_loopback() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert exposure_warning(host) is None, host
    for host in ("0.0.0.0", "192.168.1.10", "::", "my-host.example"):
        warning = exposure_warning(host)
        assert warning and "WARNING" in warning and "UNAUTHENTICATED" in warning, host


def test_the_emulator_command_prints_the_warning(monkeypatch, capsys) -> None:
    """``python -m client.emulator --host 0.0.0.0`` says it before it starts. The runner is
    replaced by a stub (the one mock here): a real one would listen on every interface."""
    from client.emulator import __main__ as command
    from client.emulator import runner

    monkeypatch.setattr(runner, "run", lambda config, info, work: 0)
    assert command.main(["--empty", "--host", "0.0.0.0"]) == 0
    assert "UNAUTHENTICATED control plane" in capsys.readouterr().err
    assert command.main(["--empty"]) == 0
    assert "WARNING" not in capsys.readouterr().err


# --- the SSE line cap ---------------------------------------------------------------------------


def test_an_unterminated_sse_line_past_the_cap_fails_clearly() -> None:
    splitter = LineSplitter(max_line=1000)
    for _ in range(9):
        assert splitter.feed(b"x" * 100) == []  # kept, not yet over
    assert splitter.feed(b"x" * 100 + b"\n") == [b"x" * 1000]  # exactly the cap: fine
    for _ in range(10):
        splitter.feed(b"y" * 100)
    with pytest.raises(errors.StreamError, match="passed 1000 bytes"):
        splitter.feed(b"y")
    with pytest.raises(errors.StreamError, match="passed 1000 bytes"):
        LineSplitter(max_line=1000).feed(b"z" * 1001 + b"\n")  # a whole line in one chunk too


def test_a_line_over_the_cap_from_the_sdk_fails_clearly() -> None:
    """The SDK's path hands whole lines (``requests`` joins them): the decoder checks them too."""
    decoder = StreamDecoder()
    with pytest.raises(errors.StreamError, match="passed 16777216 bytes"):
        decoder.feed(b"data: " + b"x" * MAX_LINE_BYTES)


def test_the_default_cap_is_16_mb_and_lines_join_across_many_chunks() -> None:
    chunks = [b"data: " + b"a" * 1000] + [b"b" * 1000] * 5000 + [b"\r", b"\n", b"data: c\n"]
    assert list(iter_lines(chunks)) == [b"data: " + b"a" * 1000 + b"b" * 5_000_000, b"data: c"]
    big = LineSplitter()
    assert big.max_line == 16 * 1024 * 1024
    with pytest.raises(errors.StreamError):
        for _ in range(17):
            big.feed(b"x" * (1024 * 1024))


# --- the weights' sha256 pin ------------------------------------------------------------------


def test_sha256_pins_are_read_and_checked() -> None:
    pins = Settings.from_env({"SERVE_MODEL_SHA256": f"shapes-detect={DETECT_SHA.upper()}"})
    assert pins.model_sha256 == {"shapes-detect": DETECT_SHA}
    with pytest.raises(SettingsError, match="must look like name=<64 hex digits>"):
        Settings.from_env({"SERVE_MODEL_SHA256": "shapes-detect=abc"})
    with pytest.raises(SettingsError, match="'other', which SERVE_MODELS does not serve"):
        Settings.from_env({"SERVE_MODEL_SHA256": f"other={DETECT_SHA}"})
    check_pin("m", DETECT, {"m": DETECT_SHA})
    check_pin("unpinned", DETECT, {"m": "0" * 64})
    with pytest.raises(PinMismatch, match="no file to check"):
        check_pin("m", None, {"m": DETECT_SHA})
    with pytest.raises(PinMismatch, match=r"\['gone'\], which are not served"):
        check_pins_name_models(["shapes"], {"gone": DETECT_SHA})


def test_a_pinned_model_with_other_weights_is_refused_before_they_are_read(tmp_path) -> None:
    """The loader's own path (``Registry._load_all``, as the server's start runs it): the file
    is not even a pickle, so an unpickling error would mean it was read; the pin refuses first.
    With the right sha256 the same settings load."""
    other = tmp_path / "shapes-detect.pt"
    other.write_bytes(b"not the pinned weights, not even a pickle")
    env = {"SERVE_MODELS": f"det={other}", "SERVE_MODEL_SHA256": f"det={DETECT_SHA}"}
    registry = Registry(Settings.from_env(env))
    try:
        with pytest.raises(PinMismatch, match="is not the .* that SERVE_MODEL_SHA256 pins"):
            registry._load_all()
    finally:
        if registry.threads is not None:
            registry.threads.close()
    env["SERVE_MODELS"] = f"det={DETECT}"
    registry = Registry(Settings.from_env({**env, "SERVE_TORCH_THREADS": "1"}))
    try:
        (loaded,) = registry._load_all()
        assert loaded.sha256 == DETECT_SHA
    finally:
        if registry.threads is not None:
            registry.threads.close()


# --- the library leaves its caller's environment alone ------------------------------------------


def test_no_proxy_is_left_alone_without_a_proxy(monkeypatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    before = dict(os.environ)
    vertex.loopback_without_proxy("http://127.0.0.1:9")
    assert dict(os.environ) == before
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    vertex.loopback_without_proxy("http://127.0.0.1:9")
    assert set(os.environ["NO_PROXY"].split(",")) >= {"127.0.0.1", "localhost"}

"""Where a model's weights come from: local paths, ``gs://`` objects, ``AIP_STORAGE_URI``
discovery, Ultralytics names, and the version (sha256) that identifies them.

Everything here is blocking I/O, run by the registry's loader thread.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from app.config import DIRECTORY_SUFFIXES, ModelSpec
from app.threads import is_cuda

# Modules an export needs at run time (the `export` extra); Ultralytics never installs them here.
EXPORT_RUNTIMES = {
    "onnx": ("onnx", "onnxruntime"),
    "openvino": ("openvino",),
    "engine": ("tensorrt",),
}
# .engine files are served when named in SERVE_MODELS (CUDA only), never discovered: a folder
# with best.pt and best.engine must still start on a CPU machine.
DISCOVERED_SUFFIXES = (".pt", ".onnx", *DIRECTORY_SUFFIXES)
FORMAT_ORDER = ("pt", "onnx", "openvino", "engine")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_path(path: Path) -> str:
    """A file's sha256; for a directory (an OpenVINO export), the sha256 of its sorted listing
    of ``<relative path> <sha256>`` lines, so the same files give the same version anywhere."""
    if path.is_file():
        return sha256_file(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    listing = "".join(f"{p.relative_to(path).as_posix()} {sha256_file(p)}\n" for p in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def model_format(source: str) -> str:
    """``onnx``, ``openvino``, ``engine`` (TensorRT) or ``pt`` (PyTorch weights or a model
    config), by name."""
    name = source.rstrip("/")
    if name.endswith(".onnx"):
        return "onnx"
    if name.endswith(".engine"):
        return "engine"
    if name.endswith(DIRECTORY_SUFFIXES):
        return "openvino"
    return "pt"


def check_runtime(fmt: str, model_name: str, device: str) -> None:
    """Fail with a clear message when an export's runtime is not installed (Ultralytics'
    auto-install is off, so it would otherwise fail deep inside with an ImportError), or when
    a TensorRT engine is given no CUDA device."""
    if fmt == "engine" and not is_cuda(device):
        raise RuntimeError(
            f"model {model_name!r} is a TensorRT engine, which runs only on a CUDA GPU; this "
            f"server's device is {device} (SERVE_DEVICE)"
        )
    for module in EXPORT_RUNTIMES.get(fmt, ()):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise RuntimeError(
                f"model {model_name!r} is an {fmt} export, which needs the {module!r} package "
                f"({exc}); install the server's `export` extra: pip install '.[server,export]'"
                + (" and TensorRT (pip install tensorrt)" if fmt == "engine" else "")
            ) from None


def _split_gs(uri: str) -> tuple[str, str]:
    bucket, _, path = uri[len("gs://") :].partition("/")
    return bucket, path


def _inside(root: Path, relative: str, uri: str) -> Path:
    """``root / relative``, refusing a name that would leave ``root`` (an object name from
    Cloud Storage is any string: ``..`` parts or a leading ``/`` would write elsewhere)."""
    parts = relative.split("/")
    if not relative or relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(
            f"{uri}: object name {relative!r} is not a plain relative path (empty, '.' or '..' "
            "parts, or a leading '/'); refused: it would be written outside the model's folder"
        )
    return root.joinpath(*parts)


def _download_gs(uri: str, cache_dir: Path) -> Path:
    """Copy a gs:// object (or, for an OpenVINO export, every object under that "directory")
    into the cache (Application Default Credentials; ``STORAGE_EMULATOR_HOST`` for a local GCS
    API server). A missing bucket or object is a :class:`FileNotFoundError` naming it."""
    from google.api_core import exceptions
    from google.cloud import storage  # imported only when a gs:// source is used

    bucket, path = _split_gs(uri.rstrip("/"))
    target = _inside(cache_dir, f"{bucket}/{path}", uri)
    client = storage.Client()
    try:
        # A partial copy of this process's own: servers sharing a cache (replicas on one
        # machine) may download the same object at once; the last rename wins, same bytes.
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        if model_format(path) == "openvino":
            if not target.is_dir():
                blobs = [
                    b
                    for b in client.list_blobs(bucket, prefix=path + "/")
                    if not b.name.endswith("/")
                ]
                if not blobs:
                    raise FileNotFoundError(
                        f"{uri}: no objects under it (an OpenVINO export is a folder)"
                    )
                # every name checked before anything is written
                copies = [
                    (blob, _inside(partial, blob.name[len(path) + 1 :], uri)) for blob in blobs
                ]
                for blob, local in copies:
                    local.parent.mkdir(parents=True, exist_ok=True)
                    blob.download_to_filename(str(local))
                try:
                    partial.rename(target)
                except OSError:
                    if not target.is_dir():
                        raise
                    shutil.rmtree(partial)  # another server's copy got there first
            return target
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            client.bucket(bucket).blob(path).download_to_filename(str(partial))
            os.replace(partial, target)
    except exceptions.NotFound:
        raise FileNotFoundError(f"{uri}: no such object (or no such bucket)") from None
    except exceptions.Forbidden as exc:
        raise PermissionError(f"{uri}: the server may not read it ({exc.message})") from None
    return target


def _stem(name: str) -> str:
    stem = Path(name).stem
    return stem.removesuffix(DIRECTORY_SUFFIXES[0]) if name.endswith(DIRECTORY_SUFFIXES) else stem


def discover_storage_models(storage_uri: str) -> list[ModelSpec]:
    """Every model directly under AIP_STORAGE_URI (``*.pt``, ``*.onnx`` files and
    ``*_openvino_model`` directories), named after its file stem (``x_openvino_model``: ``x``);
    a stem that two formats share names the PyTorch one, the others get ``-onnx``/``-openvino``.
    """
    if storage_uri.startswith("gs://"):
        from google.api_core import exceptions
        from google.cloud import storage

        bucket, prefix = _split_gs(storage_uri.rstrip("/") + "/")
        blobs = storage.Client().list_blobs(bucket, prefix=prefix, delimiter="/")
        try:
            names = [b.name[len(prefix) :] for b in blobs]
        except exceptions.NotFound:
            raise FileNotFoundError(f"AIP_STORAGE_URI={storage_uri}: no such bucket") from None
        names += [p[len(prefix) :].rstrip("/") for p in blobs.prefixes]  # "directories"
    else:
        names = [
            p.name for p in Path(storage_uri).iterdir() if p.is_file() or p.name.endswith("_model")
        ]
    found = sorted(
        ((_stem(n), FORMAT_ORDER.index(model_format(n)), n) for n in names),
        key=lambda item: item[:2],
    )
    specs: list[ModelSpec] = []
    for stem, order, n in found:
        if n.endswith(DISCOVERED_SUFFIXES):
            name = re.sub(r"[^A-Za-z0-9._-]", "-", stem)
            if any(spec.name == name for spec in specs):  # shapes.pt and shapes.onnx side by side
                name = f"{name}-{FORMAT_ORDER[order]}"
            specs.append(ModelSpec(name, n))
    if not specs:
        raise FileNotFoundError(
            f"no models ({', '.join('*' + s for s in DISCOVERED_SUFFIXES)}) found under "
            f"AIP_STORAGE_URI={storage_uri}"
        )
    return specs


def resolve_source(
    source: str, storage_uri: str | None, cache_dir: Path
) -> tuple[str, Path | None]:
    """Where to load ``source`` from, and the file (or export directory) whose sha256 is the
    model's version.

    A gs:// URI or a model under AIP_STORAGE_URI is copied locally; an existing path is used as
    is; an export (``.onnx``, ``_openvino_model``) must be one of those; anything else is handed
    to Ultralytics (``yolo11n.pt`` is downloaded into the cache when online, ``yolo11n.yaml``
    builds a randomly initialised model).
    """
    fmt = model_format(source)

    def exists(path: Path) -> bool:
        return path.is_dir() if fmt == "openvino" else path.is_file()

    if source.startswith("gs://"):
        path = _download_gs(source, cache_dir)
        return str(path), path
    if exists(Path(source)):
        return source, Path(source)
    if storage_uri:
        if storage_uri.startswith("gs://"):
            path = _download_gs(f"{storage_uri.rstrip('/')}/{source}", cache_dir)
            return str(path), path
        candidate = Path(storage_uri) / source
        if exists(candidate):
            return str(candidate), candidate
    if fmt != "pt":
        where = f" (nor under AIP_STORAGE_URI={storage_uri})" if storage_uri else ""
        raise FileNotFoundError(f"model source {source!r} does not exist{where}")
    if source.endswith(".pt") and "/" not in source:
        # Ultralytics downloads a bare name into the working directory, which a container's
        # unprivileged user may not be able to write; download it into the cache instead.
        cache_dir.mkdir(parents=True, exist_ok=True)
        return str(cache_dir / source), None
    return source, None


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


class PinMismatch(RuntimeError):
    """A model's weights are not the ones ``SERVE_MODEL_SHA256`` pins."""


def check_pin(name: str, weights: Path | None, pins: Mapping[str, str]) -> None:
    """Refuse weights whose sha256 is not the one pinned for model ``name`` (PyTorch weights
    are pickles: loading them runs code, so a pinned model's file is checked before it is
    read). An unpinned model passes; a pinned one with no local file to check fails."""
    expected = pins.get(name)
    if expected is None:
        return
    if weights is None:
        raise PinMismatch(
            f"model {name!r} is pinned by SERVE_MODEL_SHA256 but has no file to check (a name "
            "Ultralytics would download, or a model config): give it a path or gs:// URI"
        )
    actual = sha256_path(weights)
    if actual != expected:
        raise PinMismatch(
            f"model {name!r}: sha256 {actual} of {weights} is not the {expected} that "
            "SERVE_MODEL_SHA256 pins; refused before loading it"
        )


def check_pins_name_models(names: list[str], pins: Mapping[str, str]) -> None:
    """Every model SERVE_MODEL_SHA256 pins must be served (discovered models are known only
    once listed): a pin on a name that is not served fails the start."""
    if unknown := sorted(set(pins) - set(names)):
        raise PinMismatch(f"SERVE_MODEL_SHA256 pins {unknown}, which are not served: {names}")


def public_source(source: str) -> str:
    """What ``/models`` shows of a source: a ``gs://`` URI or a bare name as is, a local path
    by its file name only (where the server keeps files is nobody's business but its log's)."""
    if source.startswith("gs://") or "/" not in source:
        return source
    return Path(source.rstrip("/")).name


#: the short codes a failed load shows callers (/health, 503 bodies); the log has the rest
LOAD_ERROR_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (PinMismatch, "sha256-mismatch"),
    (FileNotFoundError, "weights-not-found"),
    (PermissionError, "weights-forbidden"),
    (ValueError, "bad-weights-source"),
    (ImportError, "runtime-missing"),
    (MemoryError, "out-of-memory"),
)


def load_error_code(exc: BaseException) -> str:
    """A failed load's short code for callers: see :data:`LOAD_ERROR_CODES`; else
    ``load-failed``."""
    return next((code for kind, code in LOAD_ERROR_CODES if isinstance(exc, kind)), "load-failed")

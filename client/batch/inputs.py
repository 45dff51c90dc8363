"""What a batch runs over, and reading and writing Cloud Storage from the client.

A batch SOURCE is a local folder (its images, recursively), a glob (``shots/**/*.jpg``), a
``gs://bucket/prefix/`` (its images), a text file of paths or URIs (one a line, ``#`` comments),
or one image. Images are told by their suffix (:data:`IMAGE_SUFFIXES`); a listing is sorted (a
list file keeps its order, each name once), so a run and its resumption see the same inputs.

Cloud Storage goes through the ``google-cloud-storage`` client (Application Default
Credentials, or ``STORAGE_EMULATOR_HOST``), imported only when a ``gs://`` name is used.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from client.errors import CREDENTIALS_HINT, AuthenticationError, ParameterError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_client: Any = None


def storage_client() -> Any:
    global _client
    if _client is None:
        try:
            from google.cloud import storage
        except ImportError:
            raise ParameterError(
                'gs:// inputs and outputs need google-cloud-storage (pip install "vertex-yolo[client]")'
            ) from None
        import google.auth.exceptions

        try:
            _client = storage.Client()
        except google.auth.exceptions.DefaultCredentialsError:
            raise AuthenticationError(
                f"no Google credentials for Cloud Storage (gs://): {CREDENTIALS_HINT}"
            ) from None
    return _client


def split_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/name`` to ``(bucket, name)``."""
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    if not bucket:
        raise ParameterError(f"{uri}: give gs://bucket/...")
    return bucket, name


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def list_inputs(source: str) -> list[str]:
    """The images ``source`` names, sorted (see the module docstring)."""
    if source.startswith("gs://"):
        bucket, prefix = split_uri(source)
        if is_image(prefix):
            return [source]
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        names = (b.name for b in storage_client().list_blobs(bucket, prefix=prefix))
        found = sorted(f"gs://{bucket}/{n}" for n in names if is_image(n))
    elif any(c in source for c in "*?["):
        found = sorted(p for p in glob.glob(source, recursive=True) if is_image(p))
    elif Path(source).is_dir():
        found = sorted(str(p) for p in Path(source).rglob("*") if p.is_file() and is_image(p.name))
    elif Path(source).is_file() and source.endswith(".txt"):
        lines = Path(source).read_text().splitlines()
        found = list(  # in the list's order, each once
            dict.fromkeys(s for line in lines if (s := line.strip()) and not s.startswith("#"))
        )
    elif Path(source).is_file():
        found = [source]
    else:
        raise ParameterError(
            f"{source}: not a folder, a glob, a gs:// prefix, a .txt list nor an image file"
        )
    if not found:
        raise ParameterError(f"{source}: no images there ({', '.join(IMAGE_SUFFIXES)})")
    return found


def read_input(name: str) -> bytes:
    """The bytes of a local path or a ``gs://`` object (blocking)."""
    if name.startswith("gs://"):
        bucket, path = split_uri(name)
        data: bytes = storage_client().bucket(bucket).blob(path).download_as_bytes()
        return data
    return Path(name).read_bytes()


def write_output(name: str, data: bytes, content_type: str) -> None:
    """Write a local file (its folder made) or a ``gs://`` object (blocking)."""
    if name.startswith("gs://"):
        bucket, path = split_uri(name)
        storage_client().bucket(bucket).blob(path).upload_from_string(data, content_type)
        return
    os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
    Path(name).write_bytes(data)


def read_lines(name: str) -> Iterable[bytes]:
    """The lines of a local file or a ``gs://`` object; nothing when it does not exist."""
    if name.startswith("gs://"):
        bucket, path = split_uri(name)
        blob = storage_client().bucket(bucket).get_blob(path)
        return blob.download_as_bytes().splitlines() if blob is not None else []
    try:
        return Path(name).read_bytes().splitlines()
    except FileNotFoundError:
        return []

"""Inputs read from Cloud Storage: ``{"gcsUri": "gs://bucket/object"}`` in a JSON body.

Everything the server serves is public through ``/invoke/*``, so a URI input is a request for
the server to read on the caller's behalf, with the server's credentials. The rules, checked
before anything is read:

* only ``gs://`` (no ``http://``: no server-side request forgery; no ``file://`` nor paths: no
  local file reads);
* only the buckets named in ``SERVE_ALLOWED_BUCKETS`` (none by default: every URI is refused,
  with a 400 that says how to allow a bucket);
* the objects' sizes, from their metadata, before their bytes: a request's images together at
  most ``SERVE_MAX_BODY_BYTES`` (what a body may carry), a video at most ``SERVE_MAX_OBJECT_BYTES``
  (a video read here is not bound by the endpoint's 10 MB per request, only by the stream
  limits and the endpoint's inference timeout);
* then the same pixel and frame limits as bytes.

The unmodified ``google-cloud-storage`` client does the reading (Application Default
Credentials; ``STORAGE_EMULATOR_HOST`` points it at a local GCS API server). Blocking: called
from worker threads, a few at a time (:data:`READERS`), apart from the threads that decode.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.errors import (
    ObjectForbidden,
    ObjectNotFound,
    PayloadTooLarge,
    StorageUnavailable,
    UriNotAllowed,
)

GS_URI = re.compile(r"gs://(?P<bucket>[a-z0-9][a-z0-9._-]{1,220}[a-z0-9])/(?P<name>[^\r\n]+)")
TIMEOUT_S = 120.0
READERS = 8  # Cloud Storage reads at once, per process (their own threads: a slow bucket
# never holds up decoding)
_client: Any = None


def check_uri(uri: str, allowed: frozenset[str], where: str) -> tuple[str, str]:
    """``(bucket, object name)`` of a URI the server may read, else :class:`UriNotAllowed`."""
    match = GS_URI.fullmatch(uri)
    if match is None:
        scheme = uri.split("://", 1)[0] + "://" if "://" in uri else "a path"
        raise UriNotAllowed(
            f"{where}: {uri[:200]!r} is not a gs://bucket/object URI ({scheme} is not read: "
            "send the bytes instead)",
            field=where,
        )
    bucket = match["bucket"]
    if bucket not in allowed:
        hint = (
            "this server reads no bucket"
            if not allowed
            else f"it reads only {', '.join(sorted(allowed))}"
        )
        raise UriNotAllowed(
            f"{where}: bucket {bucket!r} is not allowed ({hint}); start the server with "
            f"SERVE_ALLOWED_BUCKETS={','.join(sorted(allowed | {bucket}))} to read it",
            field=where,
        )
    return bucket, match["name"]


def _storage() -> Any:
    global _client
    if _client is None:
        from google.cloud import storage

        _client = storage.Client()
    return _client


@contextlib.contextmanager
def _answers(uri: str, doing: str) -> Iterator[None]:
    """Cloud Storage's errors as the request's: missing 404, refused 403, down 502."""
    from google.api_core import exceptions
    from google.auth.exceptions import GoogleAuthError

    try:
        yield
    except exceptions.NotFound:
        raise ObjectNotFound(f"{uri}: no such object (or no such bucket)") from None
    except exceptions.Forbidden as exc:
        raise ObjectForbidden(f"{uri}: the server may not read it ({exc.message})") from None
    except (exceptions.GoogleAPIError, GoogleAuthError, OSError) as exc:
        raise StorageUnavailable(f"{uri}: {doing} failed: {exc}") from None


def stat(uri: str, allowed: frozenset[str], where: str, limit: int, what: str) -> Any:
    """The metadata of an object the server may read, its size checked against ``limit``."""
    bucket, name = check_uri(uri, allowed, where)
    with _answers(uri, "reading its metadata"):
        blob = _storage().bucket(bucket).get_blob(name, timeout=TIMEOUT_S)
    if blob is None:
        raise ObjectNotFound(f"{uri}: no such object (or no such bucket)")
    if blob.size is not None and blob.size > limit:
        raise PayloadTooLarge(f"{uri} is {blob.size} bytes; {what} may be at most {limit}")
    return blob


def read_bytes(uri: str, blob: Any, limit: int) -> bytes:
    """The bytes of an object :func:`stat` checked (at most ``limit``)."""
    with _answers(uri, "reading it"):
        data: bytes = blob.download_as_bytes(timeout=TIMEOUT_S)
    if len(data) > limit:  # replaced by a larger one since its metadata was read
        raise PayloadTooLarge(f"{uri} is {len(data)} bytes; an image may be at most {limit}")
    return data


def read_file(uri: str, allowed: frozenset[str], limit: int, path: Path) -> None:
    """A video object, downloaded to ``path`` (which the caller made and removes), at most
    ``limit`` bytes."""
    blob = stat(uri, allowed, "video", limit, "a video")
    with _answers(uri, "reading it"):
        blob.download_to_filename(str(path), timeout=TIMEOUT_S)
    if path.stat().st_size > limit:
        raise PayloadTooLarge(f"{uri} is over {limit} bytes; a video may be at most {limit}")

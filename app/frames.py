"""``/stream`` frame sources: a video file or a run of image frames, checked before streaming.

A request is refused (4xx) here, before any event is sent, when its video cannot be decoded, has
no frame, or is over the limits (frames, duration, resolution). What passes is a
:class:`FrameSource` that yields frames one at a time, so memory stays bounded by one frame.

Videos are decoded by OpenCV's FFmpeg backend from a temporary file that is unlinked as soon as
FFmpeg has opened it: whatever happens next, no file is left behind. FFmpeg may only read that
file, with a video demuxer (:func:`app.offline.configure_ffmpeg`, set when the app is created), so
a playlist or concat script sent as a "video" cannot make it open other files or URLs.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np

from app.config import Settings
from app.errors import InvalidImage, InvalidVideo, PayloadTooLarge
from app.images import image_label, open_image, oriented_size, to_bgr
from app.inputs import Inputs
from client.schema import VIDEO_SUFFIXES, StreamParameters
from client.schema import sniff as sniff_media_type


def sniff(data: bytes) -> str | None:
    """The container a video's first bytes announce, as the file suffix FFmpeg knows it by
    (the contract's one table: :func:`client.schema.sniff`), or None."""
    return VIDEO_SUFFIXES.get(sniff_media_type(data))


class FrameSource(Protocol):
    """Frames to run, one at a time, in worker threads.

    ``read`` and ``close`` may be called from different threads: ``close`` waits for a read in
    flight, is idempotent, and every ``read`` after it returns None.
    """

    @property
    def kind(self) -> Literal["video", "frames"]: ...
    @property
    def fps(self) -> float | None: ...
    @property
    def frames(self) -> int | None:
        """Frames that will be processed, when known."""

    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...

    def read(self) -> tuple[int, float | None, np.ndarray] | None:
        """The next frame to process: (source index, timestamp in ms, BGR image), or None."""
        ...

    def close(self) -> None: ...


def _planned(total: int | None, stride: int, max_frames: int | None) -> int | None:
    if total is None:
        return None
    planned = math.ceil(total / stride)
    return min(planned, max_frames) if max_frames else planned


class VideoSource:
    """A video decoded by FFmpeg (through OpenCV), every ``vid_stride``-th frame."""

    kind: Literal["video"] = "video"

    def __init__(
        self, data: bytes | Path, params: StreamParameters, settings: Settings, what: str = "body"
    ) -> None:
        """``data``: the video's bytes, or a temporary file holding it (this source owns it:
        it is unlinked once FFmpeg has opened it)."""
        if isinstance(data, Path):
            with data.open("rb") as fh:
                head = fh.read(16)
        else:
            head = data[:16]
        suffix = sniff(head)
        if suffix is None:
            if isinstance(data, Path):
                data.unlink(missing_ok=True)
            raise InvalidVideo(
                f"the {what} is not a video this server reads: expected MP4/QuickTime, "
                "WebM/Matroska, AVI or animated GIF"
            )
        self._lock = threading.Lock()
        self._closed = False
        if isinstance(data, Path):
            path = str(data.with_name(data.name + suffix))  # FFmpeg goes by the suffix too
            data.rename(path)
        else:
            fd, path = tempfile.mkstemp(
                prefix="vertex-yolo-stream-", suffix=suffix, dir=settings.tmp_dir
            )
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        try:
            self._cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        finally:
            Path(path).unlink(missing_ok=True)
        try:
            self._check(params, settings)
        except Exception:
            self.close()
            raise

    def _check(self, params: StreamParameters, settings: Settings) -> None:
        cap = self._cap
        if not cap.isOpened():
            raise InvalidVideo("the video cannot be decoded (corrupt, truncated or unknown codec)")
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = round(fps, 3) if fps and fps > 0 and math.isfinite(fps) else None
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self._total = count if count > 0 else None
        self._stride = params.vid_stride
        self._max_frames = params.max_frames
        self._limit = settings.stream_max_frames
        self._max_ms = settings.stream_max_seconds * 1000
        pixels = self.width * self.height
        if pixels > settings.stream_max_pixels:
            raise PayloadTooLarge(
                f"the video is {self.width}x{self.height} = {pixels} pixels a frame; the limit is "
                f"{settings.stream_max_pixels}"
            )
        if self._total and self.fps and self._total / self.fps > settings.stream_max_seconds:
            raise PayloadTooLarge(
                f"the video lasts {self._total / self.fps:.1f} s; the limit is "
                f"{settings.stream_max_seconds:g} s"
            )
        self.frames = _planned(self._total, self._stride, self._max_frames)
        if self.frames is not None and self.frames > self._limit:
            raise PayloadTooLarge(
                f"the video has {self._total} frames, {self.frames} to process with "
                f"vid_stride={self._stride}; the limit is {self._limit} (set max_frames or "
                "vid_stride)"
            )
        ok, frame = cap.read()
        if not ok or frame is None:
            raise InvalidVideo("the video has no decodable frame")
        self._first: np.ndarray | None = frame
        self._index = 0  # index of the next frame to return
        self._done = 0

    def read(self) -> tuple[int, float | None, np.ndarray] | None:
        with self._lock:
            return None if self._closed else self._read()

    def _read(self) -> tuple[int, float | None, np.ndarray] | None:
        if self._max_frames is not None and self._done >= self._max_frames:
            return None
        if self._first is not None:
            frame, self._first = self._first, None
        else:
            for _ in range(self._stride - 1):  # skipped frames are grabbed, not decoded
                if not self._cap.grab():
                    return None
                self._index += 1
            ok, frame = self._cap.read()
            if not ok:
                return None
        index, self._index = self._index, self._index + 1
        timestamp = round(self._cap.get(cv2.CAP_PROP_POS_MSEC), 3)
        if self._done >= self._limit or timestamp > self._max_ms:
            raise PayloadTooLarge(
                f"the video goes on past the limits ({self._limit} frames, "
                f"{self._max_ms / 1000:g} s); stopped at frame {index}"
            )
        self._done += 1
        return index, timestamp, frame

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._cap.release()


class ImageFramesSource:
    """A run of still images (multipart parts or base64 JSON), decoded one at a time."""

    kind: Literal["frames"] = "frames"
    fps: float | None = None

    def __init__(self, blobs: list[bytes], params: StreamParameters, settings: Settings) -> None:
        indices = range(0, len(blobs), params.vid_stride)
        if params.max_frames is not None:
            indices = indices[: params.max_frames]
        self._labels = [image_label(i, len(blobs), "frame") for i in indices]
        self._indices = list(indices)
        self._blobs = [blobs[i] for i in self._indices]
        # Headers only: format, pixels and size are checked for every frame before streaming.
        self._images = [
            open_image(blobs[i], label, settings.max_pixels)
            for i, label in zip(self._indices, self._labels, strict=True)
        ]
        sizes = {oriented_size(im) for im in self._images}
        if len(sizes) > 1:
            raise InvalidImage(
                f"the frames differ in size ({', '.join(f'{w}x{h}' for w, h in sorted(sizes))}); "
                "a stream's frames must all have the same size"
            )
        ((self.width, self.height),) = sizes
        if self.width * self.height > settings.stream_max_pixels:
            raise PayloadTooLarge(
                f"the frames are {self.width}x{self.height} pixels; the limit is "
                f"{settings.stream_max_pixels}"
            )
        self.frames = len(self._images)
        self._next = 0
        self._lock = threading.Lock()

    def read(self) -> tuple[int, float | None, np.ndarray] | None:
        with self._lock:
            return self._read()

    def _read(self) -> tuple[int, float | None, np.ndarray] | None:
        if self._next >= len(self._images):
            return None
        k, self._next = self._next, self._next + 1
        image, self._images[k] = self._images[k], None  # type: ignore[call-overload]
        blob, self._blobs[k] = self._blobs[k], b""
        return self._indices[k], None, to_bgr(blob, image, self._labels[k]).bgr

    def close(self) -> None:
        with self._lock:
            self._images = []
            self._blobs = []


def open_source(inputs: Inputs, params: StreamParameters, settings: Settings) -> FrameSource:
    """Open and validate the request's frames (blocking: run it in a worker thread)."""
    if inputs.video_path is not None:
        return VideoSource(inputs.video_path, params, settings, f"object {inputs.video_uri}")
    if inputs.video is not None:
        return VideoSource(inputs.video, params, settings)
    return ImageFramesSource(inputs.blobs, params, settings)

"""Video sources, decoded here with OpenCV (FFmpeg): a file of any size, a camera, a live URL.

* :func:`open_source` opens one and says what it is (:class:`SourceInfo`): a camera index
  (``0``) or a URL with a streaming scheme (RTSP, RTMP, HTTP(S) MJPEG or HLS, UDP, SRT) is
  **live**; a path is a file. Frames are read one at a time (:meth:`Capture.read`): a 2-hour
  video never sits in memory.
* :func:`prepare` scales a frame down to what the model uses (its input size on the long side;
  never up) and JPEG-encodes it, keeping the scale to map boxes back to source pixels.

OpenCV is the ``video`` extra (``pip install "vertex-yolo[video]"``); without it the first use
says so (:func:`cv2_module`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from client.errors import ParameterError
from client.media import native_stderr_silenced

if TYPE_CHECKING:
    import numpy

LIVE_SCHEMES = {"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt"}
JPEG_QUALITY = 90  # frames sent to the model (already scaled to its input size)
SOURCE_QUALITY = 95  # frames kept to draw at source resolution (--save)
#: A video source: a file path, a camera index, or a live URL.
VideoSource = str | int | os.PathLike[str]


def cv2_module() -> Any:
    """OpenCV, or a :class:`ParameterError` naming the extra that installs it."""
    try:
        import cv2
    except ImportError:
        raise ParameterError(
            'decoding video needs OpenCV: pip install "vertex-yolo[video]" (opencv-python-headless)'
        ) from None
    return cv2


@dataclass(frozen=True)
class SourceInfo:
    """What a source is: its name, whether it is live, and what OpenCV reports of it."""

    name: str
    live: bool
    fps: float | None  # None when the source does not say
    frames: int | None  # None for a live source (or a file that does not say)
    width: int
    height: int


def describe(source: VideoSource) -> tuple[Any, bool, str]:
    """What to give ``cv2.VideoCapture`` for ``source``, whether it is live, and its name."""
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return int(source), True, f"camera {int(source)}"
    text = os.fspath(source)
    scheme = urlsplit(text).scheme.lower()
    if scheme in LIVE_SCHEMES:
        return text, True, text
    if scheme and len(scheme) > 1 and scheme != "file":
        raise ParameterError(
            f"{text}: {scheme}:// is not a video source here (files, camera indices, and "
            f"{', '.join(sorted(LIVE_SCHEMES))} URLs)"
        )
    path = Path(text.removeprefix("file://"))
    if not path.is_file():
        raise ParameterError(f"{text}: no such video file")
    return str(path), False, text


class Capture:
    """An open source, read frame by frame (by one thread at a time)."""

    def __init__(self, source: VideoSource, *, live: bool | None = None) -> None:
        cv2 = cv2_module()
        target, is_live, name = describe(source)
        with native_stderr_silenced():  # not a video: our one line, not FFmpeg's warnings
            if isinstance(target, int):
                self._cap = cv2.VideoCapture(target)
            else:
                self._cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG)
        if not self._cap.isOpened():
            self._cap.release()
            raise ParameterError(f"{name}: OpenCV cannot open it as a video")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.info = SourceInfo(
            name=name,
            live=is_live if live is None else live,
            fps=fps if 0 < fps < 1000 else None,
            frames=int(count) if not is_live and 0 < count < 2**40 else None,
            width=int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
        self._pos_msec = cv2.CAP_PROP_POS_MSEC
        self._opened = time.monotonic()
        self.index = -1  # of the last frame read

    def read(self) -> tuple[int, float | None, numpy.ndarray] | None:
        """The next frame: ``(index, timestamp_ms, BGR image)``, or None at the end.

        The timestamp is the frame's position in a file (from its index and frame rate, else
        the container's), or the time since the source was opened for a live one.
        """
        ok, frame = self._cap.read()
        if not ok or frame is None:
            return None
        self.index += 1
        if self.info.live:
            stamp: float | None = (time.monotonic() - self._opened) * 1000
        elif self.info.fps:
            stamp = self.index * 1000 / self.info.fps
        else:
            stamp = self._cap.get(self._pos_msec) or None
        return self.index, stamp, frame

    def close(self) -> None:
        self._cap.release()


def open_source(source: VideoSource, *, live: bool | None = None) -> Capture:
    """Open ``source`` (see :func:`describe`); ``live`` overrides what its kind says."""
    return Capture(source, live=live)


@dataclass(frozen=True)
class Prepared:
    """A frame as sent: JPEG bytes at the model's size, and the factors back to source pixels."""

    jpeg: bytes
    scale_x: float
    scale_y: float


def prepare(frame: numpy.ndarray, imgsz: int, quality: int = JPEG_QUALITY) -> Prepared:
    """Scale ``frame`` (BGR) down so its long side is ``imgsz`` (never up), JPEG-encode it."""
    cv2 = cv2_module()
    height, width = frame.shape[:2]
    factor = imgsz / max(height, width)
    if factor < 1:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    sent_h, sent_w = frame.shape[:2]
    return Prepared(encode_jpeg(frame, quality), width / sent_w, height / sent_h)


def encode_jpeg(frame: numpy.ndarray, quality: int = SOURCE_QUALITY) -> bytes:
    cv2 = cv2_module()
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ParameterError(f"cannot JPEG-encode a frame of shape {frame.shape}")
    return buf.tobytes()

"""A/B inputs: the images of a folder, or the frames of a video."""

from __future__ import annotations

from pathlib import Path

from client import errors
from client.media import native_stderr_silenced

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def image_files(folder: str | Path) -> list[Path]:
    """The images (jpg, jpeg, png, webp, bmp) in a folder, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise errors.ParameterError(f"{folder} is not a folder")
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise errors.ParameterError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return found


def video_frames(path: str | Path, *, every: int = 1, max_frames: int | None = None) -> list[bytes]:
    """Every ``every``-th frame of a video (up to ``max_frames``), as JPEG (q95) bytes."""
    if every < 1 or (max_frames is not None and max_frames < 1):
        raise errors.ParameterError("every and max_frames must be at least 1")
    try:
        import cv2
    except ImportError:
        raise errors.ParameterError(
            "reading a video needs OpenCV (cv2): pip install 'vertex-yolo[server]' or "
            "opencv-python-headless"
        ) from None
    if not Path(path).is_file():
        raise errors.ParameterError(f"cannot read {path}: no such file")
    with native_stderr_silenced():  # FFmpeg's own warnings for a file that is not a video
        capture = cv2.VideoCapture(str(path))
    frames: list[bytes] = []
    try:
        index = 0
        while max_frames is None or len(frames) < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            if index % every == 0:
                frames.append(
                    cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
                )
            index += 1
    finally:
        capture.release()
    if not frames:
        raise errors.ParameterError(f"no frames could be read from {path}")
    return frames

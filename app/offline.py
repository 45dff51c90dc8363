"""Make the libraries the server runs safe with no network and no surprises.

Each reads its switches when it is first imported or first opens something, so
:func:`configure_ultralytics` and :func:`configure_ffmpeg` run when the app is created, before
any of them is used:

* Ultralytics: offline, no auto-install, its own config dir, and a real TrueType font so that
  plotting never asks GitHub for ``Arial.ttf``. OpenVINO (for ``*_openvino_model`` exports)
  would send usage telemetry from a thread of its own at import: its telemetry package is made
  unimportable, so OpenVINO falls back to its built-in no-op stub.
* FFmpeg (through OpenCV, for ``/stream`` videos): it may read only the file it was given, with a
  video demuxer, and keeps quiet.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
# Forced, not defaulted: without the whitelists an HLS playlist sent as a "video" makes FFmpeg
# open the local files (or URLs) it names. OpenCV reads this at every capture open.
FFMPEG_CAPTURE_OPTIONS = (
    "protocol_whitelist;file|format_whitelist;mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,gif"
)


def default_config_dir() -> Path:
    """Where Ultralytics keeps its settings when ``YOLO_CONFIG_DIR`` is not set."""
    return Path(tempfile.gettempdir()) / "vertex-yolo" / "ultralytics"


def _bundled_font() -> Path | None:
    """DejaVuSans from matplotlib (an Ultralytics dependency), found without importing it."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    font = Path(next(iter(spec.submodule_search_locations))) / "mpl-data/fonts/ttf/DejaVuSans.ttf"
    return font if font.is_file() else None


def configure_ultralytics(config_dir: str | os.PathLike[str] | None = None) -> Path:
    """Set the Ultralytics switches for offline, side-effect-free use; return its config dir.

    Values already present in the environment win, so an operator can still override them.
    """
    directory = Path(config_dir or os.environ.get("YOLO_CONFIG_DIR") or default_config_dir())
    os.environ.setdefault("YOLO_CONFIG_DIR", str(directory))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "false")
    # None in sys.modules makes `import openvino_telemetry` fail: OpenVINO then uses its stub.
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    # Ultralytics appends its own "Ultralytics" folder to YOLO_CONFIG_DIR.
    user_dir = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
    user_dir.mkdir(parents=True, exist_ok=True)
    font = _bundled_font()
    if font is not None:
        for name in FONT_NAMES:
            target = user_dir / name
            if not target.exists():
                shutil.copyfile(font, target)
    return user_dir


def disable_sync() -> None:
    """Turn off Ultralytics' analytics and crash reporting (call after importing it)."""
    from ultralytics.utils import SETTINGS

    if SETTINGS.get("sync"):
        SETTINGS.update({"sync": False})


def configure_ffmpeg() -> None:
    """FFmpeg may read only the file OpenCV opens, with a video demuxer; FFmpeg's and OpenCV's
    own messages (on stderr, not through the server's logs) are quiet."""
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = FFMPEG_CAPTURE_OPTIONS
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # read if OpenCV is not imported yet
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

"""Make Ultralytics safe to run with no network.

Ultralytics reads its switches from the environment when it is first imported, so
:func:`configure_ultralytics` must run before ``import ultralytics``. It also gives
Ultralytics a real TrueType font so that plotting never asks GitHub for ``Arial.ttf``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")


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

"""Whole videos and live sources through ``/stream`` windows (``Client.video``,
``python -m client video``): see :mod:`client.video.engine`.

Decoding needs OpenCV, the ``video`` extra (``pip install "vertex-yolo[video]"``); importing this
package does not.
"""

from client.video.engine import VideoFrame, VideoOptions, VideoRun, VideoStats
from client.video.runs import AsyncVideoStream, VideoStream
from client.video.source import SourceInfo, VideoSource, open_source

__all__ = [
    "AsyncVideoStream",
    "SourceInfo",
    "VideoFrame",
    "VideoOptions",
    "VideoRun",
    "VideoSource",
    "VideoStats",
    "VideoStream",
    "open_source",
]

"""What a step measures while it holds: probe calls pinned to A and to B, and untargeted calls.

The calls cycle over the probe images, each image sent pinned to A, pinned to B, then once
untargeted (routed by the split being held), on ``concurrency`` threads. A and B see the same
image at about the same moment, so their latencies compare under the same load, and their
answers pair up for agreement. Errors are counted, not raised (:func:`client.ab.calls.timed`).
"""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from client.ab.calls import Outcome, timed
from client.ab.measures import needs
from client.media import ImageInput

PINNED_A, PINNED_B, UNTARGETED = range(3)
POLL_S = 0.1  # how often the hold checks for an interruption


def demo_scenes(n: int = 6, seed: int = 17) -> list[bytes]:
    """``n`` PNG scenes like the demo models' data (circles, squares and triangles on a noisy
    background), drawn here with numpy and Pillow (the ``tools`` extra) and the same for a
    seed: the probe set when none is given."""
    np = needs("numpy")
    image_module = needs("PIL.Image")
    draw_module = needs("PIL.ImageDraw")
    rng = np.random.default_rng(seed)
    scenes: list[bytes] = []
    for i in range(n):
        width, height = ((160, 160), (240, 200), (320, 320))[i % 3]
        base = rng.integers(40, 216, size=3)
        noise = rng.normal(0, 8, size=(height, width, 3))
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        image = image_module.fromarray(pixels)
        draw = draw_module.Draw(image)
        taken: list[tuple[float, float, float]] = []
        for _ in range(int(rng.integers(1, 4))):
            size = float(rng.uniform(0.18, 0.3)) * min(width, height)
            for _attempt in range(50):
                cx = float(rng.uniform(size, width - size))
                cy = float(rng.uniform(size, height - size))
                if all(
                    abs(cx - x) > (size + s) / 1.5 or abs(cy - y) > (size + s) / 1.5
                    for x, y, s in taken
                ):
                    break
            else:
                continue
            taken.append((cx, cy, size))
            colour = tuple(int(c) for c in (255 - base + rng.integers(-30, 30, 3)).clip(0, 255))
            half = size / 2
            kind = int(rng.integers(0, 3))
            if kind == 0:
                draw.ellipse((cx - half, cy - half, cx + half, cy + half), fill=colour)
            elif kind == 1:
                draw.rectangle((cx - half, cy - half, cx + half, cy + half), fill=colour)
            else:
                draw.polygon(
                    [(cx, cy - half), (cx + half, cy + half * 0.75), (cx - half, cy + half * 0.75)],
                    fill=colour,
                )
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        scenes.append(buffer.getvalue())
    return scenes


@dataclass
class Held:
    """What the calls of one hold gave: per (cycle, image), A's and B's outcomes; the
    untargeted outcomes; whether it was cut short by an interruption."""

    pinned: dict[tuple[int, int], list[Outcome | None]] = field(default_factory=dict)
    untargeted: list[Outcome] = field(default_factory=list)
    interrupted: bool = False
    # the probe threads; after an interruption some may still be in a call
    threads: list[threading.Thread] = field(default_factory=list)

    def finish(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s in all) for calls still in flight after an interruption,
        so none is sent after the run has returned or raised."""
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def side(self, which: int) -> list[Outcome]:
        return [o for pair in self.pinned.values() if (o := pair[which]) is not None]

    def pairs(self) -> list[tuple[Outcome, Outcome]]:
        """The images both A and B have answered (or failed), in the order sent."""
        return [
            (a, b) for _, (a, b) in sorted(self.pinned.items()) if a is not None and b is not None
        ]


def hold(
    method: Callable[..., Any],
    probes: Sequence[ImageInput],
    a: str,
    b: str,
    *,
    hold_s: float,
    concurrency: int,
    stop: threading.Event,
    params: dict[str, Any],
) -> Held:
    """Run the probe calls for ``hold_s`` seconds, then until one image has been answered by
    both A and B, then let the calls in flight finish (they are measured too). Returns early,
    with ``interrupted`` set, once ``stop`` is set (checked every :data:`POLL_S` s); calls
    then still in flight finish on their daemon threads, not counted (:meth:`Held.finish`
    waits for them)."""
    held = Held()
    lock = threading.Lock()
    tasks = itertools.count()
    deadline = time.monotonic() + hold_s
    complete = 0  # images answered by both
    failures: list[BaseException] = []

    def worker() -> None:
        nonlocal complete
        while True:
            with lock:
                if stop.is_set() or failures or (time.monotonic() >= deadline and complete):
                    return
                k = next(tasks)
            cycle, image, kind = k // (3 * len(probes)), (k // 3) % len(probes), k % 3
            pinned = {PINNED_A: a, PINNED_B: b}.get(kind)
            try:
                outcome = timed(partial(method, probes[image], deployed_model_id=pinned, **params))
            except BaseException as exc:  # a ParameterError, or a bug: stop every worker
                with lock:
                    failures.append(exc)
                return
            with lock:
                if stop.is_set():
                    return
                if kind == UNTARGETED:
                    held.untargeted.append(outcome)
                    continue
                pair = held.pinned.setdefault((cycle, image), [None, None])
                pair[kind] = outcome
                if pair[0] is not None and pair[1] is not None:
                    complete += 1

    threads = [
        threading.Thread(target=worker, name=f"rollout-{i}", daemon=True)
        for i in range(concurrency)
    ]
    held.threads = threads
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(POLL_S)
            if stop.is_set():
                with lock:  # a write under way ends; the workers see stop before another
                    held.interrupted = True
                return held
    if failures:
        raise failures[0]
    held.interrupted = stop.is_set()
    return held

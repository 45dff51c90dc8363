"""Running the A/B calls: a thread pool of ``concurrency`` workers over a
:class:`~client.Client`, each call timed; API, connection and timeout errors counted by kind, not
raised (a :class:`~client.errors.ParameterError` still stops the run)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

import msgspec

from client import errors


class Outcome(msgspec.Struct):
    """One call's result, or the kind of error it raised; its latency (retries included)."""

    result: Any = None
    error: str | None = None
    latency_ms: float = 0.0


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`run_all`: ``outcomes`` holds each call's outcome, ``None`` for a
    call that had not finished; ``elapsed`` the wall time until then."""

    def __init__(self, outcomes: list[Outcome | None], elapsed: float) -> None:
        super().__init__()
        self.outcomes = outcomes
        self.elapsed = elapsed


def error_kind(exc: errors.VertexYoloError) -> str:
    if isinstance(exc, errors.APIError):
        return f"{exc.status} {exc.code}" if exc.code else str(exc.status)
    return type(exc).__name__


def timed(call: Callable[[], Any]) -> Outcome:
    start = time.perf_counter()
    try:
        result = call()
    except errors.ParameterError:
        raise
    except errors.VertexYoloError as exc:
        return Outcome(error=error_kind(exc), latency_ms=(time.perf_counter() - start) * 1e3)
    return Outcome(result=result, latency_ms=(time.perf_counter() - start) * 1e3)


def run_all(
    calls: Sequence[Callable[[], Any]], concurrency: int, progress: bool, what: str
) -> tuple[list[Outcome], float]:
    """Run the calls on ``concurrency`` threads: their outcomes in order, and the wall time.
    Ctrl-C raises :class:`Interrupted` with the outcomes so far (calls under way are left to
    finish on their threads; those not started are cancelled)."""
    from tqdm import tqdm

    outcomes: list[Outcome | None] = [None] * len(calls)
    start = time.perf_counter()
    # Not `with pool`: its exit waits for the calls under way, and Ctrl-C must not.
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ab")
    with tqdm(
        total=len(calls), unit="call", desc=what, disable=not progress, file=sys.stderr
    ) as bar:
        futures = {pool.submit(timed, call): i for i, call in enumerate(calls)}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION, timeout=0.5)
                for future in done:
                    outcomes[futures[future]] = future.result()  # a ParameterError stops all
                bar.update(len(done))
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            for future, i in futures.items():  # finished, not yet collected
                if future.done() and not future.cancelled() and future.exception() is None:
                    outcomes[i] = future.result()
            raise Interrupted(outcomes, time.perf_counter() - start) from None
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    pool.shutdown()
    return [o for o in outcomes if o is not None], time.perf_counter() - start

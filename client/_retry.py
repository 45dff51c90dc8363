"""Retry policy: exponential backoff with jitter on 429, 503 and connection failures, bounded,
honouring ``Retry-After``. Built on tenacity (sync and asyncio flavours of one policy)."""

from __future__ import annotations

import datetime
import email.utils
import time

import msgspec
import tenacity

from client import errors


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How a failed call is retried.

    Attributes:
        attempts: tries in all (1 = never retry).
        backoff: the first wait in seconds; each later wait doubles, plus up to ``backoff``
            of random jitter.
        max_backoff: the longest single wait. A server whose ``Retry-After`` asks for longer
            is not retried: its error is raised at once (with ``retry_after`` set).
    """

    attempts: int = 3
    backoff: float = 0.5
    max_backoff: float = 20.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff < 0 or self.max_backoff < 0:
            raise errors.ParameterError(f"invalid retry policy {self!r}")


NO_RETRIES = RetryPolicy(attempts=1)


def retryable(exc: BaseException, policy: RetryPolicy | None = None) -> bool:
    """429, 503 and failures to connect are worth another try; timeouts are not (the server
    may still be working on the first one), nor a ``Retry-After`` beyond the policy's
    ``max_backoff``."""
    if isinstance(exc, errors.ConnectionError):
        return exc.retryable
    if not isinstance(exc, errors.RateLimitError | errors.UnavailableError):
        return False
    wait = exc.retry_after
    return policy is None or wait is None or wait <= policy.max_backoff


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (in UTC, as RFC 9110 says,
    also when the date carries no zone: the asctime form, or ``-0000``)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - time.time())


class _Wait(tenacity.wait.wait_base):
    """``Retry-After`` when the server gave one, else exponential backoff with jitter."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.backoff = tenacity.wait_exponential_jitter(
            initial=policy.backoff, max=policy.max_backoff, jitter=policy.backoff
        )

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, errors.APIError) and exc.retry_after is not None:
            return min(exc.retry_after, self.policy.max_backoff)
        return self.backoff(retry_state)


def _options(policy: RetryPolicy) -> dict:
    return {
        "stop": tenacity.stop_after_attempt(policy.attempts),
        "wait": _Wait(policy),
        "retry": tenacity.retry_if_exception(lambda exc: retryable(exc, policy)),
        "reraise": True,
    }


def retrying(policy: RetryPolicy) -> tenacity.Retrying:
    return tenacity.Retrying(**_options(policy))


def async_retrying(policy: RetryPolicy) -> tenacity.AsyncRetrying:
    return tenacity.AsyncRetrying(**_options(policy))

"""What each of the server's processes (app/processes.py) sees of the others: one small page of
memory they share, mapped by the supervisor before it forks them.

Per process: its demand (requests and stream frames admitted and not yet answered), whether one
of its model calls is *wide* (runs more than one torch thread: app/threads.py), and whether its
models are ready; and one flag for the whole server: every process was ready once.
"""

from __future__ import annotations

import mmap

#: the page's bytes: one "server started" flag, then per process its demand (requests admitted and
#: not yet answered), its wide flag and its ready flag
_STARTED, _FIELDS = 0, 3


class Siblings:
    """The server's processes as one of them sees them, through a page they share (a
    ``bytearray`` of its own when it is alone). Each process writes only its own bytes; a read of
    the others' may be a moment old, which costs at most one call run with a thread count the
    moment no longer wants, never a wrong answer."""

    def __init__(self, count: int = 1, index: int = 0, page: mmap.mmap | None = None) -> None:
        self.count, self.index = count, index
        self._page: mmap.mmap | bytearray = page if page is not None else bytearray(size(count))

    def _at(self, index: int, field: int) -> int:
        return 1 + index * _FIELDS + field

    def _others(self, field: int) -> list[int]:
        page = self._page
        return [page[self._at(i, field)] for i in range(self.count) if i != self.index]

    def busy_elsewhere(self, workers: int) -> int:
        """Model calls the other processes run or are about to: each has ``workers`` inference
        threads, busy with the requests (and stream frames) it admitted."""
        return sum(min(demand, workers) for demand in self._others(0))

    def wide_elsewhere(self) -> bool:
        """Whether a call in another process runs with more than one torch thread."""
        return any(self._others(1))

    def set_demand(self, admitted: int) -> None:
        """This process has ``admitted`` requests and stream frames not yet answered."""
        self._page[self._at(self.index, 0)] = min(admitted, 255)

    def claim_wide(self) -> bool:
        """Mark this process as running the wide call, unless another does (then ``False``). Two
        processes that claim at the same moment mostly both back off (two one-thread calls); with
        no memory barrier between the write and the read, both may also go wide, for one call."""
        self._page[self._at(self.index, 1)] = 1
        if self.wide_elsewhere():
            self._page[self._at(self.index, 1)] = 0
            return False
        return True

    def release_wide(self) -> None:
        self._page[self._at(self.index, 1)] = 0

    def mark_ready(self) -> None:
        """This process's models are loaded; the server is ready once every process's are."""
        self._page[self._at(self.index, 2)] = 1
        if all(self._page[self._at(i, 2)] for i in range(self.count)):
            self._page[_STARTED] = 1

    def all_ready(self) -> bool:
        """Every process has loaded its models (once true, stays true)."""
        if not self._page[_STARTED] and all(self._page[self._at(i, 2)] for i in range(self.count)):
            self._page[_STARTED] = 1
        return bool(self._page[_STARTED])

    def reset(self, index: int) -> None:
        """Forget process ``index``'s calls and readiness (it ended; the supervisor's call)."""
        for field in range(_FIELDS):
            self._page[self._at(index, field)] = 0


def size(count: int) -> int:
    return 1 + count * _FIELDS


_current = Siblings()


def current() -> Siblings:
    """This process's view of the server's processes (a lone one unless
    :func:`app.processes.supervise` forked it)."""
    return _current


def join(view: Siblings) -> None:
    """Make ``view`` this process's (a child of the supervisor, before it serves)."""
    global _current
    _current = view

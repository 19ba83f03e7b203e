"""A limit on calls in flight shared by every thread and event loop that uses one model
(an ``asyncio.Semaphore`` belongs to one loop): slots go to the longest waiter of any kind."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass


@dataclass(slots=True)
class _Waiter:
    """A caller waiting for a slot; ``wake`` (called under the lock) hands it one."""

    wake: Callable[[], None]
    granted: bool = False
    gone: bool = False


class CallLimit:
    """At most ``limit`` calls in flight (None: any number); others wait in arrival order."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"a concurrency limit must be at least 1, got {limit}")
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()

    def _enter(self, wake: Callable[[], None]) -> _Waiter | None:
        with self._lock:
            if self.limit is None or self.in_flight < self.limit:
                self.in_flight += 1
                return None
            waiter = _Waiter(wake)
            self._waiters.append(waiter)
            return waiter

    def _release(self) -> None:
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if waiter.gone:
                    continue
                try:
                    waiter.wake()
                except RuntimeError:  # its event loop is closed: it will never run
                    continue
                waiter.granted = True
                return
            self.in_flight -= 1

    def _abandon(self, waiter: _Waiter) -> None:
        """A cancelled waiter passes on a slot it was handed meanwhile."""
        with self._lock:
            waiter.gone = True
            granted = waiter.granted
        if granted:
            self._release()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Holds a slot for a blocking call."""
        event = threading.Event()
        if self._enter(event.set) is not None:
            event.wait()
        try:
            yield
        finally:
            self._release()

    @contextlib.asynccontextmanager
    async def ahold(self) -> AsyncIterator[None]:
        """Holds a slot for an awaited call; cancelling the wait gives up the place."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def grant() -> None:
            if not ready.done():
                ready.set_result(None)

        def wake() -> None:  # from whichever thread releases the slot
            loop.call_soon_threadsafe(grant)

        waiter = self._enter(wake)
        if waiter is not None:
            try:
                await ready
            except BaseException:
                self._abandon(waiter)
                raise
        try:
            yield
        finally:
            self._release()

"""One writer per thread: a run's lease on its thread, a redis-py `Lock` on ``P:{t}:lease``
whose token names the process, renewed every third of its TTL. The run's writes carry the
token and are fenced by it (`Ops._write`): once the lease lapsed or was taken, none lands."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
from langchain_core.runnables import RunnableConfig

from pacore_graph.checkpoints.errors import ThreadLostError
from pacore_graph.checkpoints.layout import LEASE, LEASE_CONFIG_KEY, Layout
from pacore_graph.checkpoints.ops import Batch, Op
from pacore_graph.errors import LeaseLostError, ThreadBusyError

# The savers arrive as Any: saver.py imports this module, and no import goes back.
DEFAULT_LEASE_TTL = 10.0
"""Seconds a thread's lease outlives its last renewal: how long a dead run's thread stays busy."""

Wait = bool | float
"""Whether to wait for a busy thread: False not at all, True as long as it takes, or seconds."""

log = logging.getLogger(__name__)


@dataclass
class ThreadLease:
    """A run's hold on one thread: its ``token`` (``PID@HOST/RANDOM``, unique to this hold)
    names the holder in busy errors; ``lost`` is set once a renewal found it lapsed or taken."""

    thread_id: str
    token: str
    lost: bool = False

    def bind(self, config: RunnableConfig) -> RunnableConfig:
        """``config`` with the token, so the saver fences the run's writes by it."""
        configurable = {**config.get("configurable", {}), LEASE_CONFIG_KEY: self.token}
        return {**config, "configurable": configurable}


def busy(layout: Layout, thread_id: str, wait: Wait) -> Op:
    """The error for a thread another run holds (after waiting ``wait`` seconds, if any)."""
    key = layout.key(thread_id, LEASE)
    token, ttl_ms = yield Batch([("GET", key), ("PTTL", key)])
    who = token.decode() if token else None
    pid, at, host = (who or "").rpartition("/")[0].partition("@")
    if at and pid.isdigit():  # a token of ours (PID@HOST/RANDOM); another program's as it is
        who = f"pid {pid} on {host}"
    still = f" after waiting {float(wait):.1f} s" if wait is not False else ""
    # A live run renews its lease; one that died leaves it to lapse (say when).
    lapses = f", lapsing in {ttl_ms / 1000:.1f} s unless renewed" if ttl_ms > 0 else ""
    return ThreadBusyError(
        f"thread {thread_id} is busy{still}: another run holds it ({who or 'it just ended'}"
        f"{lapses}); wait for it (pacore solve --wait, wait=True) or use another thread id",
        thread_id,
        who,
    )


def _start(saver: Any, thread_id: str) -> tuple[ThreadLease, Any, float]:
    if saver.lease_ttl is None:
        raise ValueError("leases are off on this saver (lease_ttl=None)")
    token = f"{os.getpid()}@{socket.gethostname()}/{uuid.uuid4().hex}"
    lease = ThreadLease(str(thread_id), token)
    key = saver.ops.layout.key(lease.thread_id, LEASE)
    lock = saver.client.lock(key, timeout=saver.lease_ttl, thread_local=False)
    return lease, lock, saver.lease_ttl / 3


@contextlib.contextmanager
def hold(
    saver: Any, thread_id: str, wait: Wait, on_wait: Callable[[str], None] | None
) -> Iterator[ThreadLease]:
    """`RedisSaver.lease`: renewed by a thread; a lost lease fails the run's next write."""
    lease, lock, every = _start(saver, thread_id)
    layout, timeout = saver.ops.layout, None if wait is True else float(wait)
    with saver._errors():
        if not lock.acquire(blocking=False, token=lease.token):
            error = saver._run(busy(layout, lease.thread_id, False))
            if wait is False:
                raise error
            if on_wait is not None:
                on_wait(error.holder or "nobody")
            if not lock.acquire(blocking_timeout=timeout, token=lease.token):
                raise saver._run(busy(layout, lease.thread_id, wait))
    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(every):
            try:
                lock.reacquire()
            except redis.exceptions.LockNotOwnedError:
                lease.lost = True
                return
            except redis.exceptions.RedisError as exc:  # the run's own writes report it
                log.debug("lease renewal of thread %s failed: %s", lease.thread_id, exc)

    keeper = threading.Thread(target=keep, name=f"lease {lease.thread_id}", daemon=True)
    keeper.start()
    try:
        yield lease
    finally:
        stop.set()
        keeper.join()
        with contextlib.suppress(redis.exceptions.RedisError):
            lock.release()


@contextlib.asynccontextmanager
async def ahold(
    saver: Any, thread_id: str, wait: Wait, on_wait: Callable[[str], None] | None
) -> AsyncIterator[ThreadLease]:
    """`AsyncRedisSaver.alease`: renewed by a task, which cancels the block when it finds
    the lease lost; the block then raises `LeaseLostError` (or `ThreadLostError`)."""
    lease, lock, every = _start(saver, thread_id)
    layout, timeout = saver.ops.layout, None if wait is True else float(wait)
    with saver._errors():
        if not await lock.acquire(blocking=False, token=lease.token):
            error = await saver._arun(busy(layout, lease.thread_id, False))
            if wait is False:
                raise error
            if on_wait is not None:
                on_wait(error.holder or "nobody")
            if not await lock.acquire(blocking_timeout=timeout, token=lease.token):
                raise await saver._arun(busy(layout, lease.thread_id, wait))
    owner = asyncio.current_task()
    inside = True
    stopped: list[Exception] = []  # why the keeper cancelled the block

    async def keep() -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await lock.reacquire()
            except redis.exceptions.LockNotOwnedError:
                break
            except redis.exceptions.RedisError as exc:  # the run's own writes report it
                log.debug("lease renewal of thread %s failed: %s", lease.thread_id, exc)
        lease.lost = True
        thread = lease.thread_id  # lapsed or taken, or gone with the whole thread?
        try:
            found = await saver.client.exists(layout.key(thread, LEASE), *layout.keys(thread))
        except redis.exceptions.RedisError:
            found = True
        why = LeaseLostError(thread) if found else ThreadLostError(thread)
        # Only while the block runs (the keeper runs when it awaits, so the cancel lands inside).
        if inside and owner is not None:
            stopped.append(why)
            owner.cancel()

    keeper = asyncio.create_task(keep())
    try:
        yield lease
    except BaseException as exc:
        if not stopped:
            raise
        # The cancellation was ours: the run stopped because it lost the thread.
        raise stopped[0] from (None if isinstance(exc, asyncio.CancelledError) else exc)
    finally:
        inside = False
        if stopped and owner is not None:
            owner.uncancel()
        keeper.cancel()  # not awaited: a cancellation of our own must not be swallowed
        with contextlib.suppress(redis.exceptions.RedisError):
            await lock.release()

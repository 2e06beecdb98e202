"""Run one call bounded by a timeout, at the least cost the calling thread allows.

predict's timeout used to hand every call to a ThreadPoolExecutor and wait on its Future;
py-spy on kiln's workers under load put that hand-off at about a tenth of the worker's time,
more than the model's own predict (bench/README.md, "Predict-path profile"). Now:

- In the main thread (gunicorn's sync worker, the test client) the call runs in place and a
  SIGALRM interval timer bounds it: two system calls (setitimer, on and off). The timer
  raises `Timeout` inside the call, which stops it; a C call that never returns to Python is
  left to gunicorn's timeout.
- In other threads (gthread workers) the call goes to a small pool of daemon threads through
  a SimpleQueue, and the caller waits on a plain lock with a timeout: no Future, Condition
  or work item per call. A call that overruns keeps its thread and the caller answers on time.
- Under gevent (kiln's gevent worker patches `threading`, so every thread is a greenlet) the
  call runs in place, in a copy of the context, under a `gevent.Timeout`, which stops it at
  its next wait once the time has passed, as the sync worker's timer does: handing it to a
  pool greenlet and back cost two switches through the hub, 15 µs against 3.5 µs a call,
  alone on an idle loop. A call that never waits (a CPU-bound model) cannot be stopped; it
  counts as timed out when it returns or fails late. Code that catches the timer and waits
  on is not stopped again (nor under the sync worker's timer); the batcher, which serves
  every caller, keeps its pool for that reason (runtime/serving/batching.py).
"""
from __future__ import annotations

import contextvars
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

#: Threads a pool may hold: calls that overran their timeout keep theirs until they return.
MAX_THREADS = 32


__all__ = ["FutureTimeout", "Pool", "Timeout", "call_bounded"]


class Timeout(BaseException):
    """Raised inside the call by the interval timer once its timeout has passed.

    A BaseException, so that a user's `except Exception` cannot swallow it.
    """


def _on_alarm(signum: int, frame: Any) -> None:
    raise Timeout


_armed = False  # whether our timer runs now (a bounded call inside a bounded call)


def _can_use_alarm() -> bool:
    """True in the main thread when SIGALRM and the real interval timer are ours to use."""
    if _armed or threading.current_thread() is not threading.main_thread():
        return False
    handler = signal.getsignal(signal.SIGALRM)
    if handler is not _on_alarm:
        if handler not in (signal.SIG_DFL, None):
            return False  # someone else's SIGALRM (the user's code, a library): leave it alone
        if signal.getitimer(signal.ITIMER_REAL) != (0.0, 0.0):
            return False  # a timer someone set with the default action: not ours to replace
        signal.signal(signal.SIGALRM, _on_alarm)
    return True


def _with_alarm(func: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
    global _armed
    _armed = True
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            return func(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except Timeout:
        # Also when the timer fired just as the call returned: it took the whole timeout.
        raise FutureTimeout from None
    finally:
        _armed = False  # a one-shot timer that fired is spent: nothing is left armed


class _Call:
    """One call handed to a pool thread; `done` is released once it has returned or raised."""

    __slots__ = ("args", "done", "error", "func", "result")

    def __init__(self, func: Callable[..., Any], args: tuple[Any, ...]):
        self.func = func
        self.args = args
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Lock()
        self.done.acquire()


class Pool:
    """Daemon threads that run calls for waiting callers; a new one starts when none is idle."""

    def __init__(self, name: str = "kiln-predict"):
        self.name = name
        self._queue: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0

    def call(self, func: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
        """func(*args) in a pool thread, in the caller's context; FutureTimeout after `timeout`."""
        # The copied context carries the request id to the user's logging calls.
        item = _Call(contextvars.copy_context().run, (func, *args))
        with self._lock:
            if self._idle:
                self._idle -= 1  # that thread is now promised to this call
            elif self._threads < MAX_THREADS:
                self._threads += 1
                threading.Thread(target=self._serve, name=f"{self.name}-{self._threads}",
                                 daemon=True).start()
        self._queue.put(item)
        if not item.done.acquire(timeout=timeout):
            raise FutureTimeout
        if item.error is not None:
            raise item.error
        return item.result

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            try:
                item.result = item.func(*item.args)
            except BaseException as err:  # noqa: BLE001 - handed to the caller, who raises it
                item.error = err
            finally:
                with self._lock:
                    self._idle += 1
                item.done.release()


def call_bounded(pool: Pool, func: Callable[..., Any], args: tuple[Any, ...],
                 timeout: float) -> Any:
    """func(*args), raising concurrent.futures.TimeoutError once `timeout` seconds have passed."""
    if _under_gevent():
        return _with_gevent_timeout(func, args, timeout)
    if _can_use_alarm():
        return _with_alarm(func, args, timeout)
    return pool.call(func, args, timeout)


def _under_gevent() -> bool:
    """True where gevent has patched `threading` (kiln's gevent worker): threads are greenlets."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def _with_gevent_timeout(func: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
    import gevent

    began = time.perf_counter()
    timer = gevent.Timeout(timeout)
    timer.start()
    try:
        # In a copy of the context, as a pool thread runs it: what the call sets in context
        # variables stays with the call, not with the greenlet's next request.
        result = contextvars.copy_context().run(func, *args)
    except gevent.Timeout as err:
        if err is not timer:
            raise  # the user's own gevent.Timeout
        raise FutureTimeout from None
    except Exception:
        if time.perf_counter() - began > timeout:  # failed once past its time: stopped, or
            raise FutureTimeout from None  # the timer caught and turned into another error
        raise
    finally:
        timer.close()
    if time.perf_counter() - began > timeout:  # it never waited, so the timer could not fire
        raise FutureTimeout
    return result

"""runtime.serving.timeouts: a call bounded by a timeout, in the main thread (timer) and in others (pool)."""
from __future__ import annotations

import contextvars
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from runtime.serving.timeouts import FutureTimeout, Pool, call_bounded

where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="unset")


def in_main(func: Callable[[], Any]) -> Any:
    return func()


def in_thread(func: Callable[[], Any]) -> Any:
    """Run func in a fresh thread, as a gthread worker's request thread would; return or raise."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = func()
        except BaseException as err:  # noqa: BLE001 - re-raised in the test's thread
            out["error"] = err

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    if "error" in out:
        raise out["error"]
    return out["value"]


def sleep_then(value: Any, seconds: float) -> Any:
    time.sleep(seconds)
    return value


def swallow_everything(seconds: float) -> str:
    try:
        time.sleep(seconds)
    except Exception:  # noqa: BLE001 - what a careless predict does
        return "swallowed"
    return "slept"


def boom() -> None:
    raise ValueError("boom")


RUNNERS = pytest.mark.parametrize("runner", [in_main, in_thread], ids=["main-thread", "thread"])


@RUNNERS
@pytest.mark.parametrize(("func", "args", "expected"), [
    (sleep_then, (7, 0), 7),
    (sleep_then, ("late but in time", 0.05), "late but in time"),
    (lambda: where.get(), (), "request-1"),  # the caller's context reaches the call
])
def test_returns(runner, func, args, expected):
    pool = Pool()

    def call() -> Any:
        where.set("request-1")
        return call_bounded(pool, func, args, 5)

    assert runner(call) == expected


@RUNNERS
def test_errors_reach_the_caller(runner):
    pool = Pool()
    with pytest.raises(ValueError, match="boom"):
        runner(lambda: call_bounded(pool, boom, (), 5))


@RUNNERS
@pytest.mark.parametrize("func", [sleep_then, swallow_everything], ids=["sleep", "swallower"])
def test_times_out_on_time_and_serves_on(runner, func):
    pool = Pool()
    args = (1, 3) if func is sleep_then else (3,)
    started = time.monotonic()
    with pytest.raises(FutureTimeout):
        runner(lambda: call_bounded(pool, func, args, 0.2))
    assert time.monotonic() - started < 2
    assert runner(lambda: call_bounded(pool, sleep_then, (2, 0), 5)) == 2


def test_someone_elses_alarm_handler_is_left_alone():
    def theirs(signum: int, frame: Any) -> None:
        raise AssertionError("not ours to fire")

    previous = signal.signal(signal.SIGALRM, theirs)
    try:
        pool = Pool()
        assert call_bounded(pool, lambda: threading.current_thread().name, (), 5) == "kiln-predict-1"
        assert signal.getsignal(signal.SIGALRM) is theirs
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_pool_reuses_idle_threads():
    pool = Pool("reuse")
    names = {in_thread(lambda: call_bounded(pool, lambda: threading.current_thread().name, (), 5))
             for _ in range(5)}
    assert names == {"reuse-1"}

"""runtime.serving.timeouts: a call bounded by a timeout, in the main thread (timer) and in others (pool)."""
from __future__ import annotations

import contextvars
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
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


class Stuck:
    """A call that waits for `release` (an hour at most): only a timeout can end it sooner.

    `ended` is set once it has returned or been stopped; `outcome` says how it ended.
    """

    def __init__(self, swallows: bool):
        self.swallows = swallows
        self.release = threading.Event()
        self.ended = threading.Event()
        self.outcome = "stopped"

    def __call__(self) -> str:
        try:
            if self.swallows:
                self._wait_swallowing()
            else:
                self._wait()
        finally:
            self.ended.set()
        return self.outcome

    def _wait(self) -> None:
        self.outcome = "released" if self.release.wait(3600) else "an hour passed"

    def _wait_swallowing(self) -> None:
        try:
            self._wait()
        except Exception:  # noqa: BLE001 - what a careless predict does
            self.outcome = "swallowed"


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
@pytest.mark.parametrize("swallows", [False, True], ids=["plain", "swallower"])
def test_times_out_while_the_call_runs_and_serves_on(runner, swallows):
    pool = Pool()
    stuck = Stuck(swallows)
    with pytest.raises(FutureTimeout):
        runner(lambda: call_bounded(pool, stuck, (), 0.2))
    assert not stuck.release.is_set()  # the timeout came first: nothing let the call go
    if runner is in_main:
        # The timer stopped the call inside, and `except Exception` could not keep it going.
        assert (stuck.ended.is_set(), stuck.outcome) == (True, "stopped")
    else:
        # The caller answered while the call still runs in its pool thread, which it keeps.
        assert not stuck.ended.is_set()
    assert runner(lambda: call_bounded(pool, sleep_then, (2, 0), 5)) == 2
    stuck.release.set()
    assert stuck.ended.wait(30)
    assert stuck.outcome == ("stopped" if runner is in_main else "released")


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


GEVENT_CHECK = r'''
from gevent import monkey
monkey.patch_all()
import contextvars, threading, time
import gevent
from runtime.serving.batching import Batcher
from runtime.serving.timeouts import FutureTimeout, Pool, call_bounded

pool = Pool("t")

def raises(kind, func, *args):
    """The exception of KIND that func(*args) raises; an AssertionError if it raises none."""
    try:
        func(*args)
    except kind as err:
        return err
    raise AssertionError(f"{func.__name__} did not raise {kind.__name__}")
stopped = []

def slow():
    try:
        time.sleep(30)  # patched: a wait the timer can stop
    finally:
        stopped.append(True)

def busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:  # never waits: the timer cannot fire
        pass
    return "late"

def own_timeout():
    with gevent.Timeout(0.01):
        time.sleep(5)

request = contextvars.ContextVar("request", default="unset")
where = contextvars.ContextVar("where", default="unset")

def sets_and_reads():
    request.set("set by the call")
    return "seen " + where.get()

def swallows_then_fails():
    try:
        time.sleep(30)
    except BaseException:
        pass
    raise RuntimeError("the timer, caught and turned into another error")

def fails_at_once():
    raise RuntimeError("its own error")

def batch_call(items):
    if "slow" in items:
        end = time.monotonic() + 3
        while time.monotonic() < end:  # swallows every stop, and waits on
            try:
                time.sleep(0.05)
            except BaseException:
                pass
    return items

def check_batcher():
    batcher = Batcher(batch_call, 4, 0.0, 0.3)
    began = time.monotonic()
    slow = gevent.spawn(batcher.submit, "slow")
    gevent.sleep(0.1)
    assert batcher.submit("next") == "next"  # the batcher went on without the slow batch
    raises(FutureTimeout, slow.get)
    assert time.monotonic() - began < 2.5, time.monotonic() - began

def check():
    assert call_bounded(pool, lambda x: x + 1, (1,), 5) == 2
    where.set("the request's id")
    assert call_bounded(pool, sets_and_reads, (), 5) == "seen the request's id"
    assert request.get() == "unset"  # what the call set stayed with it
    raises(FutureTimeout, call_bounded, pool, swallows_then_fails, (), 0.2)
    err = raises(RuntimeError, call_bounded, pool, fails_at_once, (), 5)
    assert str(err) == "its own error"
    began = time.monotonic()
    raises(FutureTimeout, call_bounded, pool, slow, (), 0.2)
    assert time.monotonic() - began < 10 and stopped == [True]
    raises(FutureTimeout, call_bounded, pool, busy, (0.3,), 0.1)
    raises(gevent.Timeout, call_bounded, pool, own_timeout, (), 5)
    assert threading.active_count() == 1, threading.enumerate()  # no pool thread was started
    check_batcher()
    print("ok")

gevent.spawn(check).get()
'''


def test_under_gevent_the_call_runs_in_place_and_its_timer_stops_it() -> None:
    """kiln's gevent worker patches threading: a bounded call runs in the request's greenlet,
    in a copy of its context, under a gevent.Timeout, not in a pool greenlet (two switches
    through the hub saved); the batcher keeps its pool, so that a batch whose code swallows
    the timer still answers 504 on time while the next batch is served."""
    pytest.importorskip("gevent")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", GEVENT_CHECK], check=False, cwd=root,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(root), "PATH": ""})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr

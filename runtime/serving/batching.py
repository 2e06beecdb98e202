"""Adaptive batching: requests that arrive together in a worker share one predict_batch call.

With service.yaml `predict.batch: {max_size: N, max_latency_ms: T}`, each predict request's
thread hands its item to the worker's `Batcher` and waits on a lock of its own. One batcher
thread per worker (started on the first request, so after gunicorn forks) takes the first
waiting item, gathers the others that come within T milliseconds, up to N, and makes one call
(it waits only while other predict requests have begun in the worker and not yet submitted:
on one connection a request never waits)
under predict.timeout (runtime/serving/timeouts.py's pool, so an overrun call keeps its own
thread and the batcher goes on). A call that raises is split in halves until only the
failing items fail; a batch past predict.timeout fails all its items with FutureTimeout.

The request threads are gthread's (the default worker when batching is on,
runtime/serving/settings.py): each request keeps its own id, log line and capture record.
"""
from __future__ import annotations

import contextvars
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from runtime.serving.timeouts import FutureTimeout, Pool

#: observe(batch size, each item's wait in seconds): the metrics' hook.
Observer = Callable[[int, Sequence[float]], None]


def batch_settings(config: Any) -> tuple[int, float] | None:
    """(max_size, max_latency in seconds) when service.yaml turns batching on, else None.

    A `predict.batch` section written at all has both keys: runtime/config.py fills in its
    defaults (SECTION_DEFAULTS), so they are stated once.
    """
    size = config.get("predict.batch.max_size")
    if size is None:
        return None
    return int(size), float(config.get("predict.batch.max_latency_ms")) / 1000.0


class _Item:
    """One request's input, waiting for its batch; `done` is released once it has an answer."""

    __slots__ = ("done", "error", "given", "result", "since")

    def __init__(self, given: Any):
        self.given = given
        self.since = time.perf_counter()
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Lock()
        self.done.acquire()

    def answer(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.release()


class Batcher:
    """Gathers items from request threads into calls of `call(items) -> answers`, one per item.

    `call` gets a list of items and answers a sequence of the same length (checked here).
    """

    def __init__(self, call: Callable[[list[Any]], Sequence[Any]], max_size: int,
                 max_latency: float, timeout: float):
        self.call = call
        self.max_size = max(1, max_size)
        self.max_latency = max(0.0, max_latency)
        self.timeout = timeout
        self.observers: list[Observer] = []
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._pool = Pool("kiln-batch")
        self._lock = threading.Lock()
        self._pid: int | None = None  # the process whose batcher thread runs
        #: Predict requests this worker has begun and not yet submitted: worth waiting for.
        self.arriving = 0
        self._count = threading.Lock()

    def arrive(self) -> None:
        """A predict request has begun: a batch may wait for it (up to max_latency)."""
        with self._count:
            self.arriving += 1

    def arrived(self) -> None:
        """That request has submitted its input, or ended before it could."""
        with self._count:
            self.arriving -= 1

    def queued(self) -> int:
        """Items waiting for the batcher to take them into a batch."""
        return self._queue.qsize()

    def submit(self, given: Any) -> Any:
        """GIVEN's answer from its batch; raises what its part of the batch raised.

        FutureTimeout when its batch took longer than predict.timeout.
        """
        self._ensure_thread()
        item = _Item(given)
        self._queue.put(item)
        # The batcher answers every item by its deadline; the margin covers a stalled batcher.
        if not item.done.acquire(timeout=self.max_latency + 2 * self.timeout + 5):
            raise FutureTimeout
        if item.error is not None:
            raise item.error
        return item.result

    def _ensure_thread(self) -> None:
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._lock:
            if self._pid != pid:  # a forked child inherits no threads: start this one's
                # An empty context: the batcher serves many requests, none of their ids.
                thread = threading.Thread(target=contextvars.Context().run, args=(self._serve,),
                                          name="kiln-batcher", daemon=True)
                thread.start()
                self._pid = pid

    def _gather(self) -> list[_Item]:
        first = self._queue.get()
        batch = [first]
        deadline = time.perf_counter() + self.max_latency
        while len(batch) < self.max_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            left = deadline - time.perf_counter()
            # Nothing more is on its way (one connection, say): waiting would only add latency.
            if left <= 0 or self.arriving <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _serve(self) -> None:
        while True:
            batch = self._gather()
            started = time.perf_counter()
            waits = [started - item.since for item in batch]
            for observe in self.observers:
                try:
                    observe(len(batch), waits)
                except Exception:  # noqa: BLE001, S112 - metrics never stop predictions
                    continue
            self._run(batch, started + self.timeout)

    def _run(self, batch: list[_Item], deadline: float) -> None:
        """Answer every item of BATCH; split it where its call raises."""
        left = deadline - time.perf_counter()
        if left <= 0:
            for item in batch:
                item.answer(error=FutureTimeout())
            return
        try:
            # Always in the pool, under gevent too: a batch that overruns (even one whose code
            # swallows a timer) keeps its thread while the batcher answers 504 and goes on.
            answers = self._pool.call(self._checked, ([i.given for i in batch],), left)
        except FutureTimeout as err:
            for item in batch:
                item.answer(error=err)
            return
        except BaseException as err:  # noqa: BLE001 - handed to the item's caller
            if len(batch) == 1:
                batch[0].answer(error=err)
                return
            middle = len(batch) // 2
            self._run(batch[:middle], deadline)
            self._run(batch[middle:], deadline)
            return
        for item, answer in zip(batch, answers):
            item.answer(answer)

    def _checked(self, items: list[Any]) -> Sequence[Any]:
        return call_batch(self.call, items)


def item_of(args: Sequence[Any]) -> Any:
    """What predict_batch gets for a request that predict would get as predict(*ARGS)."""
    return args[0] if len(args) == 1 else tuple(args)


def rows_call(predict_batch: Callable[[list[Any]], Any]) -> Callable[[list[Any]], list[Any]]:
    """A batch call for the model template: each item is one request's rows (predict's args).

    All rows go to the model's vectorised method at once, and each request gets its slice:
    the same answer as predict(*rows) alone would give.
    """
    def call(items: list[Any]) -> list[Any]:
        rows = [row for rows in items for row in rows]
        answer = predict_batch(rows)
        if len(answer) != len(rows):
            raise ValueError(f"the model answered {len(answer)} predictions for {len(rows)} rows")
        out, at = [], 0
        for given in items:
            out.append(answer[at:at + len(given)])
            at += len(given)
        return out

    return call


def call_batch(call: Callable[[list[Any]], Any], items: list[Any]) -> Sequence[Any]:
    """`call(items)`, checked to answer one prediction per item (a generator is read out)."""
    answers = call(items)
    if isinstance(answers, Iterator):
        answers = list(answers)
    if len(answers) != len(items):
        raise ValueError(f"predict_batch answered {len(answers)} predictions for "
                         f"{len(items)} inputs; it must answer one per input")
    return answers  # type: ignore[no-any-return]

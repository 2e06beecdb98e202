"""`kiln batch`: a file of inputs in, the same rows with their predictions out.

The parent process reads the input chunk by chunk and hands the chunks to worker processes
(runtime/jobs/worker.py, started with spawn or forkserver: `load()` runs in each worker,
never here) through a bounded queue, so at most a few chunks are in memory whatever the
file's size. Their output comes back as bytes and is appended in input order. Every second
or so the output is fsync'd and a small progress file beside it (OUTPUT.kiln-batch.json:
the input's identity, the chunks and bytes done) is replaced atomically; `--resume` cuts the
output back to the bytes it records and goes on from the next chunk, so an interrupted run
(Ctrl-C, a killed machine) ends with each row exactly once, in order.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import queue
import signal
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from runtime.config import load_service
from runtime.errors import KilnError
from runtime.jobs import files
from runtime.jobs.worker import SERVICE_VAR, Job
from runtime.jobs.worker import main as worker_main

STATE_SUFFIX = ".kiln-batch.json"
STATE_VERSION = 1
DEFAULT_CHUNK = 1000
#: Seconds between two checkpoints (fsync of the output, then the progress file).
CHECKPOINT_SECONDS = 1.0
#: Seconds between two progress lines when stderr is not a terminal.
PLAIN_PROGRESS_SECONDS = 5.0


class BatchError(KilnError):
    """Raised when a batch cannot run: bad options, a service that does not load, a worker
    that died, an interrupted run (which --resume continues)."""


def parse_shard(text: str | None) -> tuple[int, int]:
    """`I/N` as (I, N), 0 <= I < N; None is the whole input (0, 1)."""
    if not text:
        return 0, 1
    index, _, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if n < 1 or not 0 <= i < n:
        raise BatchError(f"--shard {text!r}: give I/N with 0 <= I < N, e.g. 0/4 (Kubernetes: "
                         f"$JOB_COMPLETION_INDEX/<completions>)")
    return i, n


@dataclass
class BatchOptions:
    """How one `kiln batch` run goes."""

    input: Path
    output: Path
    workers: int | None = None
    chunk: int = DEFAULT_CHUNK
    resume: bool = False
    fail_fast: bool = False
    shard: str | None = None
    #: Where the progress bar and the summary go (stderr by default).
    stream: TextIO | None = None
    #: Whether to draw the progress bar in place (default: when the stream is a terminal).
    tty: bool | None = None


@dataclass
class Summary:
    """What a run did: rows written, how many failed, the first failures, time taken."""

    rows: int = 0
    failed: int = 0
    seconds: float = 0.0
    first_failures: list[tuple[int, str]] = field(default_factory=list)
    stopped_early: bool = False
    batch_id: str = ""

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def line(self, output: Path) -> str:
        return (f"kiln batch: {self.rows:,} rows, {self.failed:,} failed, {self.seconds:.1f} s, "
                f"{self.rate:,.0f} rows/s -> {output}")


def state_path(output: Path) -> Path:
    return output.with_name(output.name + STATE_SUFFIX)


def identity(options: BatchOptions, shard: tuple[int, int]) -> dict[str, Any]:
    """What a progress file must match to be resumed: the same input and the same chunking."""
    info = options.input.stat()
    return {"input": str(options.input.resolve()), "size": info.st_size,
            "mtime_ns": info.st_mtime_ns, "chunk": options.chunk, "shard": list(shard),
            "output_kind": files.kind_of(options.output)}


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Replace the progress file atomically and durably."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as file:
        json.dump(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def read_state(path: Path, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The progress file of an earlier run of the same job, or None when there is none."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise BatchError(f"{path}: unreadable progress file ({err}); delete it, or run "
                         f"without --resume to start over") from err
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise BatchError(f"{path}: not a kiln batch progress file; run without --resume")
    if state.get("job") != expected:
        raise BatchError(f"{path}: made for another input, --chunk or --shard "
                         f"({state.get('job')}); run without --resume to start over")
    return state


class Progress:
    """Rows, rows/s and ETA: a bar redrawn in place on a terminal, a plain line now and then
    otherwise."""

    def __init__(self, stream: TextIO, tty: bool, total: int | None):
        self.stream = stream
        self.tty = tty
        self.total = total
        self.began = time.monotonic()
        self.last = 0.0
        self.every = 0.1 if tty else PLAIN_PROGRESS_SECONDS

    def update(self, rows: int, fraction: float | None, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.began
        rate = rows / elapsed if elapsed > 0 else 0.0
        done = min(1.0, rows / self.total) if self.total else fraction
        text = f"{rows:,} rows  {rate:,.0f} rows/s"
        if done is not None and done > 0:
            eta = elapsed * (1 - done) / done
            text += f"  {done:4.0%}  ETA {eta:,.0f} s"
            if self.tty:
                filled = int(done * 20)
                text = f"[{'#' * filled}{'.' * (20 - filled)}] " + text
        if self.tty:
            self.stream.write(f"\r{text}\033[K")
        else:
            self.stream.write(f"kiln batch: {text}\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self.last:
            self.stream.write("\r\033[K")
            self.stream.flush()


def context() -> Any:
    """forkserver where there is one (workers share its imports), else spawn; never fork."""
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if "forkserver" in methods:
        ctx.set_forkserver_preload(["runtime.jobs.preload"])
    return ctx


class Pool:
    """The worker processes and their two queues; tasks bounded, so reading waits on them."""

    def __init__(self, job: Job, workers: int):
        ctx = context()
        self.tasks = ctx.Queue(maxsize=workers)
        self.results = ctx.Queue()
        self.procs = [ctx.Process(target=worker_main, args=(job, self.tasks, self.results),
                                  name=f"kiln-batch-{n}", daemon=True) for n in range(workers)]
        # The forkserver starts with the first worker and imports what the service needs
        # (runtime/jobs/preload.py); it is told which service through its environment.
        os.environ[SERVICE_VAR] = job.root
        try:
            for proc in self.procs:
                proc.start()
        finally:
            del os.environ[SERVICE_VAR]

    def get(self, timeout: float) -> tuple[str, int, Any] | None:
        """The next message of a worker, or None after TIMEOUT; raises if a worker died."""
        try:
            return self.results.get(timeout=timeout)  # type: ignore[no-any-return]
        except queue.Empty:
            for proc in self.procs:
                if proc.exitcode is not None and proc.exitcode != 0:
                    raise BatchError(f"a worker process died (exit code {proc.exitcode}); "
                                     f"out of memory? Continue with --resume") from None
            return None

    def close(self, wait: bool) -> None:
        if wait:
            for _ in self.procs:
                self.tasks.put(None)
            for proc in self.procs:
                proc.join(timeout=30)
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)
        self.tasks.cancel_join_thread()
        self.results.cancel_join_thread()
        self.tasks.close()
        self.results.close()


class Run:
    """One run's bookkeeping in the parent: in-flight chunks, the output, the progress file."""

    def __init__(self, options: BatchOptions, job_identity: dict[str, Any],
                 state: dict[str, Any] | None, output: files.Output, progress: Progress):
        self.options = options
        self.output = output
        self.progress = progress
        self.state_file = state_path(options.output)
        self.state: dict[str, Any] = state or {
            "version": STATE_VERSION, "job": job_identity, "batch_id": uuid.uuid4().hex[:12],
            "chunks": 0, "rows": 0, "failed": 0, "bytes": output.size, "finished": False}
        self.summary = Summary(rows=self.state["rows"], failed=self.state["failed"],
                               batch_id=self.state["batch_id"])
        self.resumed_rows = self.summary.rows
        self.read = 0  # rows handed to the workers by this run
        self.pending: deque[int] = deque()
        self.done: dict[int, tuple[bytes, int, int, list[tuple[int, str]]]] = {}
        self.last_checkpoint = time.monotonic()

    def done_fraction(self, read_fraction: float | None) -> float | None:
        """How much of the whole run is written: rows written against the rows the part of
        the file read so far promises."""
        if not read_fraction or not self.read:
            return None
        return (self.summary.rows - self.resumed_rows) / (self.read / read_fraction)

    def accept(self, message: tuple[str, int, Any]) -> None:
        kind, index, body = message
        if kind == "done":
            self.done[index] = body
        elif kind == "failed":
            raise BatchError(f"the service did not load in a worker: {body}")
        elif kind == "crashed":
            raise BatchError(f"a worker failed on chunk {index}:\n{body}")

    def flush(self) -> bool:
        """Append the finished chunks that are next in order; False once --fail-fast stops."""
        while self.pending and self.pending[0] in self.done:
            index = self.pending.popleft()
            payload, rows, failed, named = self.done.pop(index)
            self.output.write(payload)
            self.summary.rows += rows
            self.summary.failed += failed
            if len(self.summary.first_failures) < 3:
                self.summary.first_failures.extend(named[:3 - len(self.summary.first_failures)])
            self.state.update(chunks=index + 1, rows=self.summary.rows,
                              failed=self.summary.failed)
            if failed and self.options.fail_fast:
                self.checkpoint()
                return False
            if time.monotonic() - self.last_checkpoint >= CHECKPOINT_SECONDS:
                self.checkpoint()
        return True

    def checkpoint(self, finished: bool = False) -> None:
        """Make the output durable, then record how far it goes."""
        self.output.sync()
        self.state.update(bytes=self.output.size, finished=finished)
        write_state(self.state_file, self.state)
        self.last_checkpoint = time.monotonic()


def _chunks(reader: files.Reader, size: int, skip: int, shard: tuple[int, int],
            ) -> Iterator[tuple[int, int, list[Any]]]:
    """(chunk index, number of its first row, rows) of the chunks this run predicts."""
    first = 1
    for index, rows in enumerate(reader.chunks(size)):
        if index >= skip and index % shard[1] == shard[0]:
            yield index, first, rows
        first += len(rows)


def run_batch(directory: Path, options: BatchOptions) -> Summary:
    """Predict every row of options.input with the service in DIRECTORY into options.output."""
    stream = options.stream or sys.stderr
    if options.chunk < 1:
        raise BatchError(f"--chunk {options.chunk}: must be at least 1")
    if options.workers is not None and options.workers < 1:
        raise BatchError(f"--workers {options.workers}: must be at least 1")
    if options.input.resolve() == options.output.resolve():
        raise BatchError(f"--output {options.output} is the input file; name another file")
    shard = parse_shard(options.shard)
    config = load_service(directory)  # a bad service.yaml stops here, before any process
    files.kind_of(options.output)
    reader = files.open_reader(options.input)
    try:
        return _run(directory, config, options, shard, reader, stream)
    finally:
        reader.close()


def _run(directory: Path, config: Any, options: BatchOptions, shard: tuple[int, int],
         reader: files.Reader, stream: TextIO) -> Summary:
    from runtime.serving.settings import available_cpus

    out_kind = files.kind_of(options.output)
    in_kind = files.kind_of(options.input)
    out_columns = reader.columns
    if out_columns is None and isinstance(reader, files.JsonlReader):
        out_columns = reader.first_keys()
    if out_kind != "jsonl" and out_columns is None:
        raise BatchError(f"{options.input}: its first line is not a JSON object, so it names no "
                         f"columns for a {out_kind} output; write JSON Lines instead")
    job_identity = identity(options, shard)
    state_file = state_path(options.output)
    state = read_state(state_file, job_identity) if options.resume else None
    summary_if_done = None
    if state is not None and state.get("finished"):
        summary_if_done = Summary(rows=state["rows"], failed=state["failed"],
                                  batch_id=state["batch_id"])
        stream.write(f"kiln batch: {options.output} is already complete ({state_file})\n")
        return summary_if_done
    schema = None
    if out_kind == "parquet":
        import pyarrow as pa

        schema = (reader.schema if isinstance(reader, files.ParquetReader)  # type: ignore[attr-defined]
                  else pa.schema([pa.field(c, pa.string()) for c in out_columns or []]))
    output = files.Output(options.output, out_kind, out_columns,
                          keep=state["bytes"] if state is not None else None)
    total = reader.total_rows // shard[1] if reader.total_rows is not None else None
    tty = options.tty if options.tty is not None else stream.isatty()
    progress = Progress(stream, tty, total)
    run = Run(options, job_identity, state, output, progress)
    if state is None:
        run.checkpoint()  # a progress file from the start: a run killed at once can resume
    else:
        stream.write(f"kiln batch: resuming after {state['rows']:,} rows ({state_file})\n")
    job = Job(str(Path(directory).resolve()), in_kind, out_kind, reader.columns, out_columns,
              run.state["batch_id"])
    workers = options.workers or available_cpus()
    began = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    pool = Pool(job, workers)
    clean = False
    try:
        _drive(pool, run, reader, options, shard, workers)
        clean = True
    except KeyboardInterrupt:
        # The last checkpoint stands: one taken now could land between a chunk's write and
        # its count. What was written after it is cut on resume.
        raise BatchError(f"interrupted after {run.summary.rows:,} rows; run the same command "
                         f"with --resume to go on") from None
    finally:
        pool.close(wait=clean)
        progress.end()
        signal.signal(signal.SIGTERM, previous)
        if not clean:
            output.close()
    run.summary.seconds = time.monotonic() - began
    if not run.summary.stopped_early:
        output.finish(schema)
        run.checkpoint(finished=True)
    output.close()
    stream.write(run.summary.line(options.output) + "\n")
    stream.flush()
    return run.summary


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _drive(pool: Pool, run: Run, reader: files.Reader, options: BatchOptions,
           shard: tuple[int, int], workers: int) -> None:
    """Feed the chunks to the workers, at most a few in flight, and write them in order."""
    # Every chunk in flight or waiting to be written is held here: that bounds the memory.
    most = 2 * workers + 1
    ready = 0
    while ready < workers:  # each worker has loaded: a failed load stops here, with its reason
        message = pool.get(timeout=0.5)
        if message is None:
            continue
        if message[0] == "ready":
            ready += 1
        else:
            run.accept(message)
    for index, first, rows in _chunks(reader, options.chunk, run.state["chunks"], shard):
        while len(run.pending) >= most:
            _wait(pool, run, reader)
            if not run.flush():
                run.summary.stopped_early = True
                return
        pool.tasks.put((index, first, rows))
        run.pending.append(index)
        run.read += len(rows)
    while run.pending:
        _wait(pool, run, reader)
        if not run.flush():
            run.summary.stopped_early = True
            return


def _wait(pool: Pool, run: Run, reader: files.Reader) -> None:
    message = pool.get(timeout=0.5)
    if message is not None:
        run.accept(message)
    run.progress.update(run.summary.rows, run.done_fraction(reader.fraction()))

"""Hot reload for `kiln serve --reload`: watch the service folder, check edits, HUP gunicorn.

Lifecycle: gunicorn's master calls `Reloader.when_ready` once its socket listens. From then
on a watchdog observer (a polling one with --poll) reports saves in the service folder;
after a short quiet spell the reloader hashes the watched files and, when they changed,
asks a checker process (runtime/dev/reload_check.py) whether the code imports and builds its
app and spec. Good code: SIGHUP to the master, which boots new workers and lets the old
ones finish their requests. Broken code: the workers keep serving the last good code, the
error is logged, and a small state file, named by KILN_RELOAD_STATE, carries it to every
worker's status route as `reload_error` until a good save clears it. The master itself
never imports the user's code, or a HUP would serve stale modules.
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.dev.reload_check import Checker, warm_up
from runtime.errors import KilnError
from runtime.observability.metrics import add_collector

#: Names the workers read the state file from (set by the master before it forks).
STATE_ENV = "KILN_RELOAD_STATE"
#: Quiet time after the last event before a check: editors write a save in a few events.
DEBOUNCE = 0.2
#: How long a file that served may stay deleted before the folder is checked without it.
DELETE_GRACE = 0.5
#: Longest a check of the edited code may take (imports included).
CHECK_TIMEOUT = 60.0
#: How often --poll looks at the files.
POLL_INTERVAL = 0.25
#: Files whose edits reload the service; the rest of the folder (data, captures) does not.
WATCHED_SUFFIXES = (".py", ".yaml", ".yml")
#: The folder of the service's code, watched with all its subfolders; the root itself is
#: watched one level deep (service.yaml), so a .venv or captures folder beside it costs nothing.
CODE_DIR = "app"
#: Event types that are not edits: reads, and metadata-only changes such as `touch`.
IGNORED_EVENTS = ("opened", "closed_no_write")

_log = logging.getLogger("kiln.reload")


def watched(path: str | Path, root: Path) -> bool:
    """Whether an event on PATH can change what ROOT serves (no swap, backup or cache files)."""
    try:
        parts = Path(path).relative_to(root).parts
    except ValueError:
        return False
    if not parts or (len(parts) > 1 and parts[0] != CODE_DIR):
        return False
    name = parts[-1]
    if any(part.startswith(".") or part == "__pycache__" for part in parts):
        return False  # .*.swp, .#lock files, .git, .venv
    if name.endswith("~") or name == "4913":  # backups; vim's probe for a writable folder
        return False
    return name.endswith(WATCHED_SUFFIXES)


def snapshot(root: Path) -> dict[str, str]:
    """A content hash of every watched file under ROOT, by path relative to it."""
    hashes: dict[str, str] = {}
    candidates = list(root.glob("*"))
    code = root / CODE_DIR
    if code.is_dir():
        candidates.extend(code.rglob("*"))
    for path in candidates:
        if not watched(path, root) or not path.is_file():
            continue
        try:
            hashes[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            continue  # deleted while we looked; the next event brings it back
    return hashes


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Paths added, removed or edited between two snapshots, sorted."""
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def write_state(path: Path, error: str | None, reloads: dict[str, int] | None = None) -> None:
    """Record the current reload error and the reloads so far for the workers, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"reload_error": error, "reloads": reloads or {}}))
    os.replace(tmp, path)


def read_reloads(path: Path) -> dict[str, int]:
    """The reloads the master counted, by result (ok, failed)."""
    try:
        counts = json.loads(path.read_text()).get("reloads") or {}
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in counts.items()}


def reload_metrics(path: Path) -> list[Any]:
    """`kiln_reloads_total{result}` from the master's state file, for /metrics."""
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily("kiln_reloads", "Hot reloads of the service's code.",
                                 labels=("result",))
    counts = read_reloads(path)
    for result in ("ok", "failed"):
        family.add_metric([result], counts.get(result, 0))
    return [family]


def read_error(path: Path) -> str | None:
    """The reload error the master recorded, or None."""
    try:
        error: str | None = json.loads(path.read_text()).get("reload_error")
    except (OSError, ValueError):
        return None
    return error


def init_app(app: Any, service: Any) -> None:
    """Under --reload, add `reload_error` (null when the last save was good) to the status route.

    Also serve the reloads the master counted as kiln_reloads_total. Called in each gunicorn
    worker (the post_worker_init hook of `hooks`), where the master's variable is set.
    """
    path = os.environ.get(STATE_ENV)
    if path:
        service.status_hooks.append(lambda: {"reload_error": read_error(Path(path))})
        add_collector(app, lambda: reload_metrics(Path(path)))


def hooks(root: str | Path, *, poll: bool = False) -> dict[str, Callable[..., Any]]:
    """gunicorn server hooks that run a Reloader in the master, for `kiln serve --reload`."""
    try:
        import watchdog  # noqa: F401
    except ImportError as err:
        raise KilnError("kiln serve --reload needs the watchdog package "
                        "(pip install 'watchdog>=6')") from err
    reloader = Reloader(Path(root), poll=poll)
    return {"when_ready": reloader.when_ready, "post_worker_init": _post_worker_init}


def _post_worker_init(worker: Any) -> None:
    """In each worker: the status route reports the last reload's error."""
    init_app(worker.wsgi, worker.wsgi.extensions["kiln"])


class Reloader:
    """Watches ROOT and reloads gunicorn's workers when a save leaves good code behind.

    `reload` is called after a good check (the gunicorn hook sends SIGHUP to the master).
    """

    def __init__(self, root: Path, state: Path | None = None, *, poll: bool = False,
                 reload: Callable[[], None] | None = None,
                 debounce: float = DEBOUNCE, timeout: float = CHECK_TIMEOUT):
        self.root = root.resolve()
        self._own_state = state is None  # made in when_ready, removed by stop()
        self.state = state or Path(tempfile.gettempdir(), "kiln-reload-unset", "state.json")
        self.poll = poll
        self.reload = reload
        self.debounce = debounce
        self.checker = Checker(timeout)
        self.error: str | None = None
        #: Reloads by result, served as kiln_reloads_total by the workers.
        self.counts = {"ok": 0, "failed": 0}
        self.log: Any = _log
        self._cond = threading.Condition()
        self._due: float | None = None
        self._stopping = False
        self._served: dict[str, str] = {}
        self._checked: dict[str, str] = {}
        self._observer: Any = None
        self._code_watch: Any = None
        self._rewatch = False
        self._waited_for_deleted = False
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> bool:
        """Whether an edit waits for its quiet spell to end."""
        with self._cond:
            return self._due is not None

    # gunicorn server hooks, run in the master
    def when_ready(self, server: Any) -> None:
        """Start watching (gunicorn's when_ready hook); workers are forked after this returns."""
        self.log = server.log
        self.reload = self.reload or (lambda: os.kill(server.pid, signal.SIGHUP))
        if self._own_state:
            self.state = Path(tempfile.mkdtemp(prefix="kiln-reload-")) / "state.json"
        os.environ[STATE_ENV] = str(self.state)  # the workers inherit it at fork
        # Two saves of one size within one second would otherwise leave a stale .pyc behind.
        sys.dont_write_bytecode = True
        warm_up()  # the runtime, not the user's code: workers then boot in milliseconds
        self.start()
        # Not the on_exit hook: other features set it, and a dict of hooks keeps only one.
        atexit.register(self._at_exit, os.getpid())

    def _at_exit(self, master: int) -> None:
        if os.getpid() == master:  # forked workers inherit atexit handlers too
            self.stop()

    def mark_served(self) -> None:
        """Record the folder as it is now as the code the workers serve."""
        self._served = self._checked = snapshot(self.root)
        self._set_error(None)

    def start(self) -> None:
        """Take the first snapshot, start the checker, the observer and the debounce thread."""
        self.mark_served()
        self.checker.start()
        try:
            self._observe()
        except OSError as err:  # inotify's watch or instance limit, say
            if self.poll:
                raise
            self.log.warning("kiln reload: file events unavailable (%s); polling instead", err)
            with contextlib.suppress(OSError, RuntimeError):  # a half-started observer
                self._observer.stop()
            self.poll = True
            self._observe()
        self._thread = threading.Thread(target=self._loop, name="kiln-reload", daemon=True)
        self._thread.start()
        kind = "polling" if self.poll else "watching"
        self.log.info("kiln reload: %s %s for edits", kind, self.root)

    def stop(self) -> None:
        """Stop every thread and process the reloader started, and remove the state file."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
        if self._thread is not None:
            self._thread.join(5)
        self.checker.close()
        self.state.unlink(missing_ok=True)
        if self._own_state:
            with contextlib.suppress(OSError):
                self.state.parent.rmdir()

    def _observe(self) -> None:
        self._observer = self._make_observer()
        self._code_watch = None
        self._observer.schedule(_Handler(self), str(self.root), recursive=False)
        self._watch_code()
        self._observer.start()

    def _make_observer(self) -> Any:
        if self.poll:
            from watchdog.observers.polling import PollingObserver

            return PollingObserver(timeout=POLL_INTERVAL)
        from watchdog.observers import Observer

        return Observer()

    def _watch_code(self) -> None:
        """(Re)watch app/ with its subfolders; a deleted and recreated folder needs a new watch."""
        code = self.root / CODE_DIR
        if self._code_watch is not None:
            try:
                self._observer.unschedule(self._code_watch)
            except KeyError:
                pass  # the observer dropped the watch when the folder went away
            self._code_watch = None
        if code.is_dir():
            self._code_watch = self._observer.schedule(_Handler(self), str(code), recursive=True)

    # events, on the observer's thread
    def notify(self, event: Any) -> None:
        """Note an event; a check follows once the folder has been quiet for `debounce`."""
        if event.event_type in IGNORED_EVENTS:
            return
        paths = [str(event.src_path), str(getattr(event, "dest_path", "") or "")]
        code_dir = event.is_directory and any(
            Path(p) == self.root / CODE_DIR for p in paths if p)
        if not code_dir and not any(p and watched(p, self.root) for p in paths):
            return
        with self._cond:
            if code_dir and event.event_type in ("created", "deleted", "moved"):
                self._rewatch = True
            self._due = time.monotonic() + self.debounce
            self._cond.notify_all()

    # the debounce thread
    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._due is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                assert self._due is not None
                left = self._due - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self._due = None
                rewatch, self._rewatch = self._rewatch, False
            try:
                if rewatch:
                    self._watch_code()
                self.apply()
            except Exception:  # the reloader must outlive any one bad event
                self.log.exception("kiln reload: could not handle an edit")

    def apply(self) -> None:
        """Check the folder as it is now, and reload or report; no-op saves do nothing."""
        current = snapshot(self.root)
        if current == self._checked:
            return
        if self._served.keys() - current.keys() and not self._waited_for_deleted:
            # A delete-then-create save may take longer than the quiet spell: give the
            # file a moment to come back before serving the folder without it.
            self._waited_for_deleted = True
            with self._cond:
                self._due = self._due or time.monotonic() + DELETE_GRACE
            return
        self._waited_for_deleted = False
        self._checked = current
        files = ", ".join(changed(self._served, current)) or "nothing"
        if current == self._served:  # back to what the workers run: nothing to reload
            self._set_error(None)
            return
        began = time.monotonic()
        error = self.checker.check(self.root)
        seconds = time.monotonic() - began
        if error is not None:
            self.counts["failed"] += 1
            self._set_error(error)
            self.log.error("kiln reload: %s: the edit does not work, still serving the "
                           "previous code: %s", files, error)
            return
        if snapshot(self.root) != current:
            return  # edited again during the check: that edit's events bring a new check
        self._served = current
        self._set_error(None)
        self.log.info("kiln reload: %s changed, checked in %.2f s, reloading workers",
                      files, seconds)
        if self.reload is not None:
            self.counts["ok"] += 1
            self._set_error(None)
            self.reload()

    def _set_error(self, error: str | None) -> None:
        self.error = error
        write_state(self.state, error, self.counts)


class _Handler:
    """A watchdog event handler that hands every event to the reloader, whatever happens."""

    def __init__(self, reloader: Reloader):
        self.reloader = reloader

    def dispatch(self, event: Any) -> None:
        # This runs on the observer's thread: an exception would end watching silently.
        try:
            self.reloader.notify(event)
        except Exception:
            self.reloader.log.exception("kiln reload: could not read a file event")

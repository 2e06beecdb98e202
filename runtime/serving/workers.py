"""kiln's gevent worker: gunicorn's `gevent_pywsgi` worker, with every connection served in turn.

`worker_class: gevent` (the default under `predict.batch` where gevent is installed) runs this
subclass of gunicorn's `GeventPyWSGIWorker`: gevent's own HTTP server (`gevent.pywsgi`) reads
the requests, where gunicorn's `gevent` worker reads them with gunicorn's parser and response
objects. Side by side under wrk -c64 on 2 CPUs (bench's iris model, `predict.batch`), it
answered 12-17% more requests per second at the same p99 (3506, 3225 and 3118 req/s against
3004, 2886 and 2719): under batching the model is a small share of each request, and reading
and answering the request is most of what is left.

Under load gunicorn's gevent worker served some connections a hundred times more often than
others (bench, bare Flask, 2 workers, wrk -c64: p50 1 ms, p99 4 s; per connection, 3 to 327
requests in the same 2 s), for two reasons this worker takes care of:

- gevent's `recv` returns at once when the bytes are already there, so a connection whose
  client sends its next request quickly (or pipelines them) is read again without a switch to
  the hub: its greenlet serves request after request while the others wait. Here each request
  ends with a sleep until the loop's next turn, so every connection ready by then goes first.
- With more than one worker, gunicorn accepts one connection per turn of the event loop, and
  a turn under load is every ready connection's request: 64 new connections waited up to a
  second in the listen backlog. Here a turn accepts up to `ACCEPT_BURST`: a busy worker
  still turns less often, so it takes fewer connections than an idle one.

What gunicorn's own worker does per request is kept, through gunicorn's public settings: the
`keepalive` idle limit (and no keep-alive when it is 0), `max_requests`, closing kept-alive
connections once the worker stops, the access log when `accesslog` asks for it, and the
graceful stop. (gunicorn's request hooks are not called: kiln refuses them in its settings.)
gevent's server has its own limit on the request line (8 KiB, else 414): gunicorn's
`limit_request_line` and `forwarded_allow_ips` settings do not apply to it. The header lines
are read by runtime/serving/headers.py, through gevent's `MessageClass` hook, within
gunicorn's `limit_request_fields` and `limit_request_field_size`.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import gevent
from gevent.pool import Pool
from gunicorn import SERVER_SOFTWARE
from gunicorn.http.wsgi import base_environ
from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler, PyWSGIServer

from runtime.serving.headers import MAX_HEADERS, MAX_LINE, Headers, limits, read_headers

#: Connections one worker accepts per turn of its event loop, at most.
ACCEPT_BURST = 8
#: A sleep above 0 resumes the greenlet on the loop's next turn, after the I/O ready then;
#: gevent.sleep(0) may resume it before the loop has looked for I/O at all.
NEXT_TURN = 1e-6


class Server(PyWSGIServer):  # type: ignore[misc]
    """gevent's WSGI server for one listener of one worker."""

    worker: GeventWorker
    #: gunicorn's `keepalive` (None: no limit) and `accesslog`, read once rather than per request.
    keepalive: float | None = None
    accesslog: bool = False
    #: (fields, field line size) a request's headers may have: gunicorn's `limit_request_*`.
    header_limits: tuple[int, int] = (MAX_HEADERS, MAX_LINE)


class Handler(PyWSGIHandler):  # type: ignore[misc]
    """One connection: its requests in turn with every other connection's, as gunicorn would."""

    server: Server

    def MessageClass(self, stream: Any, *args: Any) -> Headers:  # gevent names it so
        # gevent's own is the email package's parser; see runtime/serving/headers.py.
        return read_headers(stream, self.request_version, *self.server.header_limits)

    def read_requestline(self) -> str:
        # gunicorn waits `keepalive` seconds for each request of a connection, then closes it.
        line = ""
        with gevent.Timeout(self.server.keepalive, False):
            line = super().read_requestline()
        return line

    def handle_one_response(self) -> None:
        super().handle_one_response()  # the request was read and answered: count it
        worker = self.server.worker
        worker.nr += 1
        if worker.nr >= worker.max_requests and worker.alive:
            worker.log.info("Autorestarting worker after current request.")
            worker.alive = False

    def handle_one_request(self) -> Any:
        result = super().handle_one_request()
        if result is not True:
            return result  # the connection closes
        if not self.server.worker.alive or not self.server.keepalive:
            return None  # as gunicorn: no keep-alive, or the worker stops
        try:
            gevent.sleep(NEXT_TURN)  # every other connection ready now goes first
        except gevent.GreenletExit:  # the worker stops: close this connection, answered
            return None
        return result

    def log_request(self) -> None:
        if self.server.accesslog:  # kiln's own line per request says more
            super().log_request()


class GeventWorker(GeventPyWSGIWorker):  # type: ignore[misc]
    """gunicorn's gevent_pywsgi worker, fair to every connection (see the module's docstring)."""

    server_class = Server
    wsgi_handler = Handler

    def run(self) -> None:
        servers = []
        ssl_args: dict[str, Any] = {}
        if self.cfg.is_ssl:
            from gunicorn.sock import ssl_context

            ssl_args = {"ssl_context": ssl_context(self.cfg)}
        for listener in self.sockets:
            listener.setblocking(1)
            environ = base_environ(self.cfg)
            environ.update({"wsgi.multithread": True, "SERVER_SOFTWARE": SERVER_SOFTWARE})
            server = self.server_class(
                listener, application=self.wsgi, spawn=Pool(self.worker_connections),
                log=self.log, error_log=logging.getLogger("gunicorn.error"),
                handler_class=self.wsgi_handler, environ=environ, **ssl_args)
            server.worker = self
            server.keepalive, server.accesslog = self.cfg.keepalive or None, bool(self.cfg.accesslog)
            server.header_limits = limits(self.cfg.limit_request_fields,
                                          self.cfg.limit_request_field_size)
            server.max_accept = ACCEPT_BURST if self.cfg.workers > 1 else server.max_accept
            server.start()
            servers.append(server)

        while self.alive:
            self.notify()
            gevent.sleep(1.0)

        try:  # as gunicorn's: stop accepting, answer what is in hand until graceful_timeout
            for server in servers:
                server.close()
            started = time.time()
            while time.time() - started <= self.cfg.graceful_timeout:
                if all(server.pool.free_count() == server.pool.size for server in servers):
                    return
                self.notify()
                gevent.sleep(1.0)
            self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
            for server in servers:
                server.stop(timeout=1)
        except Exception:
            self.log.exception("Error while the worker stopped (pid:%s)", self.pid)

"""kiln's gevent worker: gunicorn's, with every keep-alive connection served in its turn.

`worker_class: gevent` (the default under `predict.batch` where gevent is installed) runs this
subclass of gunicorn's `GeventWorker`. Under load gunicorn's own worker served some
connections a hundred times more often than others (bench, bare Flask, 2 workers, wrk -c64:
p50 1 ms, p99 4 s; per connection, 3 to 327 requests in the same 2 s), for two reasons:

- gevent's `recv` returns at once when the bytes are already there, so a connection whose
  client sends its next request quickly (or pipelines them) is read again without a switch to
  the hub: its greenlet serves request after request while the others wait. Here each request
  ends with a sleep until the loop's next turn, so every connection ready by then goes first.
- With more than one worker, gunicorn accepts one connection per turn of the event loop, and
  a turn under load is every ready connection's request: 64 new connections waited up to a
  second in the listen backlog. Here a turn accepts up to `ACCEPT_BURST`: a busy worker
  still turns less often, so it takes fewer connections than an idle one.

Measured with wrk -c64 on 2 CPUs: bare Flask's p99 went from 3.5 s to 46 ms, kiln's with
`predict.batch` from 500 ms to 37-46 ms, req/s level or better (README, "Adaptive batching").
Everything else (the keep-alive loop, gunicorn's request handling and hooks, the graceful
stop) is gunicorn's, through its public worker interface.
"""
from __future__ import annotations

import time
from functools import partial
from typing import Any

import gevent
from gevent.pool import Pool
from gevent.server import StreamServer
from gunicorn.workers.ggevent import GeventWorker as GunicornGeventWorker

#: Connections one worker accepts per turn of its event loop, at most.
ACCEPT_BURST = 8
#: A sleep above 0 resumes the greenlet on the loop's next turn, after the I/O ready then;
#: gevent.sleep(0) may resume it before the loop has looked for I/O at all.
NEXT_TURN = 1e-6


class GeventWorker(GunicornGeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker, fair to every connection (see the module's docstring)."""

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> None:
        super().handle_request(listener_name, req, sock, addr)
        try:
            gevent.sleep(NEXT_TURN)  # every other connection ready now goes first
        except gevent.GreenletExit:  # the worker stops: close this connection, answered
            raise StopIteration from None  # what gunicorn's keep-alive loop closes on

    def run(self) -> None:
        servers = []
        ssl_args: dict[str, Any] = {}
        if self.cfg.is_ssl:
            from gunicorn.sock import ssl_context

            ssl_args = {"ssl_context": ssl_context(self.cfg)}
        for listener in self.sockets:
            listener.setblocking(1)
            server = StreamServer(listener, handle=partial(self.handle, listener),
                                  spawn=Pool(self.worker_connections), **ssl_args)
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

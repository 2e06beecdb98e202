"""Save-to-served latency of `kiln serve --reload`: how long after a save the new code answers.

Serves a copy of tests/services/reload on a free 127.0.0.1 port, then saves app/routes.py
N times (cycling through in-place, rename-over and delete-then-create saves), each time with
a new version number, and polls GET /hello every 10 ms until that number comes back. Prints
each latency (with the time the check of the edited code took), then the median and the
maximum; the server's log is kept when a save took over a second.

    python bench/reload_latency.py [--saves 20] [--pause 1.0] [--poll]
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.editors import SAVES
from tests.support import SERVICES, Server

MARKER = '{"version": 1}'


def served_version(server: Server) -> int | None:
    try:
        version: int = server.get("/hello", timeout=5).json()["version"]
    except Exception:  # noqa: BLE001 - a refused or odd answer counts as "not yet"
        return None
    return version


def measure(saves: int, pause: float, poll: bool, timeout: float = 30.0) -> list[float]:
    """Latencies in seconds, one per save."""
    work = Path(tempfile.mkdtemp(prefix="kiln-reload-bench-"))
    service = work / "service"
    shutil.copytree(SERVICES / "reload", service)
    routes = service / "app" / "routes.py"
    source = routes.read_text()
    server = Server(["serve", str(service), "--reload", *(["--poll"] if poll else [])],
                    work / "server.log")
    latencies: list[float] = []
    try:
        server.wait_ready()
        styles = list(SAVES.values())
        for i in range(saves):
            version = i + 2
            save = styles[i % len(styles)]
            time.sleep(pause)  # an editor's user does not save continuously; workers settle
            began = time.monotonic()
            save(routes, source.replace(MARKER, f'{{"version": {version}}}'))
            while served_version(server) != version:
                if time.monotonic() - began > timeout:
                    raise SystemExit(f"save {i + 1} not served after {timeout:g} s; "
                                     f"log: {work / 'server.log'}")
                time.sleep(0.01)
            latencies.append(time.monotonic() - began)
            checks = re.findall(r"checked in ([0-9.]+) s", server.output())
            print(f"save {i + 1:2d} ({save.__name__}): {latencies[-1]:.3f} s "
                  f"(check {checks[-1] if checks else '?'} s)", flush=True)
    finally:
        server.stop()
    if latencies and max(latencies) > 1.0:
        print(f"server log kept: {work / 'server.log'}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=20)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between saves")
    parser.add_argument("--poll", action="store_true", help="serve with --poll")
    args = parser.parse_args()
    latencies = measure(args.saves, args.pause, args.poll)
    print(f"saves: {len(latencies)}  median: {statistics.median(latencies):.3f} s  "
          f"max: {max(latencies):.3f} s")


if __name__ == "__main__":
    main()

"""`kiln export`: captured requests, responses and feedback joined by request id, as CSV."""
from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections.abc import Iterator
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any, TextIO

from runtime.config import SERVICE_FILE, load_service
from runtime.errors import KilnError
from runtime.observability.capture import capture_settings, read_lines

COLUMNS = ("request_id", "time", "service", "version", "method", "route", "status",
           "duration_ms", "input", "prediction", "feedback", "feedback_time")
_DAY = re.compile(r"year=(\d{4})[/\\]month=(\d{2})[/\\]day=(\d{2})$")


class ExportError(KilnError):
    """Raised when captures cannot be found or the export's dates make no sense."""


def capture_root(directory: Path) -> Path:
    """The folder to read: a service folder's capture dir (all versions), or DIRECTORY itself."""
    if (directory / SERVICE_FILE).is_file():
        config = load_service(directory)
        settings = capture_settings(config)
        if settings is None:
            raise ExportError(f"{config.path}: capture: not set, so nothing was captured; add "
                              "a `capture:` section or set KILN_CAPTURE_DIR")
        return settings.root.parent
    if not directory.is_dir():
        raise ExportError(f"{directory}: not a folder")
    if next(directory.rglob("day=*"), None) is None:
        raise ExportError(f"{directory}: neither a service folder (no {SERVICE_FILE}) nor a "
                          f"capture folder (no year=/month=/day= folders under it)")
    return directory


def day_dirs(root: Path, since: date, until: date | None) -> Iterator[tuple[date, Path]]:
    """The year=/month=/day= folders under ROOT from SINCE to UNTIL (both included), in order."""
    found = []
    for folder in root.rglob("day=*"):
        match = _DAY.search(str(folder))
        if not match or not folder.is_dir():
            continue
        day = date(*map(int, match.groups()))
        if day >= since and (until is None or day <= until):
            found.append((day, folder))
    return iter(sorted(found))


def _bounds(since: date | datetime, until: date | datetime | None) -> tuple[datetime, datetime]:
    def aware(value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)

    start = aware(since) if isinstance(since, datetime) else \
        datetime.combine(since, time.min, timezone.utc)
    if until is None:
        end = datetime.max.replace(tzinfo=timezone.utc)
    elif isinstance(until, datetime):
        end = aware(until)
    else:  # a date: the whole day
        end = datetime.combine(until, time.max, timezone.utc)
    if end < start:
        raise ExportError(f"--until {until} is before --since {since}")
    return start, end


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _payload(part: dict[str, Any], key: str) -> Any:
    """The JSON body's KEY ("input", "prediction") when it has one, else the whole body."""
    if "json" in part:
        value = part["json"]
        return value[key] if isinstance(value, dict) and key in value else value
    return part.get("text", part.get("base64"))


def collect(root: Path, since: date | datetime, until: date | datetime | None = None,
            ) -> list[dict[str, str]]:
    """The export's rows: requests captured between SINCE and UNTIL, each with its latest feedback."""
    start, end = _bounds(since, until)
    requests: dict[str, dict[str, Any]] = {}
    feedback: dict[str, dict[str, Any]] = {}
    for day, folder in day_dirs(root, start.date(), None):
        for path in sorted(folder.glob("feedback-*.jsonl")):
            for line in read_lines(path):
                rid = line.get("request_id")
                if isinstance(rid, str) and line.get("time", "") >= feedback.get(rid, {}).get("time", ""):
                    feedback[rid] = line
        if day > end.date():
            continue  # feedback may come days after its request; requests stop at --until
        for path in sorted(folder.glob("requests-*.jsonl")):
            for line in read_lines(path):
                rid, when = line.get("request_id"), line.get("time")
                if isinstance(rid, str) and isinstance(when, str) and \
                        start <= datetime.fromisoformat(when) <= end:
                    requests.setdefault(rid, line)
    rows = []
    for rid, line in sorted(requests.items(), key=lambda item: item[1]["time"]):
        given = feedback.get(rid, {})
        rows.append({
            "request_id": rid, "time": line["time"], "service": line.get("service"),
            "version": line.get("version"), "method": line.get("method"),
            "route": line.get("route"), "status": line.get("status"),
            "duration_ms": line.get("duration_ms"),
            "input": _payload(line.get("request", {}), "input"),
            "prediction": _payload(line.get("response", {}), "prediction"),
            "feedback": given.get("feedback"), "feedback_time": given.get("time"),
        })
    return [{k: _cell(v) for k, v in row.items()} for row in rows]


def write_csv(rows: list[dict[str, str]], out: TextIO) -> None:
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)


def export(directory: Path, since: date | datetime, until: date | datetime | None,
           output: Path | str) -> int:
    """Write the joined CSV to OUTPUT ("-": stdout); return the number of rows."""
    rows = collect(capture_root(Path(directory)), since, until)
    if str(output) == "-":
        write_csv(rows, sys.stdout)
        return len(rows)
    target = Path(output)
    partial = target.with_name(target.name + ".partial")
    try:
        with partial.open("w", newline="", encoding="utf-8") as file:
            write_csv(rows, file)
        os.replace(partial, target)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise ExportError(f"{target}: cannot write: {err.strerror or err}") from err
    return len(rows)

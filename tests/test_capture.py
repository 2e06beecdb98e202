"""Capture of requests and responses, feedback on them, and `kiln export`."""
from __future__ import annotations

import csv
import json
import os
import shutil
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from werkzeug.datastructures import Headers

from runtime.cli import cli
from runtime.config import load_service
from runtime.errors import ConfigError
from runtime.observability import capture
from runtime.testing import client
from tests.support import SERVICES, Server

SECRET = "s3cr3t-token-never-written"
TODAY = datetime.now(timezone.utc).date()


def copy_service(tmp_path: Path, capture_yaml: str | None = "capture:\n  dir: captures\n") -> Path:
    """The observed test service in TMP_PATH, with CAPTURE_YAML appended to its service.yaml."""
    root = tmp_path / "observed"
    shutil.copytree(SERVICES / "observed", root, ignore=shutil.ignore_patterns("__pycache__"))
    if capture_yaml:
        with (root / "service.yaml").open("a") as file:
            file.write(capture_yaml)
    return root


def capture_lines(folder: Path, kind: str = "requests") -> list[dict[str, Any]]:
    """Every line of every KIND file under FOLDER, each parsed (a bad line fails the test)."""
    return [json.loads(line) for path in sorted(folder.rglob(f"{kind}-*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()]


def export_rows(directory: Path, tmp_path: Path, *extra: str) -> list[dict[str, str]]:
    out = tmp_path / "predictions.csv"
    result = CliRunner().invoke(cli, ["export", str(directory), "--since", str(TODAY), *extra,
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    with out.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.parametrize(("yaml", "env", "expected"), [
    (None, {}, None),
    ("capture:\n  dir: caps\n", {}, "{root}/caps/observed/2.0.0"),
    ("capture:\n", {}, "{root}/captures/observed/2.0.0"),
    ("capture:\n  dir: /abs/caps\n", {}, "/abs/caps/observed/2.0.0"),
    (None, {"KILN_CAPTURE_DIR": "/env/caps"}, "/env/caps/observed/2.0.0"),
    ("capture:\n  dir: caps\n", {"KILN_CAPTURE_DIR": "/env/caps"}, "/env/caps/observed/2.0.0"),
])
def test_capture_settings(tmp_path: Path, yaml: str | None, env: dict[str, str],
                          expected: str | None) -> None:
    root = copy_service(tmp_path, yaml)
    settings = capture.capture_settings(load_service(root), env)
    if expected is None:
        assert settings is None
    else:
        assert settings is not None and str(settings.root) == expected.format(root=root)


@pytest.mark.parametrize("value", ["0", "-5", "big"])
def test_capture_max_bytes_must_be_positive(tmp_path: Path, value: str) -> None:
    config = load_service(copy_service(tmp_path))
    with pytest.raises(ConfigError, match=f"^KILN_CAPTURE_MAX_BYTES: '{value}' must be a positive"):
        capture.capture_settings(config, {"KILN_CAPTURE_MAX_BYTES": value})


@pytest.mark.parametrize(("header", "kept"), [
    ("Authorization", False), ("authorization", False), ("Proxy-Authorization", False),
    ("Cookie", False), ("Set-Cookie", False), ("X-Amz-Date", False),
    ("X-Amz-Security-Token", False), ("X-Amz-Content-Sha256", False), ("X-Api-Key", False),
    ("Content-Type", True), ("User-Agent", True), ("X-Request-ID", True),
])
def test_headers_lose_their_credentials(header: str, kept: bool) -> None:
    assert (header in capture.clean_headers(Headers({header: "v"}))) is kept


@pytest.mark.parametrize(("data", "is_json", "expected"), [
    (b"", True, {}),
    (b'{"input": [1, 2]}', True, {"json": {"input": [1, 2]}}),
    (b"{not json", True, {"text": "{not json"}),
    (b"plain words", False, {"text": "plain words"}),
    (b"\xff\xfe", False, {"base64": "//4="}),
])
def test_bodies(data: bytes, is_json: bool, expected: dict[str, Any]) -> None:
    assert capture.body(data, is_json) == expected


def test_writer_rotates_by_size_and_keeps_lines_whole(tmp_path: Path) -> None:
    writer = capture.JsonlWriter(tmp_path, "requests", max_bytes=130)
    when = datetime(2026, 3, 4, 5, 6, tzinfo=timezone.utc)
    lines = [json.dumps({"request_id": f"id-{i}", "pad": "x" * 30}).encode() + b"\n"
             for i in range(10)]
    for line in lines:
        writer.write(line, when)
    folder = tmp_path / "year=2026" / "month=03" / "day=04"
    files = sorted(folder.glob("requests-*.jsonl"))
    assert len(files) == 5
    assert all(path.stat().st_size <= 130 for path in files)
    assert b"".join(path.read_bytes() for path in files) == b"".join(lines)


def test_request_and_response_are_captured_without_credentials(tmp_path: Path) -> None:
    root = copy_service(tmp_path)
    app = client(root)
    answer = app.post("/api/v1.0/predict?token=abc&keep=1", json={"input": 5},
                      headers={"Authorization": f"Bearer {SECRET}", "Cookie": f"session={SECRET}",
                               "X-Amz-Security-Token": SECRET})
    assert app.get("/api/v1.0/health/status").status_code == 200  # health is not captured
    [line] = capture_lines(root / "captures")
    assert line["request_id"] == answer.json["request_id"]
    assert (line["route"], line["status"], line["service"], line["version"]) == \
        ("/api/v1.0/predict", 200, "observed", "2.0.0")
    assert line["request"]["json"] == {"input": 5}
    assert line["request"]["query"] == {"keep": "1"}
    assert line["response"]["json"]["prediction"] == {"double": 10}
    assert SECRET not in json.dumps(line)
    folder = root / "captures" / "observed" / "2.0.0" / f"year={TODAY:%Y}" / \
        f"month={TODAY:%m}" / f"day={TODAY:%d}"
    assert list(folder.glob("requests-*.jsonl"))


def test_bodies_false_keeps_only_metadata(tmp_path: Path) -> None:
    root = copy_service(tmp_path, "capture:\n  dir: captures\n  bodies: false\n")
    client(root).post("/api/v1.0/predict", json={"input": 5})
    [line] = capture_lines(root / "captures")
    assert line["status"] == 200
    assert "json" not in line["request"] and "json" not in line["response"]


@pytest.mark.parametrize(("headers", "body", "message"), [
    ({}, {"ok": True}, "missing Request-ID header: send the X-Request-ID of the response"),
    ({"Request-ID": "never-seen"}, {"ok": True},
     "unknown request id 'never-seen': no request with this id was captured in the last 7 days"),
])
def test_feedback_refuses_unknown_requests(tmp_path: Path, headers: dict[str, str],
                                           body: Any, message: str) -> None:
    answer = client(copy_service(tmp_path)).post("/api/v1.0/feedback", json=body, headers=headers)
    assert answer.status_code == 400
    assert answer.json["error"].startswith(message)


def test_feedback_needs_capture() -> None:
    answer = client(SERVICES / "observed").post("/api/v1.0/feedback", json={},
                                                headers={"Request-ID": "x"})
    assert answer.status_code == 400
    assert "feedback needs request capture" in answer.json["error"]


def test_feedback_finds_requests_of_other_workers_and_days(tmp_path: Path) -> None:
    root = copy_service(tmp_path)
    app = client(root)
    # A line written by another process three days ago (this one never saw the id).
    folder = capture.day_dir(root / "captures" / "observed" / "2.0.0", TODAY - timedelta(days=3))
    folder.mkdir(parents=True)
    (folder / "requests-otherhost-1-0000.jsonl").write_text(
        '{"request_id":"old-one","time":"2026-01-01T00:00:00.000+00:00",'
        '"response":{"json":{"request_id":"nested-only"}}}\n')
    answer = app.post("/api/v1.0/feedback", json={"label": 1}, headers={"Request-ID": "old-one"})
    assert answer.status_code == 200 and answer.json == {"registered": True,
                                                         "request_id": "old-one"}
    # An id that only appears inside a body is not a captured request.
    assert app.post("/api/v1.0/feedback", json={}, headers={"Request-ID": "nested-only"}
                    ).status_code == 400


def test_export_joins_requests_responses_and_feedback(tmp_path: Path) -> None:
    root = copy_service(tmp_path)
    app = client(root)
    first = app.post("/api/v1.0/predict", json={"input": 3}).json["request_id"]
    second = app.post("/api/v1.0/predict", json={"input": 4}).json["request_id"]
    app.get("/items/9")
    for label in ("wrong", "right"):  # the latest feedback wins
        assert app.post("/api/v1.0/feedback", json={"label": label},
                        headers={"X-Request-ID": first}).json["registered"] is True
    rows = export_rows(root, tmp_path)
    assert [row["request_id"] for row in rows[:2]] == [first, second]
    assert rows[0]["input"] == "3" and rows[0]["prediction"] == '{"double": 6}'
    assert json.loads(rows[0]["feedback"]) == {"label": "right"}
    assert rows[1]["feedback"] == ""
    assert (rows[2]["route"], rows[2]["method"], rows[2]["status"]) == \
        ("/items/<int:item_id>", "GET", "200")
    assert json.loads(rows[2]["prediction"])["item"] == 9
    # A capture folder works as well as the service folder; dates outside give nothing.
    assert len(export_rows(root / "captures", tmp_path)) == 3
    yesterday = str(TODAY - timedelta(days=1))
    result = CliRunner().invoke(cli, ["export", str(root), "--since", yesterday,
                                      "--until", yesterday, "-o", "-"])
    assert result.exit_code == 0 and result.stdout.splitlines()[1:] == []


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "2026-02-03", "--until", "2026-02-01"],
     "Error: --until 2026-02-01 is before --since 2026-02-03"),
    (["--since", "yesterday"], "Invalid value for '--since'"),
])
def test_export_refuses_bad_dates(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["export", str(copy_service(tmp_path)), *args])
    assert result.exit_code != 0 and message in result.output


def test_export_needs_capture(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["export", str(copy_service(tmp_path, None)),
                                      "--since", str(TODAY)])
    assert result.exit_code == 1
    assert "service.yaml: capture: not set, so nothing was captured" in result.output


def test_export_refuses_a_folder_that_holds_no_captures(tmp_path: Path) -> None:
    keep = tmp_path / "keep.csv"
    keep.write_text("mine\n")
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "empty"), "--since", str(TODAY),
                                      "-o", str(keep)])
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: {tmp_path / 'empty'}: neither a service folder "
                                     "(no service.yaml) nor a capture folder (no "
                                     "year=/month=/day= folders under it)")
    assert keep.read_text() == "mine\n"


def test_capture_under_load_from_two_workers(tmp_path: Path,
                                             serve: Callable[..., Server]) -> None:
    root = copy_service(tmp_path)
    server = serve(root, env={"GUNICORN_CMD_ARGS": "--workers 2 --threads 8",
                              "KILN_CAPTURE_MAX_BYTES": "20000"})

    def call(i: int) -> tuple[str, int, int]:
        answer = server.post("/api/v1.0/predict", json={"input": i},
                             headers={"Authorization": f"Bearer {SECRET}",
                                      "Cookie": f"session={SECRET}"})
        assert answer.status_code == 200
        out = answer.json()
        return out["request_id"], i, out["prediction"]["double"]

    with ThreadPoolExecutor(16) as pool:
        sent = list(pool.map(call, range(400)))
    files = list((root / "captures").rglob("requests-*.jsonl"))
    assert len({path.name.split("-")[2] for path in files}) == 2  # both workers wrote
    assert len(files) > 2  # and rotated
    raw = b"".join(path.read_bytes() for path in files)
    assert SECRET.encode() not in raw and b"Authorization" not in raw
    lines = capture_lines(root / "captures")
    by_id = {line["request_id"]: line for line in lines}
    assert len(lines) == len(by_id) == 400
    for rid, given, doubled in sent:
        line = by_id[rid]
        assert line["request"]["json"] == {"input": given}
        assert line["response"]["json"]["prediction"] == {"double": doubled}


def test_feedback_round_trip_through_a_server(tmp_path: Path,
                                              serve: Callable[..., Server]) -> None:
    root = copy_service(tmp_path)
    server = serve(root, env={"GUNICORN_CMD_ARGS": "--workers 2 --threads 2"})
    ids = []
    for i in range(6):
        answer = server.post("/api/v1.0/predict", json={"input": i})
        ids.append(answer.json()["request_id"])
    # New connections: some feedback lands on the worker that did not capture the request.
    for i, rid in enumerate(ids):
        answer = server.post("/api/v1.0/feedback", json={"correct": i % 2 == 0},
                             headers={"Request-ID": rid})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"registered": True, "request_id": rid}
    assert server.post("/api/v1.0/feedback", json={}, headers={"Request-ID": "nope"}
                       ).status_code == 400
    rows = {row["request_id"]: row for row in export_rows(root, tmp_path)}
    assert len(rows) == 6
    for i, rid in enumerate(ids):
        assert rows[rid]["input"] == str(i)
        assert json.loads(rows[rid]["prediction"]) == {"double": i * 2}
        assert json.loads(rows[rid]["feedback"]) == {"correct": i % 2 == 0}


def test_streams_and_errors_are_captured_without_consuming_the_stream(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_CAPTURE_DIR", str(tmp_path))
    app = client(SERVICES / "basic")
    streamed = app.post("/api/v1.0/predict", json={"input": ["stream", 3]})
    assert [json.loads(x) for x in streamed.text.splitlines()] == [{"chunk": i} for i in range(3)]
    assert app.post("/api/v1.0/predict", json={"input": ["boom"]}).status_code == 500
    stream_line, error_line = capture_lines(tmp_path / "basic" / "1.2.3")
    assert stream_line["response"]["streamed"] is True
    # Written once the stream ended, with what was sent.
    assert [json.loads(x) for x in stream_line["response"]["text"].splitlines()] == [
        {"chunk": i} for i in range(3)]
    assert stream_line["request"]["json"] == {"input": ["stream", 3]}
    assert error_line["status"] == 500
    assert error_line["response"]["json"]["error"].startswith("internal error")


def test_a_refused_caller_leaves_no_body_behind(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_CAPTURE_DIR", str(tmp_path))
    monkeypatch.setenv("KILN_AUTH_TOKENS", f"client:{SECRET}")
    app = client(SERVICES / "token")
    refused = app.post("/api/v1.0/predict", json={"input": "private data of someone unknown"})
    assert refused.status_code == 401
    line, = capture_lines(tmp_path)
    assert line["status"] == 401
    assert "json" not in line["request"] and "text" not in line["request"]
    assert "private data" not in json.dumps(line)


def test_a_full_disk_under_capture_still_answers_and_counts_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # /dev/full refuses every write with ENOSPC, as a full disk does: here it stands where this
    # process's capture file goes.
    root = tmp_path / "caps"
    monkeypatch.setenv("KILN_CAPTURE_DIR", str(root))
    folder = capture.day_dir(root / "observed" / "2.0.0", capture.now().date())
    folder.mkdir(parents=True)
    host = socket.gethostname().replace("-", "_") or "host"
    (folder / f"requests-{host}-{os.getpid()}-0000.jsonl").symlink_to("/dev/full")
    app = client(SERVICES / "observed")
    from tests.test_metrics import total

    before = total(app.get("/metrics").text, "kiln_http_requests_total",
                   route="/api/v1.0/predict")
    answer = app.post("/api/v1.0/predict", json={"input": 4}, headers={"X-Request-ID": "disk-1"})
    assert answer.status_code == 200 and answer.json["prediction"] == {"double": 8}
    failures = [r for r in caplog.records if "disk-1" in r.getMessage() and r.exc_info
                and "No space left" in str(r.exc_info[1])]
    assert len(failures) == 1
    text = app.get("/metrics").text
    assert total(text, "kiln_http_requests_total", route="/api/v1.0/predict") == before + 1
    assert total(text, "kiln_http_requests_in_progress") == 0


def test_a_full_disk_under_a_real_server(tmp_path: Path,
                                         serve: Callable[..., Server]) -> None:
    import subprocess

    full = tmp_path / "full"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)],
                             check=False, capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"x" * 4096):
                pass
        except OSError:  # ENOSPC: the disk is full
            pass
        finally:
            os.close(fd)
        server = serve(copy_service(tmp_path, None), env={"KILN_CAPTURE_DIR": str(full)})
        rids = [f"full-{n}" for n in range(4)]
        for rid in rids:
            answer = server.post("/api/v1.0/predict", json={"input": 2},
                                 headers={"X-Request-ID": rid})
            assert answer.status_code == 200, answer.text
        from tests.test_metrics import total

        metrics = server.get("/metrics").text
        assert total(metrics, "kiln_http_requests_total", route="/api/v1.0/predict") == 4
        assert total(metrics, "kiln_http_requests_in_progress") == 0
        output = server.output()
        for rid in rids:
            failed = [line for line in output.splitlines()
                      if rid in line and '"level": "ERROR"' in line]
            assert len(failed) == 1, output
            assert "No space left" in failed[0]
    finally:
        subprocess.run(["umount", "-l", str(full)], check=False)

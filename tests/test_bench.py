"""bench/ stays runnable: its CLI answers --help and the contestant apps serve a prediction."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

BENCH = ROOT / "bench"


def test_run_help() -> None:
    done = subprocess.run([sys.executable, str(BENCH / "run"), "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout and "127.0.0.1" in done.stdout


def test_run_refuses_unknown_part() -> None:
    done = subprocess.run([sys.executable, str(BENCH / "run"), "--only", "nope"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "unknown part(s) nope" in done.stderr


@pytest.fixture()
def model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(BENCH))
    from apps.iris import train

    path = train(tmp_path / "model.joblib")
    monkeypatch.setenv("BENCH_MODEL", str(path))
    return path


@pytest.mark.parametrize("module", ["apps.flask_app", "apps.wsgi_app"])
def test_contestant_apps_predict(model: Path, module: str) -> None:
    import importlib

    from werkzeug.test import Client

    app = importlib.import_module(module).app
    response = Client(app).post("/api/v1.0/predict" if "flask" in module else "/",
                                json={"input": [[5.1, 3.5, 1.4, 0.2]]})
    assert response.status_code == 200
    assert response.get_json() == {"prediction": [0]}


def test_versus_gives_round_by_round_ratios_and_their_median(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    import report

    rounds = [{"b": {"rps": 90.0}, "c": {"rps": 100.0}}, {"b": {"rps": 120.0}, "c": {"rps": 100.0}},
              {"b": {"rps": 100.0}, "c": {"rps": 100.0}}, {"b": {"rps": 5.0}}]
    assert report.versus(rounds, "b", "c") == "0.90, 1.20, 1.00 (median 1.00)"
    assert report.versus(rounds, "b", "x") == "n/a"


def test_instructions_part_explains_itself() -> None:
    done = subprocess.run([sys.executable, str(BENCH / "instructions.py"), "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "valgrind" in done.stdout and "--calls" in done.stdout

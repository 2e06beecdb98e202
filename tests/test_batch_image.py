"""`kiln batch IMAGE`: the run inside the cpu image that tests/test_docker_image.py builds."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from runtime.cli import cli
from tests.test_docker_image import cpu_image, images  # noqa: F401 - the session's one build

pytestmark = pytest.mark.docker


def test_batch_runs_inside_the_image(cpu_image: tuple[str, str], tmp_path: Path) -> None:  # noqa: F811
    inputs = tmp_path / "in"
    inputs.mkdir()
    source = inputs / "numbers.jsonl"
    source.write_text('{"a": 1, "b": 2}\nnot json\n{"a": 7, "b": 8}\n')
    out = tmp_path / "out" / "sums.jsonl"
    result = CliRunner().invoke(cli, ["batch", cpu_image[0], "--input", str(source),
                                      "--output", str(out), "--chunk", "2"])
    assert result.exit_code == 1, result.output
    assert "Error: 1 of 3 rows failed (first: row 2: line is not JSON" in result.output
    assert "kiln batch: 3 rows, 1 failed, " in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("a") for r in rows] == [1, None, 7]
    assert rows[0]["error"] is None and rows[0]["prediction"] is not None
    assert rows[1]["input"] == "not json" and rows[1]["error"].startswith("line is not JSON")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "sums.jsonl", "sums.jsonl.kiln-batch.json"]  # the staging folder is gone
    again = CliRunner().invoke(cli, ["batch", cpu_image[0], "--input", str(source),
                                     "--output", str(out), "--chunk", "2", "--resume"])
    assert again.exit_code == 1 and "is already complete" in again.output

"""Managed client tokens: `kiln token new`, the hashed tokens file, and revocation without a restart."""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from runtime.cli import cli
from runtime.security import tokens
from runtime.testing import make_app
from tests.support import SERVICES, wait_for

HASH_LINE = re.compile(r"^alice:sha256:[0-9a-f]{64}$")


def _new(path: Path, client: str = "alice") -> str:
    result = CliRunner().invoke(cli, ["token", "new", client, "--file", str(path)])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert len(token) >= 40 and "\n" not in token
    return token


def test_token_new_prints_the_token_once_and_keeps_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    token = _new(path)
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and HASH_LINE.match(lines[0])
    assert lines[0].endswith(hashlib.sha256(token.encode()).hexdigest())
    assert token not in path.read_text()
    assert os.stat(path).st_mode & 0o777 == 0o600
    second = _new(path)
    assert second != token and len(path.read_text().splitlines()) == 2


def test_token_new_reads_the_file_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    result = CliRunner().invoke(cli, ["token", "new", "bob"],
                                env={"KILN_AUTH_TOKENS_FILE": str(path)})
    assert result.exit_code == 0
    assert path.read_text().startswith("bob:sha256:")


@pytest.mark.parametrize("args, env, message", [
    (["token", "new", "alice"], {}, ("Error: no tokens file: pass --file FILE or set "
                                     "KILN_AUTH_TOKENS_FILE")),
    (["token", "new", "al:ice", "--file", "t"], {},
     "Error: 'al:ice' is not a usable client name: 1 to 128 of A-Z, a-z, 0-9 and . _ @ + -"),
    (["token", "new", "alice", "--file", "/nonexistent/dir/t"], {},
     "Error: /nonexistent/dir/t: cannot write the tokens file: No such file or directory"),
])
def test_token_new_errors_are_one_line(tmp_path: Path, args: list[str], env: dict[str, str],
                                       message: str) -> None:
    result = CliRunner().invoke(cli, args, env={"KILN_AUTH_TOKENS_FILE": "", **env})
    assert result.exit_code == 1
    assert result.stderr.strip() == message


@pytest.mark.parametrize("text, expected", [
    ("alice:sha256:" + "a" * 64 + "\n", [("alice", "a" * 64)]),
    ("# clients\n\nalice:sha256:" + "a" * 64 + "  # laptop\nbob:sha256:" + "b" * 64,
     [("alice", "a" * 64), ("bob", "b" * 64)]),
    ("alice:plain-token\nbob:sha256:" + "b" * 64, [("bob", "b" * 64)]),
    ("alice:sha256:" + "A" * 64, []),
    ("", []),
])
def test_parse_skips_what_is_not_a_hash_line(text: str, expected: list[tuple[str, str]]) -> None:
    assert tokens.parse(text, "tokens") == expected


def test_the_file_is_reread_when_it_changes_and_only_then(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    token = _new(path)
    watched = tokens.TokenFile(path, check_every=0)
    assert watched.match(token) == "alice"
    assert watched.match(token, "bob") is None
    path.write_text("")
    assert watched.match(token) is None
    path.write_text(f"carol:sha256:{tokens.digest(token)}\n")
    assert watched.match(token) == "carol"
    path.unlink()
    assert watched.match(token) is None


def test_a_deleted_line_is_revoked_without_a_restart(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tokens"
    alice, bob = _new(path, "alice"), _new(path, "bob")
    monkeypatch.setenv("KILN_AUTH_TOKENS_FILE", str(path))
    monkeypatch.setenv("KILN_AUTH_TOKENS", "env-client:env-token")
    client = make_app(SERVICES / "token").test_client()

    def user(token: str, basic: str | None = None) -> object:
        if basic is not None:
            response = client.get("/whoami", auth=(basic, token))
        else:
            response = client.get("/whoami", headers={"Authorization": f"Bearer {token}"})
        return response.json["user"] if response.status_code == 200 else response.status_code

    assert user(alice) == "alice" and user(bob) == "bob"
    assert user(alice, basic="alice") == "alice"
    assert user(alice, basic="bob") == 401
    assert user("env-token") == "env-client"
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines()
                            if not line.startswith("alice:")))
    assert wait_for(lambda: user(alice) == 401, timeout=10)
    assert user(bob) == "bob" and user("env-token") == "env-client"
    carol = _new(path, "carol")
    assert wait_for(lambda: user(carol) == "carol", timeout=10)


def test_a_missing_tokens_file_stops_the_start(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", str(SERVICES / "token")],
                                env={"KILN_AUTH_TOKENS_FILE": str(tmp_path / "nope")})
    assert result.exit_code == 1
    assert result.stderr == (f"Error: KILN_AUTH_TOKENS_FILE: cannot read {tmp_path / 'nope'}: "
                             f"No such file or directory\n")


def test_token_new_then_revoke_on_a_real_server(serve, tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    _new(path, "bob")
    server = serve("token", env={"KILN_AUTH_TOKENS_FILE": str(path),
                                 "GUNICORN_CMD_ARGS": "--workers 2"})
    token = _new(path, "alice")
    headers = {"Authorization": f"Bearer {token}"}

    def answers(status: int) -> bool:
        # Several requests, so that every worker has answered.
        return all(server.get("/whoami", headers=headers).status_code == status for _ in range(6))

    assert wait_for(lambda: answers(200), timeout=10), server.output()[-2000:]
    assert server.get("/whoami", headers=headers).json() == {"user": "alice"}
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines()
                            if not line.startswith("alice:")))
    assert wait_for(lambda: answers(401), timeout=10), server.output()[-2000:]
    assert token not in server.output()

"""Managed client tokens: `kiln token new` and the tokens file a running service re-reads.

The file (KILN_AUTH_TOKENS_FILE) holds one `client:sha256:<hex>` line per token, never a token:
`kiln token new CLIENT` prints a fresh token once and appends its hash. A client may hold
several tokens (rotation: add the new one, move callers over, delete the old line). Deleting a
line revokes that token; a running service sees the change within `CHECK_EVERY` seconds, as
each worker stats the file at most that often and re-reads it only when it changed.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from pathlib import Path

from runtime.errors import KilnError

log = logging.getLogger("kiln.auth")

TOKENS_FILE_VAR = "KILN_AUTH_TOKENS_FILE"
PREFIX = "sha256:"
#: Seconds between two looks at the tokens file (one stat each).
CHECK_EVERY = 1.0
_CLIENT = re.compile(r"[A-Za-z0-9._@+-]{1,128}")
_LINE = re.compile(r"^(?P<client>[^:\s]+):sha256:(?P<hex>[0-9a-f]{64})$")


class TokenFileError(KilnError):
    """Raised when a tokens file cannot be read or written, or a client name is not usable."""


def digest(token: str) -> str:
    """The hex SHA-256 of a token, as the tokens file keeps it."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse(text: str, source: str) -> list[tuple[str, str]]:
    """(client, hex digest) of each `client:sha256:<hex>` line; `#` comments and blanks skipped.

    A malformed line is logged with its number (never its content) and skipped, so that one
    bad edit does not undo the revocations around it.
    """
    entries: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        found = _LINE.match(line)
        if found is None:
            log.warning("%s: line %d is not client:sha256:<64 hex digits>; ignored", source, number)
            continue
        entries.append((found["client"], found["hex"]))
    return entries


class TokenFile:
    """The entries of one tokens file, re-read when its mtime, size or inode changes."""

    def __init__(self, path: str | Path, check_every: float = CHECK_EVERY):
        self.path = Path(path)
        self.check_every = check_every
        self._lock = threading.Lock()
        self._checked = float("-inf")
        self._stamp: tuple[int, int, int] | None = None
        self._entries: list[tuple[str, str]] = []
        self.refresh(strict=True)

    def refresh(self, strict: bool = False) -> None:
        """Re-read the file if it changed; STRICT: raise TokenFileError when it cannot be read."""
        self._checked = time.monotonic()
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if stamp == self._stamp:
                return
            text = self.path.read_text(encoding="utf-8")
        except OSError as err:
            if strict:
                raise TokenFileError(f"{TOKENS_FILE_VAR}: cannot read {self.path}: "
                                     f"{err.strerror or err}") from err
            if self._stamp is not None:
                log.warning("%s: cannot read %s (%s): no token of it is accepted until it is "
                            "back", TOKENS_FILE_VAR, self.path, err.strerror or err)
            self._stamp, self._entries = None, []
            return
        self._entries = parse(text, f"{TOKENS_FILE_VAR} ({self.path})")
        self._stamp = stamp

    def entries(self) -> list[tuple[str, str]]:
        """The current (client, digest) entries; looks at the file at most every `check_every`."""
        if time.monotonic() - self._checked >= self.check_every:
            with self._lock:
                if time.monotonic() - self._checked >= self.check_every:
                    self.refresh()
        return self._entries

    def match(self, token: str, client: str | None = None) -> str | None:
        """The client whose token this is (of CLIENT only, when given), or None."""
        given = digest(token)
        found = None
        for name, expected in self.entries():  # compare with every entry: no early exit
            if hmac.compare_digest(expected, given) and (client is None or name == client):
                found = name
        return found


def new_token(client: str, path: str | Path) -> str:
    """Append a new token's hash for CLIENT to the tokens file at PATH; return the token.

    The file is created (owner read and write only) when missing.
    """
    if not _CLIENT.fullmatch(client):
        raise TokenFileError(f"{client!r} is not a usable client name: 1 to 128 of A-Z, a-z, 0-9 "
                             f"and . _ @ + -")
    token = secrets.token_urlsafe(32)
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            if out.tell() > 0 and not path.read_bytes().endswith(b"\n"):
                out.write("\n")
            out.write(f"{client}:{PREFIX}{digest(token)}\n")
    except OSError as err:
        raise TokenFileError(f"{path}: cannot write the tokens file: {err.strerror or err}") from err
    return token

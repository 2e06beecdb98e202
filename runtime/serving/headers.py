"""A request's header lines for kiln's gevent worker: read once, into a list and a dict.

gevent's HTTP server reads the headers through its handler's `MessageClass`, by default
`http.client.parse_headers`, which runs the `email` package's feed parser: about 26 µs for
the four headers of a bench request, where this reader takes a few. Under `predict.batch`
the model is a small share of each request, and that parser was about a tenth of a worker's
time (py-spy, wrk -c64).

What it accepts is what gunicorn's own parser accepts by default, which is stricter than
`email`: a field name is an RFC 9110 token with no space before its colon, a value has no
NUL or bare CR, folded (obs-fold) lines and a second, different Content-Length are refused.
A refusal sets `status`, and gevent answers 400.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO

#: A line longer than this is refused, as `http.client` refuses it.
MAX_LINE = 65536
#: More header lines than this are refused, as `http.client` and gevent refuse them.
MAX_HEADERS = 100

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")


class Headers:
    """What gevent's handler and gunicorn's access log ask of a request's headers."""

    def __init__(self, fields: list[tuple[str, str]], status: str = "") -> None:
        self.status = status  # not empty: the request is refused with 400
        self.fields = fields
        self.first: dict[str, str] = {}
        for name, value in fields:
            self.first.setdefault(name.lower(), value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of the field NAME (any case), else DEFAULT."""
        return self.first.get(name.lower(), default)

    getheader = get

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        self.fields = [(n, v) for n, v in self.fields if n.lower() != key]
        self.first.pop(key, None)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self.first

    def items(self) -> list[tuple[str, str]]:
        """Every (name, value) in the order received."""
        return list(self.fields)

    @property
    def headers(self) -> Iterator[str]:
        """Each field as its line, `Name: value\\r\\n`: what gevent builds the environ from."""
        for name, value in self.fields:
            yield f"{name}: {value}\r\n"

    @property
    def typeheader(self) -> str | None:
        """The Content-Type."""
        return self.first.get("content-type")


def read_headers(stream: IO[bytes]) -> Headers:
    """Read header lines from STREAM up to the empty line; a refusal is in `status`."""
    fields: list[tuple[str, str]] = []
    while True:
        line = stream.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            return Headers([], "Line too long")
        if line in (b"\r\n", b"\n", b""):
            return _checked(fields)
        if len(fields) == MAX_HEADERS:
            return Headers([], f"More than {MAX_HEADERS} headers")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            return Headers([], "Invalid header line")
        value = value.strip(b" \t\r\n")
        if _BAD_VALUE.search(value):
            return Headers([], "Invalid header value")
        fields.append((name.decode("ascii"), value.decode("latin-1")))


def _checked(fields: list[tuple[str, str]]) -> Headers:
    headers = Headers(fields)
    lengths = {v for n, v in fields if n.lower() == "content-length"}
    if len(lengths) > 1:
        return Headers([], "Conflicting Content-Length headers")
    return headers

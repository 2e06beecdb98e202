"""A request's header lines for kiln's gevent worker: read once, into a list and a dict.

gevent's HTTP server reads the headers through its handler's `MessageClass`, by default
`http.client.parse_headers`, which runs the `email` package's feed parser: about 26 µs for
the four headers of a bench request, where this reader takes a few. Under `predict.batch`
the model is a small share of each request, and that parser was about a tenth of a worker's
time (py-spy, wrk -c64).

It refuses (gevent then answers 400 and closes) what gunicorn's own parser refuses by
default, where gevent's would accept it: a line not ended by CRLF, a field name that is not
an RFC 9110 token or has a space before its colon, a folded (obs-fold) line, a control
character in a value, a field line over 8190 bytes or more than 100 fields (gunicorn's
`limit_request_field_size` and `limit_request_fields`, which apply), headers cut off
by the end of the connection, Host or Content-Type given twice, and every ambiguity about
where the body ends: Content-Length twice or not all digits, Transfer-Encoding twice, other
than `chunked`, beside a Content-Length or on HTTP/1.0. gevent reads a chunked body only when
the value is exactly `chunked`, and a request it read otherwise would have its body taken
for the next request on the connection.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO

#: A field line longer than this (without its CRLF) is refused: gunicorn's
#: `limit_request_field_size` default, and what it uses for 0 or less.
MAX_LINE = 8190
#: More fields than this are refused: gunicorn's `limit_request_fields` default.
MAX_HEADERS = 100
#: What gunicorn allows for `limit_request_fields` at most, and uses for 0 or less.
FIELDS_CEILING = 32768
#: Fields a request may give once at most.
SINGLE = ("host", "content-type", "content-length", "transfer-encoding")

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # control characters but HTAB
_DIGITS = re.compile(r"[0-9]+")


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


def limits(fields: int, field_size: int) -> tuple[int, int]:
    """(fields, line size) read_headers allows, from gunicorn's `limit_request_fields` and
    `limit_request_field_size` settings, as gunicorn's own parser reads them."""
    return (fields if 0 < fields <= FIELDS_CEILING else FIELDS_CEILING,
            field_size if field_size > 0 else MAX_LINE)


def read_headers(stream: IO[bytes], version: str = "HTTP/1.1", max_fields: int = MAX_HEADERS,
                 max_line: int = MAX_LINE) -> Headers:
    """Read the header lines of a VERSION request from STREAM, up to the empty line: at most
    MAX_FIELDS lines of at most MAX_LINE bytes each (without the CRLF).

    A refused request has its reason in `status` (see the module's docstring).
    """
    fields: list[tuple[str, str]] = []
    while True:
        line = stream.readline(max_line + 3)
        if line == b"\r\n":
            return _framed(fields, version)
        if len(line) > max_line + 2 or (len(line) == max_line + 2 and line[-2:] != b"\r\n"):
            return _refused("Header line too long")
        if not line.endswith(b"\r\n"):
            return _refused("Header line not ended by CRLF" if line.endswith(b"\n")
                            else "Headers cut off")
        if len(fields) == max_fields:
            return _refused(f"More than {max_fields} headers")
        name, colon, value = line[:-2].partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            return _refused("Invalid header line")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            return _refused("Invalid header value")
        fields.append((name.decode("ascii"), value.decode("latin-1")))


def _refused(why: str) -> Headers:
    return Headers([], why)


def _framed(fields: list[tuple[str, str]], version: str) -> Headers:
    """HEADERS, unless where the body ends (or which host it is for) is ambiguous."""
    headers = Headers(fields)
    if len(headers.first) < len(fields):
        names = [name.lower() for name, _ in fields]
        for single in SINGLE:
            if names.count(single) > 1:
                return _refused(f"{single} given more than once")
    length = headers.first.get("content-length")
    if length is not None and not _DIGITS.fullmatch(length):
        return _refused("Invalid Content-Length")
    coding = headers.first.get("transfer-encoding")
    if coding is not None:
        if coding.lower() != "chunked":
            return _refused("Unsupported Transfer-Encoding")
        if length is not None:
            return _refused("Transfer-Encoding with Content-Length")
        if version != "HTTP/1.1":
            return _refused(f"Transfer-Encoding in an {version} request")
    return headers

"""Requests as the fake receives them and the plain responses it gives.

Error bodies imitate the two servers behind Flowith, so a client's error
mapping is exercised against realistic input: PostgREST answers
``{"code", "message", "details", "hint"}``, the edge ``{"message"}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit

import attrs

from flowith_proto.request import first_header, json_text

__all__ = [
    "FakeResponse",
    "RecordedRequest",
    "Reject",
    "edge_error",
    "gotrue_error",
    "header",
    "json_response",
    "parse_target",
    "pg_error",
    "text_response",
]

Headers = tuple[tuple[str, str], ...]

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


#: The first value of a header, compared case-insensitively (the client's helper).
header = first_header


@attrs.frozen
class FakeResponse:
    """A complete answer: the server sends it with a ``Content-Length``."""

    status: int
    headers: Headers = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return header(self.headers, name)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@attrs.frozen
class RecordedRequest:
    """One request as it reached the fake; tests assert on these."""

    method: str
    #: The origin-form target exactly as received (still percent-encoded).
    target: str
    #: The path, percent-decoded.
    path: str
    #: The query's ``key=value`` pairs in order, percent-decoded.
    query: tuple[tuple[str, str], ...]
    headers: Headers
    body: bytes
    #: The unix time the server passed with the request.
    now: float

    def header(self, name: str) -> str | None:
        return header(self.headers, name)

    def param(self, name: str) -> str | None:
        """The first query value named ``name``."""
        return next((value for key, value in self.query if key == name), None)

    def json(self) -> Any:
        return json.loads(self.body)


def parse_target(target: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Path and query pairs of a request target.

    Split on ``&`` and then on the first ``=`` *before* percent-decoding, as
    PostgREST does, so an encoded ``%26`` inside a value stays part of it.
    """
    if target.startswith(("http://", "https://")):
        parts = urlsplit(target)
        path, query = parts.path or "/", parts.query
    else:
        path, _, query = target.partition("?")
        path = path.partition("#")[0]
        query = query.partition("#")[0]
    pairs = []
    for part in query.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append((unquote_plus(key), unquote_plus(value)))
    return unquote(path), tuple(pairs)


def json_response(
    status: int, payload: Any, headers: Sequence[tuple[str, str]] = ()
) -> FakeResponse:
    body = json_text(payload).encode("utf-8")  # as JSON.stringify: a lone surrogate escaped
    return FakeResponse(status, (("content-type", JSON_CONTENT_TYPE), *headers), body)


def text_response(status: int, text: str, headers: Sequence[tuple[str, str]] = ()) -> FakeResponse:
    body = text.encode("utf-8")
    return FakeResponse(status, (("content-type", "text/plain; charset=utf-8"), *headers), body)


def edge_error(status: int, message: str) -> FakeResponse:
    return json_response(status, {"message": message})


def gotrue_error(
    request: RecordedRequest, status: int, error_code: str, message: str
) -> FakeResponse:
    """A GoTrue error. A request that names API version ``2024-01-01`` or
    later (``X-Supabase-Api-Version``, as supabase-js sends it) gets
    ``{"code": "<error_code>", "message"}`` and the version echoed back;
    any other gets the original ``{"code": <status>, "error_code", "msg"}``."""
    version = request.header("x-supabase-api-version") or ""
    if version >= "2024-01-01" and _is_date(version):
        return json_response(
            status,
            {"code": error_code, "message": message},
            [("x-supabase-api-version", "2024-01-01")],
        )
    return json_response(status, {"code": status, "error_code": error_code, "msg": message})


def _is_date(text: str) -> bool:
    parts = text.split("-")
    return len(parts) == 3 and all(p.isdigit() for p in parts) and len(text) == 10


def pg_error(
    status: int, code: str, message: str, details: str | None = None, hint: str | None = None
) -> FakeResponse:
    return json_response(
        status, {"code": code, "details": details, "hint": hint, "message": message}
    )


class Reject(Exception):
    """Raised inside a handler to answer with ``response`` instead."""

    def __init__(self, response: FakeResponse) -> None:
        super().__init__(response.status)
        self.response = response

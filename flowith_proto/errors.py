"""The exception hierarchy, and the one mapping from an HTTP answer to it.

Every error the library raises is a :class:`FlowithError`. HTTP failures are
:class:`APIError` subclasses chosen by status code (and, for credits, by body),
so callers can catch by meaning: ``except RateLimitError as e: e.retry_after_s``.
Messages quote at most a short excerpt of the server's body, on one line (see
:func:`one_line`), and never a credential: the adapters hand the secrets to
:func:`redact` before anything is formatted.
"""

from __future__ import annotations

import builtins
import functools
import html
import json
import re
import reprlib
import urllib.parse
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from flowith_proto.models import GenerationOutput

__all__ = [
    "LONGEST_RETRY_AFTER",
    "APIError",
    "AuthenticationError",
    "ClientStateError",
    "ConnectionFailedError",
    "ConversationBusyError",
    "EventTooLargeError",
    "FileUploadError",
    "FlowithError",
    "GenerationError",
    "InsufficientCreditsError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ResponseDecodeError",
    "SecretText",
    "Secrets",
    "TimeoutError",
    "ValidationError",
    "drop_frames",
    "error_chain",
    "error_from_response",
    "excerpt",
    "hide_secrets_of",
    "interrupt_in",
    "is_expired_token_error",
    "is_token_expired",
    "live_secrets",
    "mask_secrets",
    "masked_headers",
    "one_line",
    "parse_retry_after",
    "raise_interrupt_in",
    "redact",
    "redact_chain",
    "retry_after_seconds",
    "rewrap",
    "scrub",
    "undecodable_body",
    "url_secrets",
]

#: The most of a server's words an error's message quotes (``.body`` keeps them all).
_BODY_EXCERPT = 400


class FlowithError(Exception):
    """Base class of every error raised by this library (but a replay's
    :class:`~flowith_proto.cassette.CassetteMismatch`, a test's failed expectation).

    Its message is cleared of whatever looks like a credential (see
    :func:`redact`): messages quote what callers and servers gave, a download's
    URL with its password or signed token, say.
    """

    #: What a text generation had received when it failed this way (its stream's text
    #: and reasoning, with its ``node_id``), so that nothing received is lost; ``None``
    #: for any other call, or when nothing came.
    partial_output: GenerationOutput | None = None

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(arg, ()) if isinstance(arg, str) else arg for arg in args))


class ClientStateError(FlowithError, RuntimeError):
    """The client cannot do this now: it is closed (a closed client is not
    reopened), already open in an ``async with`` block, or belongs to another event
    loop; or a run closed before its end was asked for its result. A mistake in the
    calling code rather than a failure of the service; also a :class:`RuntimeError`,
    as httpx's for a closed client."""


class APIError(FlowithError):
    """The server answered with an error status (``status_code``), or an answer
    the client cannot use. ``status_code`` is ``None`` when no HTTP status is
    involved (for example a missing token detected before any request).

    The second positional argument of this class, :class:`RateLimitError` and
    :class:`ValidationError` is the one the original client's took
    (``status_code``, ``retry_after_s``, ``details``), so code that builds them,
    in tests say, carries over.
    """

    #: The request the server answered, as ``"POST /rest/v1/flow_node"`` (also in the
    #: message): a call such as ``generate()`` sends several. ``None`` without one.
    endpoint: str | None = None
    #: For a 429 (:class:`RateLimitError`) or a 503: the wait in seconds the server
    #: asked for in ``Retry-After``, or ``None`` (see :class:`RateLimitError`).
    retry_after_s: float | None = None

    def __init__(
        self, message: str = "", status_code: int | None = None, *, body: Any = None
    ) -> None:
        # The message may be left out, as the original client's AuthenticationError
        # and FileUploadError (plain exceptions) allowed: AuthenticationError() in a test.
        super().__init__(message)
        self.status_code = status_code
        #: The decoded JSON body (or the text) of the error answer, if any.
        self.body = body


class AuthenticationError(APIError):
    """The token is missing, malformed, expired or rejected (HTTP 401), or the auth
    server refused a refresh (its 400, 401, 403 or 422)."""


class PermissionDeniedError(APIError):
    """HTTP 403: the token is valid but may not do this (often row-level security)."""


class NotFoundError(APIError):
    """HTTP 404, or a row that was asked for by id and does not exist."""


class InsufficientCreditsError(APIError):
    """HTTP 402, or a body saying the account has run out of credits."""


class RateLimitError(APIError):
    """HTTP 429. ``retry_after_s`` is the server's ``Retry-After`` in seconds
    (from either the delta-seconds or the HTTP-date form), or ``None``."""

    def __init__(
        self,
        message: str,
        retry_after_s: float | None = None,
        *,
        status_code: int | None = 429,
        body: Any = None,
    ) -> None:
        super().__init__(message, status_code=status_code, body=body)
        self.retry_after_s = retry_after_s


class ValidationError(APIError, ValueError):
    """HTTP 422 (``status_code`` 422, the default, as the original client's), or
    arguments the client refuses before sending anything (``status_code`` ``None``).
    ``details`` lists what was wrong. Also a :class:`ValueError`, as an invalid
    argument is to the standard library."""

    def __init__(
        self,
        message: str,
        details: list[Any] | None = None,
        *,
        status_code: int | None = 422,
        body: Any = None,
    ) -> None:
        super().__init__(message, status_code=status_code, body=body)
        self.details: list[Any] = details if details is not None else []


class FileUploadError(APIError):
    """``/file/store`` refused the upload, or the file changed size while it was
    sent (``status_code`` ``None``). (A file that cannot be read is the
    :class:`OSError` of reading it, raised before anything is sent.)"""


class ResponseDecodeError(APIError):
    """A successful status with a body that is not the JSON shape expected, or an
    answer whose body could not be decoded at all (a corrupt gzip body): the server
    would send it again, so it is not retried.

    Its message and ``.body`` are redacted like an error answer's: the body may
    hold tokens the server just issued (a refresh answer of the wrong shape). The
    tokens the client holds are masked by :func:`scrub` on the error's way out.
    """

    def __init__(self, message: str, status_code: int | None = None, *, body: Any = None) -> None:
        try:
            kept = _redact_values(body, [])
        except RecursionError:  # legal JSON, nested deeper than Python recurses
            kept = _TOO_DEEP
        super().__init__(message, status_code, body=kept)  # FlowithError redacts it


class ConnectionFailedError(FlowithError):
    """The transport could not reach the server or lost the connection.

    ``request_sent`` tells whether any byte of the request may have reached the
    server; only when it is ``False`` can a non-idempotent request be retried.
    """

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        # Transports quote what they were given (a proxy URL with its password, a
        # header value they refused): FlowithError redacts the message.
        super().__init__(message)
        self.request_sent = request_sent


class TimeoutError(FlowithError, builtins.TimeoutError):
    """A request, a generation or a stream outlived its deadline.

    It is also a built-in :class:`TimeoutError`, so ``except TimeoutError``
    written against the standard library (or anyio) still catches it.
    ``request_sent`` is ``False`` when the request provably never left (it
    timed out connecting, or waiting for a connection), as on
    :class:`ConnectionFailedError`: then even a write may be retried.
    ``deadline_passed`` is ``True`` when the caller's deadline (a generation's
    ``timeout``, say), not the request's own limit, cut the request short.
    """

    def __init__(
        self, message: str = "", *, request_sent: bool = True, deadline_passed: bool = False
    ) -> None:
        super().__init__(message)
        self.request_sent = request_sent
        self.deadline_passed = deadline_passed


_Wrapping = TypeVar("_Wrapping", bound=APIError)


def rewrap(source: APIError, kind: type[_Wrapping], message: str) -> _Wrapping:
    """An error of ``kind`` raised in place of ``source`` (a refused upload's
    :class:`FileUploadError` for the 503 that refused it, say), about the same
    answer: ``source``'s ``status_code``, ``body``, ``endpoint`` and
    ``retry_after_s`` carry over, and its ``details`` and ``partial_output`` if
    it has them. Built field by field at each site, the wrapper lost the ones
    nobody listed (an upload's 503 said neither its request nor its wait)."""
    error = kind(message, status_code=source.status_code, body=source.body)
    for name in ("endpoint", "retry_after_s", "partial_output"):
        value = getattr(source, name)
        if value is not None:
            setattr(error, name, value)
    if isinstance(error, ValidationError) and isinstance(source, ValidationError):
        error.details = list(source.details)
    return error


def waited_for_turn(limit: float, at_once: int) -> TimeoutError:
    """The error of a request whose ``limit`` passed while it waited for one of the
    client's ``at_once`` turns: never sent, and cured on this side."""
    return TimeoutError(
        f"request was not sent: it waited {limit:.3g}s for its turn (the client sends "
        f"{at_once} requests at once on its own connections; bring an http_client with "
        "the limits you want to send more)",
        request_sent=False,
    )


def redirect_port_out_of_range() -> ConnectionFailedError:
    """The error of a redirect to a port no socket has, on every transport (a URL the
    client is given is checked before any request)."""
    return ConnectionFailedError(
        "cannot follow the redirect: it leads to a port outside 0-65535", request_sent=True
    )


def undecodable_body(
    detail: object, status: int | None = None, endpoint: str = ""
) -> ResponseDecodeError:
    """The error for an answer whose body a transport could not decode (a corrupt gzip
    body, an encoding it lacks), as each transport's own exception describes it: it
    names the answer's ``status`` and ``endpoint`` as the error of any other answer."""
    answered = f"HTTP {status}" if status is not None else "the answer"
    if endpoint:
        answered += f" from {endpoint}"
    said = one_line(str(detail))
    error = ResponseDecodeError(f"{answered}: its body could not be decoded: {said}", status)
    if endpoint:
        error.endpoint = endpoint
    return error


def masked_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` with every credential header's value replaced by ``[REDACTED]``."""
    return [
        (name, _REDACTED if CREDENTIAL_HEADER.search(name) else value) for name, value in headers
    ]


class GenerationError(FlowithError):
    """The server reported that a generation failed (defect D4 of the old
    client returned the error text as if it were the result)."""

    def __init__(
        self,
        message: str,
        *,
        status: str = "",
        error: str = "",
        error_type: str = "",
        node_id: str = "",
    ) -> None:
        # The server's reason may quote a credential (a provider's error echoing a
        # key): FlowithError redacts the message, and these fields are redacted here.
        super().__init__(message)
        self.status = status
        self.error = redact(error, ())
        self.error_type = redact(error_type, ())
        self.node_id = node_id


class ConversationBusyError(FlowithError):
    """A turn of the conversation is still in progress: turns hang one under
    another, so the next one waits for the last one's answer (await it first)."""


class EventTooLargeError(FlowithError):
    """A server-sent event (or one line of it) grew past ``max_event_size``.

    The decoder drops that event, reports it with this error and goes on; the
    events before and after it are kept.
    """

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling (and copying) rebuilds an exception from its args alone: these
        # keyword-only arguments go with the class.
        rebuild = functools.partial(type(self), size=self.size, limit=self.limit)
        return (rebuild, self.args, self.__dict__)


#: What names a credential, in a header name or a JSON key. Not plain ``auth`` in
#: keys: an ``author`` is no secret; nor a ``token_type`` ("bearer") or ``tokenizer``.
CREDENTIAL_NAME = (
    r"token(?!_?type|izer)|secret|passw(?:or)?d|api[_-]?key|cookie|authori[sz]ation|credential"
    r"|signature"
)
CREDENTIAL_KEY = re.compile(CREDENTIAL_NAME, re.IGNORECASE)
#: A header whose value is a credential: named like one, or any ``*auth*`` header.
CREDENTIAL_HEADER = re.compile(rf"{CREDENTIAL_NAME}|auth", re.IGNORECASE)
#: A credential-named JSON string field in text that is not JSON as a whole (a body
#: cut short, a stream chunk): ``"refresh_token":"..."``; group 2 is the value and
#: group 3 its closing quote, missing where the text ends inside the value.
CREDENTIAL_FIELD = re.compile(
    rf'("(?=[^"\\]*?(?:{CREDENTIAL_NAME}))[^"\\]*"\s*:\s*")((?:[^"\\]|\\.)*)("|\Z)',
    re.IGNORECASE,
)
#: The same field in JSON escaped inside a JSON string: ``\"access_token\":\"...\"``.
ESCAPED_CREDENTIAL_FIELD = re.compile(
    rf'(\\"(?=[^"\\]*?(?:{CREDENTIAL_NAME}))[^"\\]*\\"\s*:\s*\\")((?:[^"\\]|\\[^"])*?)\\"',
    re.IGNORECASE,
)
#: The same field in a Python repr (``{'refresh_token': '...'}``): how the library's
#: own messages and log lines quote a value it could not use.
REPR_CREDENTIAL_FIELD = re.compile(
    rf"('(?=[^'\\]*?(?:{CREDENTIAL_NAME}))[^'\\]*'\s*:\s*')((?:[^'\\]|\\.)*)('|\Z)",
    re.IGNORECASE,
)
#: ``Bearer <credential>`` wherever it appears (a header echoed in a body, a log line),
#: and ``Basic <credential>`` (a URL's user and password, as sent). The credential
#: holds a digit or a punctuation mark, or twice a lower-case letter before a capital
#: (base64 of letters: ``dXNlcjpwYXNz``), or is long: a bearer in prose ("the ring
#: bearer delivered it", "Basic authentication", "Basic JavaScript") is followed by a
#: word, with one hump at most.
BEARER = re.compile(
    r"(\b(?:Bearer|Basic)[ \t]+)"
    r"(?:(?=[\w.~+/=-]*(?:[\d._~+/=-]|(?-i:[a-z][A-Z][a-zA-Z]*[a-z][A-Z])))[\w.~+/=-]{8,}"
    r"|[\w.~+/=-]{20,})",
    re.IGNORECASE,
)
#: The password of a URL's user info (``http://alice:<password>@proxy``); group 2.
#: The user part holds no ``[``, so an IPv6 host (``http://[::1]:80``) is no user.
#: A scheme is read back at most 64 characters from its ``://``, so a pattern tried
#: after each dot of a long run of them reads 64, not the rest of the run; a URL glued
#: to the end of a long word (a hex digest) is still found.
URL_PASSWORD = re.compile(r"([a-zA-Z][\w+.-]{0,63}://[^/?#\s:@'\"\[\]]*:)([^/?#\s'\"]+)(?=@)")
#: A URL, up to the first character no URL holds raw.
_URL = re.compile(r"[a-zA-Z][\w+.-]{0,63}://[^\s'\"<>]+")
#: A query or fragment parameter: group 1 is ``name=``, group 2 its value (not a
#: PostgREST filter's, ``eq.<value>``).
_URL_PARAMETER = re.compile(
    r"(?<=[?&#;])([\w.~%-]+=)"
    r"(?!(?:eq|neq|gt|gte|lt|lte|like|ilike|in|is|not|cs|cd|ov|fts)\.)"
    r"([^&#]+)"
)
#: A parameter name (with its ``=``) that names a credential: one holding what
#: :data:`CREDENTIAL_NAME` looks for (``X-Amz-Signature``, ``x-oss-security-token``,
#: ``q-signature``), OAuth's ``code``, or a key, signature or auth by its short name
#: (``key``, ``auth_key``, ``sig``, ``auth``, Akamai's ``hdnts``, ``hmac``). A name
#: listed exactly missed every signed-URL scheme it did not list. Read once the name
#: is found, so a long one is read once.
_CREDENTIAL_PARAMETER = re.compile(
    rf"{CREDENTIAL_NAME}|^(?:[\w.~%-]*[_-])?(?:key|sig|auth)=|^(?:code|hdnts|hmac)=",
    re.IGNORECASE,
)


def _mask_parameters(url: str, mask: str) -> str:
    """``url`` with the value of each credential-named parameter replaced by ``mask``."""

    def masked(parameter: re.Match[str]) -> str:
        name = parameter[1]
        return name + mask if _CREDENTIAL_PARAMETER.search(name) else parameter[0]

    return _URL_PARAMETER.sub(masked, url)


def mask_url_credentials(text: str, mask: str) -> str:
    """``text`` with the password of every URL in it, and its credential-named
    query or fragment parameters, replaced by ``mask``. Only inside URLs: a
    ``token=`` in prose or code is left alone."""
    if "://" not in text:
        return text
    text = URL_PASSWORD.sub(rf"\1{mask}", text)
    return _URL.sub(lambda url: _mask_parameters(url.group(), mask), text)


#: A JWT: group ``token``, its last part (the signature) maybe cut short; group
#: ``before`` is what precedes it in its run of token characters, kept (a JWT glued
#: to base64 data). Tried once per run of token characters, at its start, and only
#: if two dotted parts follow the run: tried at each "eyJ" of a long run, each try
#: reading to the run's end, masking a 1 MB body of them took minutes.
JWT = re.compile(
    r"(?<![\w-])(?=[\w-]*\.[\w-]{4,}\.[\w-])"
    r"(?P<before>[\w-]*?)(?P<token>eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]+)"
)
#: A JWT as a server may echo it escaped: its dots as JSON's ``\u002e`` or a URL's
#: ``%2E`` (its other characters need no escaping). A token the client held before
#: a refresh is masked by its shape alone (see ``ClientState``), so the shape is
#: read escaped too; as :data:`JWT`, a part is letters, digits, ``-`` and ``_`` only.
#: It starts where a token can: not inside a run of token characters (after one
#: of them, or an escape), so a long run holding many "eyJ" is read once.
_DOT = r"(?:%2[Ee]|\\u002[Ee])"
_TOKEN_START = r"(?:(?<![\w-])|(?<=%[0-9A-Fa-f]{2})|(?<=\\u[0-9A-Fa-f]{4}))"
_ESCAPED_JWT = re.compile(
    rf"{_TOKEN_START}eyJ[\w-]{{4,}}{_DOT}[\w-]{{4,}}{_DOT}[\w-]{{4,}}"
)
_REDACTED = "[REDACTED]"
#: A shorter secret is not hidden: it would hide ordinary words and numbers.
MIN_SECRET_LENGTH = 8


#: How a character of a secret may be written in a body or a URL: JSON's ``\u005f``
#: and ``\/``, or a percent-escape (``%2F``).
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\(/)|%([0-9a-fA-F]{2})")


def _unescaped(match: re.Match[str]) -> str:
    code, slash, byte = match.groups()
    return slash or chr(int(code or byte, 16))


def _written_any_way(secret: str) -> re.Pattern[str]:
    """``secret`` with any of its characters escaped (see :data:`_ESCAPE`)."""

    def hex_digits(code: int, width: int) -> str:
        return "".join(
            f"[{digit}{digit.upper()}]" if digit.isalpha() else digit
            for digit in f"{code:0{width}x}"
        )

    parts = []
    for char in secret:
        code = ord(char)
        ways = [re.escape(char)]
        if code <= 0xFFFF:
            ways.append(r"\\u" + hex_digits(code, 4))
        if char == "/":
            ways.append(r"\\/")
        if code < 0x80:
            ways.append("%" + hex_digits(code, 2))
        parts.append(f"(?:{'|'.join(ways)})")
    return re.compile("".join(parts))


def mask_secrets(text: str, secrets: Iterable[str], mask: str) -> str:
    """``text`` with each of ``secrets`` replaced by ``mask``, found as written or
    escaped (JSON's ``\\u005f`` or ``\\/``, a URL's ``%2F``): a server quoting a
    cookie inside JSON text, or in a URL it built, escapes it. ``secrets`` is
    taken as given: the caller drops the trivial ones and orders them (longest
    first, so that one inside another is masked whole)."""
    secrets = [secret for secret in secrets if secret]  # an empty one is everywhere
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, mask)
    if "\\u" in text or "\\/" in text or "%" in text:
        decoded = _ESCAPE.sub(_unescaped, text)
        if decoded != text:
            for secret in secrets:
                if secret in decoded:
                    text = _written_any_way(secret).sub(mask, text)
    return text


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-trivial secret in it replaced by ``[REDACTED]``, and
    what looks like a credential the client never held too: JWTs, the values of
    credential-named fields (``"refresh_token":"..."``, escaped or not) and URL
    parameters (``?access_token=...``, an OAuth ``code``), a URL's password and
    the credential after ``Bearer`` or ``Basic``; a secret is found escaped too
    (see :func:`mask_secrets`). For error messages and bodies: a token the
    server just issued, or one the caller passed in, is masked before anyone
    learns it."""
    text = mask_secrets(
        text, [secret for secret in secrets if len(secret) >= MIN_SECRET_LENGTH], _REDACTED
    )
    if "eyJ" in text:
        text = JWT.sub(rf"\g<before>{_REDACTED}", text)
        if "%2" in text or "\\u002" in text:  # an escaped dot, if any
            text = _ESCAPED_JWT.sub(_REDACTED, text)
    text = CREDENTIAL_FIELD.sub(rf"\1{_REDACTED}\3", text)
    if "'" in text:
        text = REPR_CREDENTIAL_FIELD.sub(rf"\1{_REDACTED}\3", text)
    text = ESCAPED_CREDENTIAL_FIELD.sub(rf'\1{_REDACTED}\\"', text)
    text = mask_url_credentials(text, _REDACTED)
    return BEARER.sub(rf"\1{_REDACTED}", text)


#: The password of a URL's user info wherever ``//`` (or ``\\``, as browsers read it)
#: starts an authority, with or without a scheme before it; group 2.
_AUTHORITY_PASSWORD = re.compile(r"([/\\]{2}[^/\\?#\s:@'\"\[\]]*:)([^/\\?#\s'\"@]+)(?=@)")


#: The password of a URL's user info after its scheme and fewer than two slashes
#: (``https:/user:password@host``, which a browser reads as ``https://``); group 2.
_SCHEME_PASSWORD = re.compile(
    r"^([A-Za-z][\w+.-]*:[/\\]?[^/\\?#\s:@'\"\[\]]*:)([^/\\?#\s'\"@]+)(?=@)"
)


def url_secrets(url: str) -> list[str]:
    """The credentials ``url`` carries: its password and the values of its
    credential-named parameters, as written and percent-decoded. An answer may
    quote them outside any URL (S3's ``SignatureDoesNotMatch`` spells out the
    signature and the security token it was sent), where only a secret known
    beforehand is found."""
    found: list[str] = []
    password = _AUTHORITY_PASSWORD.search(url) or _SCHEME_PASSWORD.search(url)
    if password is not None:
        found.append(password[2])
    for parameter in _URL_PARAMETER.finditer(url):
        if _CREDENTIAL_PARAMETER.search(parameter[1]):
            found.append(parameter[2])
    decoded = [urllib.parse.unquote(value) for value in found]
    return list(dict.fromkeys(found + decoded))


def mask_url(url: str, mask: str = _REDACTED) -> str:
    """``url``, known to be one whatever its form (a ``Location`` such as
    ``https:file?X-Amz-Signature=...``, ``//user:password@host/file`` or
    ``https:\\user:password@host\\file``, which :func:`mask_url_credentials` does
    not take for a URL in text), with its password and credential-named parameters
    replaced by ``mask``."""
    url = _AUTHORITY_PASSWORD.sub(rf"\1{mask}", mask_url_credentials(url, mask))
    url = _SCHEME_PASSWORD.sub(rf"\1{mask}", url)
    return _mask_parameters(url, mask)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from ``now`` (unix time), or ``None``.

    Accepts delta-seconds (``"120"``) and an HTTP-date; a date needs ``now``
    because the core has no clock. Negative waits become ``0.0``; a wait longer
    than :data:`LONGEST_RETRY_AFTER` (a week), infinite or NaN is none.
    """
    seconds = retry_after_seconds(value, now=now)
    return seconds if seconds is None or seconds <= LONGEST_RETRY_AFTER else None


#: A server asking to wait longer than this gives the caller no usable advice (a
#: client that slept ``1e300`` seconds would overflow its clock): ``retry_after_s``
#: is ``None``. The request is not retried either: the server asked for a long wait.
LONGEST_RETRY_AFTER = 7 * 24 * 3600.0


#: Delta-seconds as servers write them: HTTP's digits, and also a sign, a fraction or
#: an exponent (``"1.5"``, ``"-1"``, ``"1e309"``), in ASCII. Not the rest of what
#: ``float()`` reads: ``"1_0"``, ``"inf"``, ``"nan"``, digits of other scripts.
#: (``\d+(?:\.\d*)?``, not ``\d+\.?\d*``: the latter split a run of digits every
#: way there is before failing on what follows it, and 16 KB took 7 s.)
_RETRY_AFTER_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """The wait ``Retry-After`` asks for, however long (``inf`` for ``1e309``), or
    ``None`` when it asks for none that can be read (absent, not a number or a date:
    see :data:`_RETRY_AFTER_NUMBER`). The retry decision needs the long ones too: a
    server asking for a week is not retried at once."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if _RETRY_AFTER_NUMBER.fullmatch(value):
        return max(float(value), 0.0)
    if now is None:
        return None
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            return None
        # (A year, second or zone of twenty digits is an OverflowError in there.)
        return max(when.timestamp() - now, 0.0)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _decode_body(body: bytes, secrets: list[str]) -> Any:
    """The body as JSON (else text), every secret in it redacted: the error keeps
    it as ``.body``, and its message quotes it."""
    text = redact(body.decode("utf-8", errors="replace"), secrets)
    try:
        decoded = json.loads(text)
        return _redact_values(decoded, secrets)
    except (ValueError, RecursionError):  # not JSON, or nested too deeply
        return text


#: What an error keeps of a body nested too deeply to walk.
_TOO_DEEP = "[a JSON value nested too deeply to keep]"


def _redact_values(value: Any, secrets: list[str]) -> Any:
    """``value`` with secrets redacted inside its strings (a secret JSON-escaped
    in the text, which the text's redaction missed, is whole here)."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, list):
        return [_redact_values(item, secrets) for item in value]
    if isinstance(value, dict):
        return {
            key: _REDACTED
            if isinstance(item, str) and item and CREDENTIAL_KEY.search(str(key))
            else _redact_values(item, secrets)
            for key, item in value.items()
        }
    return value


class SecretText(str):
    """A credential, as text whose repr names none of it: a refresh's frames hold
    the refresh token, and a traceback shown with its variables prints them."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'[REDACTED]'"


class Secrets(tuple[str, ...]):
    """Credentials held together, as a tuple whose repr names none.

    A traceback shown with its frames' variables (``pytest -l``, an error reporter's
    "locals") prints their reprs: the frame raising an :class:`APIError` holds every
    credential of the call in one of these.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{len(self)} secrets hidden>"


class HoldsSecrets(Protocol):
    @property
    def secrets(self) -> Sequence[str]: ...


#: What live clients hold (their states, which are not hashable: by id), read each
#: time, so that a refreshed token is hidden as soon as it is held.
_HOLDERS: weakref.WeakValueDictionary[int, HoldsSecrets] = weakref.WeakValueDictionary()


def hide_secrets_of(holder: HoldsSecrets) -> None:
    """Mask ``holder.secrets`` in the library's log records and excerpts for as long as
    it lives (a client registers its state)."""
    _HOLDERS[id(holder)] = holder


def live_secrets() -> list[str]:
    """The secrets of every live holder (see :func:`hide_secrets_of`)."""
    # valuerefs() copies the references in one step: another thread may register a
    # client meanwhile (iterating the dictionary itself would then raise).
    holders = [ref() for ref in _HOLDERS.valuerefs()]
    return [secret for holder in holders if holder is not None for secret in holder.secrets]


#: What of a long text an excerpt masks: its head and its tail, of which it shows the
#: ends (far longer than any credential, so none shown is cut where it was masked).
_MASKED_SPAN = 8192


def _masked_ends(text: str) -> str:
    if len(text) > 2 * _MASKED_SPAN:  # megabytes (a data URL) need not be searched
        text = text[:_MASKED_SPAN] + text[-_MASKED_SPAN:]
    return redact(text, live_secrets())


class _MaskedRepr(reprlib.Repr):
    """A repr whose strings, and other reprs, are masked before they are cut: cut
    first, a credential would keep a part no longer shaped like one (the tail of a
    JWT's signature)."""

    def repr_str(self, x: str, level: int) -> str:
        return super().repr_str(_masked_ends(x), level)

    def repr_instance(self, x: Any, level: int) -> str:
        try:
            text = repr(x)
        except Exception:  # a broken __repr__: reprlib's own placeholder
            return super().repr_instance(x, level)
        text = _masked_ends(text)
        if len(text) > self.maxother:
            head = max(0, (self.maxother - 3) // 2)
            tail = max(0, self.maxother - 3 - head)
            text = text[:head] + "..." + text[len(text) - tail :]
        return text


#: A few levels and items of a value, for :func:`excerpt`.
_SHORT_REPR = _MaskedRepr()
_SHORT_REPR.maxlevel = 3
_SHORT_REPR.maxdict = _SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = 4
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 60


def excerpt(value: Any, limit: int = 80) -> str:
    """A short repr of ``value`` for a message or a log line: a value nested deeper
    than Python recurses, or megabytes long (a data URL), costs a short line. Its
    strings are masked (see :func:`redact`) before they are shortened."""
    try:
        text = _SHORT_REPR.repr(value)
    except ValueError:  # an int past sys.get_int_max_str_digits()
        return f"<{type(value).__name__} too long to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def scrub(error: FlowithError, secrets: Iterable[str]) -> None:
    """Mask ``secrets`` in ``error``'s message and ``.body``, in place, and in what
    the errors it was raised from say (see :func:`redact_chain`).

    Errors raised inside the core (a row of the wrong shape, quoted in the message
    and kept as the body) are made where the client's tokens are not known; the
    client scrubs each one with them on its way out, as error answers already are.
    """
    held = [secret for secret in secrets if len(secret) >= MIN_SECRET_LENGTH]
    redact_chain(error, held)
    for current in error_chain(error):  # a traceback shows each
        if isinstance(current, APIError) and current.body is not None:
            try:
                current.body = _redact_values(current.body, held)
            except RecursionError:
                current.body = _TOO_DEEP
        if isinstance(current, APIError) and current.endpoint:
            current.endpoint = redact(current.endpoint, held)
        if isinstance(current, GenerationError):
            current.error = redact(current.error, held)
            current.error_type = redact(current.error_type, held)


def redact_chain(error: BaseException, secrets: Iterable[str] = ()) -> None:
    """Redact (see :func:`redact`), in place, what ``error`` and each error it was
    raised from say: their text arguments and attributes (the ``message`` that
    aiohttp's errors print, the line its parser refused). A traceback or
    ``logging.exception`` prints every error of the chain, and a transport's own
    quote what they refused: an answer's header line, a ``Location`` with its
    signed URL."""
    held = list(secrets)
    for current in error_chain(error):
        current.args = tuple(_redacted(arg, held) for arg in current.args)
        kept = getattr(current, "__dict__", {})
        for name, value in list(kept.items()):
            if isinstance(value, (str, bytes, bytearray)):
                kept[name] = _redacted(value, held)


def drop_frames(error: BaseException) -> None:
    """Let go of the tracebacks of ``error`` and of the errors it was raised from.

    For a transport's errors, whose frames hold what was sent as variables (the
    headers with the token, a proxy URL with its password): a traceback shown with
    its variables (``pytest -l``, an error reporter's "locals") prints them. The
    errors themselves, their types and messages, stay.
    """
    for current in error_chain(error):
        current.__traceback__ = None


def _redacted(value: object, secrets: list[str]) -> object:
    """``value`` redacted if it is text or bytes (a parser quotes the raw line)."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, (bytes, bytearray)):  # latin-1: every byte maps back
        return type(value)(redact(value.decode("latin-1"), secrets).encode("latin-1"))
    return value


def interrupt_in(error: BaseException) -> BaseException | None:
    """The ``KeyboardInterrupt`` or ``SystemExit`` in an exception group (nested or
    not), if any: trio raises Ctrl-C in whichever task runs, and a task group
    wraps it."""
    for inner in getattr(error, "exceptions", None) or ():
        if isinstance(inner, (KeyboardInterrupt, SystemExit)):
            return inner
        found = interrupt_in(inner)
        if found is not None:
            return found
    return None


def raise_interrupt_in(error: BaseException) -> None:
    """Raise the interrupt :func:`interrupt_in` finds in ``error``, unwrapped, so that
    an ``except KeyboardInterrupt`` catches it; return when there is none."""
    interrupt = interrupt_in(error)
    if interrupt is not None:
        raise interrupt from None


def error_chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the errors it was raised from (each one's cause, else the error
    being handled when it was raised), each once."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


#: The start of an HTML page (a proxy's or a gateway's error page, a sign-in page).
#: One lazy comment covers any run of comments: repeated, the comments of
#: "<!----><!---->..." could be grouped 2^k ways, each tried (24 took 2 s).
_HTML_PAGE = re.compile(
    r"\ufeff?\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)?(?:<!doctype\s+html|<html\b|<head\b|<body\b)",
    re.IGNORECASE | re.DOTALL,
)
#: A page's title, between the first opening tag and the closing tag after it, each
#: found by one forward search: one pattern (``<title>(.*?)</title>``, or even
#: ``<title\b[^>]*>``) read to the end from each "<title" of a page that closes none,
#: or whose tags never end (42 KB of them took a second).
_OPEN_TITLE = re.compile(r"<title\b", re.IGNORECASE)
_CLOSE_TITLE = re.compile(r"</title\s*>", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def one_line(text: str, limit: int = _BODY_EXCERPT) -> str:
    """``text`` (a server's words) as an error message quotes it: on one line, its
    runs of white space (line breaks, a traceback's indentation) made one space; an
    HTML page said by its ``<title>`` ("502 Bad Gateway (an HTML page)"), or as
    "an HTML page" without one; cut to ``limit`` characters, ending in "...".
    A log line of the message is then one line, whatever the server sent. The
    secrets of live clients are masked (see :func:`redact`) before anything is cut."""
    held = live_secrets()
    text = redact(text, held)
    if _HTML_PAGE.match(text):
        opened = _OPEN_TITLE.search(text)
        start = text.find(">", opened.end()) + 1 if opened else 0  # past the tag's end
        closed = _CLOSE_TITLE.search(text, start) if start else None
        # Unescaped, the title may spell out what its entities hid.
        title = text[start : closed.start()] if closed else ""
        title = redact(html.unescape(title), held)
        title = _WHITESPACE.sub(" ", title).strip()
        text = f"{title} (an HTML page)" if title else "an HTML page"
    text = _WHITESPACE.sub(" ", text).strip()
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


def _server_message(decoded: Any) -> str:
    """The human part of a PostgREST / GoTrue / edge error body, on one line."""
    if isinstance(decoded, Mapping):
        for key in ("message", "msg", "error_description", "error", "detail"):
            value = decoded.get(key)
            if isinstance(value, str) and value:
                return one_line(value)
        return one_line(json.dumps(decoded, ensure_ascii=False))
    if isinstance(decoded, str):
        return one_line(decoded)
    return one_line(json.dumps(decoded, ensure_ascii=False))


def _mentions_insufficient_credits(decoded: Any) -> bool:
    text = decoded if isinstance(decoded, str) else json.dumps(decoded, ensure_ascii=False)
    lowered = text.lower()
    return "insufficient credits" in lowered or "insufficient_credits" in lowered


def is_token_expired(status: int, body: bytes) -> bool:
    """True when the answer says the access token has expired: a 401 (or 403)
    whose message says "expired", as PostgREST's ``JWT expired`` (PGRST301 /
    PGRST303) and GoTrue's ``bad_jwt`` "token is expired" do. Those codes alone
    are not enough: they also name a bad signature or a wrong audience, which a
    new token would not cure.

    A bare 401 is not enough: a refresh token works only once, so the client
    spends it only on evidence (a token past its ``exp`` is renewed before
    use anyway). A wrongly configured edge auth scheme, say, must not rotate
    the user's tokens on every call.
    """
    return status >= 400 and _says_expired(status, _decode_body(body, []))


def is_expired_token_error(error: APIError) -> bool:
    """:func:`is_token_expired` for an error already raised (its decoded body)."""
    return error.status_code is not None and _says_expired(error.status_code, error.body)


def _says_expired(status: int, decoded: Any) -> bool:
    if isinstance(decoded, Mapping):
        message = " ".join(
            str(decoded.get(key, "")) for key in ("message", "msg", "error_description", "error")
        )
    else:
        message = str(decoded)
    return status in (401, 403) and _TOKEN_EXPIRED.search(message) is not None


#: What an expired access token's refusal says ("JWT expired", "token is expired",
#: "token has invalid claims: token is expired", "expired token"): "expired" alone
#: ("your subscription has expired") would spend a refresh token for nothing.
_TOKEN_EXPIRED = re.compile(
    r"\b(?:jwt|token)\b.*\bexpired\b|\bexpired\b.*\b(?:jwt|token)\b", re.IGNORECASE | re.DOTALL
)


def error_from_response(
    status: int,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    *,
    now: float | None = None,
    secrets: Iterable[str] = (),
    endpoint: str = "",
) -> APIError | None:
    """The exception for an HTTP answer, or ``None`` when it is a success (2xx).

    ``headers`` may be a mapping or pairs; names are compared case-insensitively.
    ``now`` (unix seconds) lets an HTTP-date ``Retry-After`` be turned into a wait.
    ``endpoint`` (``"GET /rest/v1/conversation"``) names the request answered, in
    the message and as ``.endpoint``.
    """
    if 200 <= status < 300:
        return None
    held = list(secrets)
    endpoint = redact(endpoint, held)  # a path may carry a token (a signed download URL)
    error = _status_error(status, headers, body, now, held, endpoint)
    if endpoint:
        error.endpoint = endpoint
    return error


def _status_error(
    status: int,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    now: float | None,
    secrets: list[str],
    endpoint: str,
) -> APIError:
    pairs = list(headers.items() if isinstance(headers, Mapping) else headers)
    answered = f"HTTP {status} from {endpoint}" if endpoint else f"HTTP {status}"
    if status < 200:  # a 101 Switching Protocols that no request asked for, passed on
        said = f"{answered}: an interim answer where a final one was due"
        return APIError(said, status_code=status)
    if status < 400:  # not followed: the request carries credentials, the target is unknown
        location = next((v for k, v in pairs if k.lower() == "location"), "")
        if not location:  # a 304 to a request that asked for none, a 3xx without a target
            return APIError(f"{answered} without a Location to follow", status_code=status)
        return APIError(
            f"{answered}: the server redirected to {redact(mask_url(location), secrets)!r}, "
            "which the client does not follow with your credentials",
            status_code=status,
        )
    retry_after_raw = next((v for k, v in pairs if k.lower() == "retry-after"), None)
    decoded = _decode_body(body, secrets)
    # Again: an HTML page's title is unescaped, and may spell out a secret of this request.
    reason = redact(_server_message(decoded), secrets)
    message = f"{answered}: {reason}" if reason else answered
    if status == 402 or (status in (400, 403) and _mentions_insufficient_credits(decoded)):
        return InsufficientCreditsError(message, status_code=status, body=decoded)
    if status == 401:
        return AuthenticationError(message, status_code=status, body=decoded)
    if status == 403:
        return PermissionDeniedError(message, status_code=status, body=decoded)
    if status == 404:
        return NotFoundError(message, status_code=status, body=decoded)
    if status == 422:
        return ValidationError(message, status_code=status, body=decoded, details=[decoded])
    if status == 429:
        return RateLimitError(
            message,
            status_code=status,
            body=decoded,
            retry_after_s=parse_retry_after(retry_after_raw, now=now),
        )
    error = APIError(message, status_code=status, body=decoded)
    if status == 503:  # unavailable, maybe for a while: as a 429, say how long
        error.retry_after_s = parse_retry_after(retry_after_raw, now=now)
    return error

"""The mapping from HTTP answers to exceptions (protocol.md section 6)."""

from __future__ import annotations

import ast
import builtins
import json
import math
import pickle
import traceback
from pathlib import Path
from typing import Any

import pytest

import flowith_proto
from flowith_proto.cassette import Scrubber
from flowith_proto.config import FlowithConfig
from flowith_proto.errors import (
    APIError,
    AuthenticationError,
    ConnectionFailedError,
    FileUploadError,
    FlowithError,
    GenerationError,
    InsufficientCreditsError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseDecodeError,
    TimeoutError,
    ValidationError,
    error_from_response,
    excerpt,
    is_token_expired,
    one_line,
    parse_retry_after,
    redact,
    redact_chain,
    retry_after_seconds,
    scrub,
    url_secrets,
)
from flowith_proto.files import download_request
from flowith_proto.request import Response


def test_success_is_no_error() -> None:
    assert error_from_response(200, {}, b"{}") is None
    assert error_from_response(204, {}, b"") is None


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, AuthenticationError),
        (402, InsufficientCreditsError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, APIError),
        (422, ValidationError),
        (429, RateLimitError),
        (500, APIError),
        (503, APIError),
    ],
)
def test_status_picks_the_exception(status: int, kind: type[APIError]) -> None:
    error = error_from_response(status, {}, b'{"message": "nope"}')
    assert type(error) is kind
    assert error.status_code == status
    assert str(error) == f"HTTP {status}: nope"
    assert isinstance(error, FlowithError)


def test_insufficient_credits_body_wins_over_a_generic_status() -> None:
    error = error_from_response(400, {}, b'{"error": "Insufficient credits for this model"}')
    assert isinstance(error, InsufficientCreditsError)
    assert error.status_code == 400


def test_validation_error_keeps_non_json_body_as_detail() -> None:
    error = error_from_response(422, {}, b"bad <html>")
    assert isinstance(error, ValidationError)
    assert error.details == ["bad <html>"]


def test_validation_error_details_hold_the_json_body() -> None:
    body = {"code": "22P02", "message": "invalid input syntax for type uuid"}
    error = error_from_response(422, {}, json.dumps(body).encode())
    assert isinstance(error, ValidationError)
    assert error.details == [body]
    assert str(error) == "HTTP 422: invalid input syntax for type uuid"


def test_retry_after_seconds() -> None:
    error = error_from_response(429, [("Retry-After", "17")], b"")
    assert isinstance(error, RateLimitError)
    assert error.retry_after_s == 17.0


@pytest.mark.parametrize(("status", "expected"), [(503, 120.0), (500, None), (502, None)])
def test_a_503_says_how_long_to_wait_too(status: int, expected: float | None) -> None:
    """A 503 with a wait too long to retry went to the caller with no way to read
    it (only a 429's RateLimitError had retry_after_s)."""
    error = error_from_response(status, [("Retry-After", "120")], b"")
    assert type(error) is APIError
    assert error.retry_after_s == expected
    assert pickle.loads(pickle.dumps(error)).retry_after_s == expected


def test_retry_after_http_date_needs_now() -> None:
    headers = {"retry-after": "Mon, 18 May 2026 18:04:25 GMT"}
    now = 1779127455.0  # ten seconds before that date
    error = error_from_response(429, headers, b"", now=now)
    assert isinstance(error, RateLimitError)
    assert error.retry_after_s == pytest.approx(10.0)
    no_clock = error_from_response(429, headers, b"")
    assert isinstance(no_clock, RateLimitError)
    assert no_clock.retry_after_s is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("120", 120.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("soon", None),
        ("nan", None),
        # Infinite waits (a caller sleeping retry_after_s slept forever).
        ("1e309", None),
        ("9" * 400, None),
        ("inf", None),
        # No clock sleeps 1e300 seconds: more than a week is no advice.
        ("1e300", None),
        ("604801", None),
        ("604800", 604800.0),
        ("Fri, 01 Jan 2100 00:00:00 GMT", None),
        ("Mon, 18 May 2026 18:04:20 GMT", 0.0),  # in the past
        # Numbers to Python's float(), not to HTTP: the client waited 10 s on "1_0".
        ("1_0", None),
        ("\uff11", None),  # a fullwidth 1
        ("\u0663", None),  # an Arabic-Indic 3
        ("1 0", None),
        ("0x10", None),
        (" 7 ", 7.0),
        ("+7", 7.0),
        (".5", 0.5),
        ("2e1", 20.0),
        # Dates whose fields overflow a C int: a bare OverflowError from any call.
        ("Mon, 01 Jan 1970 00:00:00 +99999999999999999999", None),
        ("Mon, 01 Jan 99999999999999999999 00:00:00 GMT", None),
        ("01 Jan 1970 00:00:99999999999999999999 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=1779127465.0) == expected


def test_timeout_error_is_also_the_builtin() -> None:
    error = TimeoutError("late")
    assert isinstance(error, builtins.TimeoutError)
    assert isinstance(error, FlowithError)


def test_constructors_take_the_original_clients_positional_arguments() -> None:
    assert APIError("boom", 500).status_code == 500
    limited = RateLimitError("slow down", 30)
    assert (limited.retry_after_s, limited.status_code) == (30, 429)
    invalid = ValidationError("bad", [{"loc": ["prompt"]}])
    assert (invalid.details, invalid.status_code) == ([{"loc": ["prompt"]}], 422)
    assert AuthenticationError("expired", 401).status_code == 401


@pytest.mark.parametrize(
    "error_class", [AuthenticationError, FileUploadError, TimeoutError, FlowithError]
)
def test_the_errors_the_original_client_let_be_made_bare_still_can(
    error_class: type[FlowithError],
) -> None:
    """Its AuthenticationError and FileUploadError were plain exceptions: a test
    raising ``AuthenticationError()`` from a mock was a TypeError here."""
    error = error_class()
    assert str(error) == ""
    assert getattr(error, "status_code", None) is None


def test_every_module_raises_the_librarys_timeout_not_the_builtin() -> None:
    """``TimeoutError`` shadows the builtin: a module that forgets to import it
    raises an error ``except FlowithError`` misses."""
    for path in sorted(Path(flowith_proto.__file__).parent.parent.glob("flowith_*/**/*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bound = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        bound |= {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
        used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        assert "TimeoutError" not in used - bound, path


def test_messages_never_carry_a_secret() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.secret-payload.signature"
    body = json.dumps({"message": f"bad token {token}"}).encode()
    error = error_from_response(401, {}, body, secrets=[token])
    assert error is not None
    assert token not in str(error)
    assert "[REDACTED]" in str(error)


def test_errors_built_from_what_a_server_or_transport_says_carry_no_secret() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    proxy = ConnectionFailedError(
        "ClientHttpProxyError: 407, url='http://alice:pw-secret-1@127.0.0.1:3128'"
    )
    assert "pw-secret-1" not in str(proxy)
    assert "alice:[REDACTED]@127.0.0.1" in str(proxy)
    failed = GenerationError(
        f"failed: provider said token {jwt}", error=f"token {jwt}", error_type=f"bad {jwt}"
    )
    assert jwt not in str(failed)
    assert jwt not in failed.error
    assert jwt not in failed.error_type
    decode = ResponseDecodeError(
        "refresh: wrong shape", body=[{"access_token": jwt, "refresh_token": "LISTREFRESH42"}]
    )
    assert decode.body == [{"access_token": "[REDACTED]", "refresh_token": "[REDACTED]"}]
    redirect = redact(
        "redirected to 'https://flowith.io/cb?code=OAUTH0123&state=s#access_token=tok-0001'", ()
    )
    assert "OAUTH0123" not in redirect
    assert "tok-0001" not in redirect
    assert "state=s" in redirect


@pytest.mark.parametrize(
    "text",
    [
        "https://sb.test/rest/v1/flow_node?select=*&code=eq.abc123",  # a PostgREST filter
        "https://api.test/models?max_tokens=eq.4096&token_count=gte.10&token_type=bearer",
        "a&code=b;}",  # code, not a URL
        "x=1;code=compile(s)",
        "http://[::1]:8080/path",  # an IPv6 host is no user:password
    ],
)
def test_text_that_only_looks_like_a_credential_is_left_alone(text: str) -> None:
    assert redact(text, ()) == text


HELD = "Zm9v/YmFy+YmF6_cXV4=="


@pytest.mark.parametrize(
    "written",
    [
        HELD.replace("/", "\\/"),  # JSON may escape a slash
        HELD.replace("_", "\\u005f"),  # or any character
        HELD.replace("_", "\\u005F").replace("Z", "\\u005a"),
        "Zm9v%2FYmFy%2BYmF6_cXV4%3D%3D",  # a query string, percent-encoded
        "Zm9v%2fYmFy+YmF6_cXV4%3d=",  # in part, lower case
    ],
)
def test_a_held_secret_is_masked_however_it_is_escaped(written: str) -> None:
    # Found only as sent: a server quoting a cookie inside JSON text, or in a URL
    # it wrote back, showed it in the error and in the cassette.
    text = f"sign in again at https://x.test/login?resume={written} (id 42)"
    assert redact(text, [HELD]) == "sign in again at https://x.test/login?resume=[REDACTED] (id 42)"


def test_escapes_of_other_text_are_left_alone() -> None:
    text = 'caf\\u00e9 50%25 off, a\\/b, 100% sure, "\\u005f"'
    assert redact(text, [HELD]) == text


def test_what_follows_basic_is_masked_like_a_bearer() -> None:
    # A URL's user:password goes out as "Authorization: Basic ...", which a server
    # may echo.
    assert redact("you sent auth=Basic YWxpY2U6czNjcmV0", ()) == "you sent auth=Basic [REDACTED]"
    assert redact("Basic usage of the API", ()) == "Basic usage of the API"
    # Base64 of letters alone ("user:pass"), shorter than a long word: a capital after
    # a lower-case letter tells it from prose.
    assert redact("auth=Basic dXNlcjpwYXNz", ()) == "auth=Basic [REDACTED]"
    assert redact("Basic Authentication, BASIC AUTH", ()) == "Basic Authentication, BASIC AUTH"
    prose = "Basic JavaScript, Basic PostgreSQL, Bearer McDonald"  # one hump: a word
    assert redact(prose, ()) == prose


def test_every_error_of_the_library_hides_credentials_in_its_message() -> None:
    # A URL the caller gave, quoted as it was (a download that timed out, a URL
    # refused), showed its password and its signed token.
    url = "http://alice:s3cret-pass-word@cdn.test/f.bin?token=signed-token-123"
    for error in (
        TimeoutError(f"downloading {url} stalled"),
        ValidationError(f"cannot download {url!r}: no"),
        FlowithError(f"about {url}"),
        GenerationError(f"failed at {url}"),
    ):
        for shown in (str(error), repr(error), str(pickle.loads(pickle.dumps(error)))):
            assert "s3cret" not in shown, shown
            assert "signed-token" not in shown, shown
            assert "cdn.test/f.bin" in shown


@pytest.mark.parametrize("dot", ["%2E", "%2e", "\\u002e", "\\u002E"])
@pytest.mark.parametrize("before", [" ", "%22", "\\u0022", "token="])
def test_a_jwt_echoed_with_its_dots_escaped_is_masked(dot: str, before: str) -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlX2hlcmU"
    assert redact(f"x{before}{token.replace('.', dot)} y", []) == f"x{before}[REDACTED] y"


@pytest.mark.parametrize(
    "text",
    [
        "GET /files/moneyJar%20receipts%2Efor%20tax%2Ehtml%20and%20more%20words not found",
        "No file named heyJude%20lyrics%2Ev2%2Fdraft%2Etxt in folder Songs",
        '{"message":"surveyJS\\u0020forms\\u002eare\\u0020here\\u002ehello world"}',
    ],
)
def test_escaped_prose_that_is_no_token_is_left_alone(text: str) -> None:
    # The first reading of escaped tokens took any escape for part of one.
    assert redact(text, []) == text


@pytest.mark.parametrize("run", ["aeyJabcd%2Eefgh%2Eijkl", "-eyJabcd%2Eefgh%2Eijkl"])
def test_an_escaped_token_starts_where_a_token_can(run: str) -> None:
    # 120 KB of "eyJ" and escapes took 11 s: each "eyJ" inside a run of token
    # characters read the rest again. One inside such a run is no token's start.
    assert redact(run, []) == run
    assert redact(run[1:], []) == "[REDACTED]"
    assert redact("%3D" + run[1:], []) == "%3D[REDACTED]"  # after an escape, it is


@pytest.mark.parametrize(
    "before", ["", "a", "-", "_", "\u00e9", "A" * 40, "%22", "\\u0022", "\\n", '"', " ", "="]
)
def test_a_jwt_is_masked_wherever_it_starts(before: str) -> None:
    # Tried once per run of token characters, at its start: a JWT glued to one
    # (base64 data before it) is still found, and what precedes it is kept.
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlX2hlcmU"
    assert redact(f"{before}{token} x", []) == f"{before}[REDACTED] x"
    assert redact(f"{before}{token[:-17]}", []) == f"{before}[REDACTED]"  # its signature cut short
    assert redact(f"{before}eyJeyJ{token}.x", []) == f"{before}[REDACTED].x"
    no_token = f"{before}eyJhbGciOiJIUzI1NiJ9.eyJ.c2ln"  # a middle part too short
    assert redact(no_token, []) == no_token
    scrubbed = Scrubber().text(f"{before}{token}")
    assert scrubbed.startswith(before)
    assert "c2lnbmF0" not in scrubbed


@pytest.mark.parametrize(
    "text",
    [
        "eyJ" * 85_000,  # a JWT tried at every "eyJ"
        "%41eyJ" * 40_000,
        '"' + "token " * 42_000,  # a credential-named key tried at every "token"
        '\\"' + "token " * 42_000,
        "'" + "token " * 42_000,
        "a." * 128_000 + " b://x",  # a URL scheme tried after every dot
        "a." * 128_000 + " b://u:p@x",
        "https://cdn.test/f?" + "token" * 50_000,  # a credential word tried at every one
    ],
    ids=[
        "jwt", "jwt-escapes", "field", "escaped-field", "repr-field", "url", "url-password",
        "url-parameter",
    ],
)
def test_masking_reads_a_long_body_once(text: str) -> None:
    # Each pattern was retried at every spot of such a run, each try reading to
    # its end: 256 KB of one took from 30 s to minutes, a 1 MB error body hours.
    # None of them holds a credential.
    expected = text.replace("u:p@", "u:[REDACTED]@")
    assert redact(text, []) == expected
    assert Scrubber().text(text) == expected
    assert Scrubber().raw(text.encode()) == expected.encode()  # bytes are masked as text


@pytest.mark.parametrize("before", ["", "x", "f" * 61, "0123456789abcdef" * 8])
def test_a_url_glued_to_a_long_word_is_still_masked(before: str) -> None:
    # Bounding the scheme (64 characters, read back from "://") while it had to
    # start after a word boundary missed a URL glued to a word that long: a hex
    # digest before "https" showed the URL's password and token.
    url = "https://alice:hunter22@proxy/?access_token=abc123"
    masked = "https://alice:[REDACTED]@proxy/?access_token=[REDACTED]"
    assert redact(before + url, []) == before + masked
    assert Scrubber().text(before + url) == before + masked


def test_an_error_page_and_a_retry_after_are_read_once_whatever_they_hold() -> None:
    # Each took from one to several seconds at these sizes, and grew with the square
    # of the text (the title, the number) or doubled with every comment (the page).
    assert one_line("<!---->" * 24 + "x", limit=1000) == "<!---->" * 24 + "x"
    assert one_line("<html><!---->" + "<title>" * 7_000) == "an HTML page"
    assert one_line("<html>" + "<title " * 20_000) == "an HTML page"  # no tag ends
    assert retry_after_seconds("1" * 8_000 + "x") is None
    assert retry_after_seconds("1" * 300 + ".5") == float("1" * 300 + ".5")


@pytest.mark.parametrize(
    ("page", "said"),
    [
        ("<!doctype html><title>502 Bad &amp; Gateway</title >", "502 Bad & Gateway"),
        ("<!-- a -->\n<!-- b --><html><TITLE lang=en>\nT\n</TITLE><title>U</title>", "T"),
        ("<!-- a --> junk <!-- b --><html><title>T</title>", "T"),  # as it was read before
        ("<html><title>no end", ""),
        ("<html></title><title>late</title>", "late"),
    ],
)
def test_an_error_pages_title_is_what_its_first_title_tag_holds(page: str, said: str) -> None:
    assert one_line(page) == (f"{said} (an HTML page)" if said else "an HTML page")


def test_redact_ignores_short_and_empty_secrets() -> None:
    assert redact("abc def", ["", "abc"]) == "abc def"
    assert redact("token=abcdefghij!", ["abcdefghij"]) == "token=[REDACTED]!"


@pytest.mark.parametrize(
    ("status", "body", "expired"),
    [
        (401, b"", False),  # a bare 401 does not spend the single-use refresh token
        (401, b'{"message": "Unauthorized"}', False),
        (401, b'{"code": "PGRST301", "message": "JWT expired"}', True),
        (403, b'{"code": "PGRST303", "message": "JWT expired"}', True),
        (401, b'{"message": "jwt expired"}', True),
        (401, b'{"code": "bad_jwt", "message": "token is expired"}', True),
        # The same codes for what a new token would not cure: no refresh spent on them.
        (401, b'{"code": "PGRST301", "message": "JWT cryptographic operation failed"}', False),
        (401, b'{"code": "PGRST303", "message": "JWT audience claim mismatch"}', False),
        (401, b'{"code": "bad_jwt", "msg": "invalid JWT: signature is invalid"}', False),
        (401, b'{"error_code": "bad_jwt", "msg": "token has invalid claims"}', False),
        (403, b'{"message": "permission denied"}', False),
        (200, b'{"message": "JWT expired"}', False),
        (401, b'{"msg": "invalid JWT: token has invalid claims: token is expired"}', True),
        (401, b'{"error": "Token expired"}', True),
        (401, b"expired token", True),
        # "expired" of something else: a refresh would not cure it either.
        (403, b'{"message": "Your subscription has expired"}', False),
        (401, b'{"message": "trial expired, upgrade to continue"}', False),
        (401, b'{"message": "the share link expired; tokens: 3 left"}', False),
    ],
)
def test_is_token_expired(status: int, body: bytes, expired: bool) -> None:
    assert is_token_expired(status, body) is expired


def test_the_body_an_error_keeps_carries_no_secret_either() -> None:
    secret = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl"
    echoed = json.dumps({"message": "bad", "echo": {"headers": [f"Bearer {secret}"]}})
    error = error_from_response(500, {}, echoed.encode(), secrets=[secret])
    assert error is not None
    assert secret not in repr(error.body)
    assert error.body == {"message": "bad", "echo": {"headers": ["Bearer [REDACTED]"]}}
    as_text = error_from_response(502, {}, f"<html>{secret}</html>".encode(), secrets=[secret])
    assert as_text is not None
    assert secret not in str(as_text)
    assert secret not in as_text.body


def test_a_body_that_is_not_json_is_quoted_without_a_secret_even_cut_short() -> None:
    secret = "refresh-" + "x" * 40
    body = ("<html>" + " " * 170 + secret + "</html>").encode()  # the secret straddles 200
    with pytest.raises(ResponseDecodeError) as caught:
        Response(200, (), body, secrets=(secret,)).json()
    assert "xxxxxxxx" not in str(caught.value)
    assert "x" * 8 not in str(caught.value.body)


def test_json_with_a_number_past_pythons_digit_limit_is_still_json() -> None:
    """It was refused whole as "expected JSON from the server", though the rest of
    the answer was good: the number alone is unusable (a field then takes its default)."""
    body = b'[{"id": "c1", "title": "ok", "n": ' + b"9" * 5000 + b"}]"
    assert Response(200, (), body).json() == [{"id": "c1", "title": "ok", "n": math.inf}]


def test_a_refused_argument_is_also_a_value_error() -> None:
    """As the README says of invalid settings: ``except ValueError`` catches them."""
    import flowith_httpx

    with pytest.raises(ValueError, match="edge_url must be an http"):
        flowith_httpx.FlowithClient("t", edge_url="x")
    assert issubclass(ValidationError, ValueError)
    assert issubclass(ValidationError, APIError)


@pytest.mark.parametrize("limit", [0, -1.0, float("nan")])
def test_a_silence_limit_must_be_positive(limit: float) -> None:
    import flowith_aiohttp
    import flowith_httpx

    for client_class in (flowith_httpx.FlowithClient, flowith_aiohttp.FlowithClient):
        with pytest.raises(ValueError, match="stream_idle_timeout must be a positive number"):
            client_class("t", stream_idle_timeout=limit)


def test_cookie_values_are_learned_as_secrets_bounded_by_name() -> None:
    from flowith_proto.state import MAX_COOKIES, MAX_FORMER_SECRETS, ClientState

    state = ClientState()
    headers = [
        ("Set-Cookie", "sb-session=abcdefgh12345; Path=/; HttpOnly"),
        ("set-cookie", 'quoted="q-value-5678"; Secure'),
        ("Set-Cookie", "short=1"),  # too short to hide: it would hide ordinary text
        ("Set-Cookie", "no-value-at-all"),
        ("Content-Type", "text/plain; x=longvalue123"),
    ]
    assert state.learn_cookies(headers) == ["abcdefgh12345", "q-value-5678"]
    assert state.learn_cookies(headers) == []  # nothing new
    assert state.secrets[-2:] == ("abcdefgh12345", "q-value-5678")
    assert state.learn_cookies([("Set-Cookie", "sb-session=rotated-9999")]) == ["rotated-9999"]
    # The jar no longer sends it, but an answer may still quote it: it stays hidden.
    assert "abcdefgh12345" not in state.cookies.values()
    assert "abcdefgh12345" in state.secrets
    many = [("Set-Cookie", f"name{n}=value-{n:06d}") for n in range(2 * MAX_COOKIES)]
    state.learn_cookies(many)
    assert len(state.cookies) == MAX_COOKIES
    assert state.cookies[f"name{2 * MAX_COOKIES - 1}"] == f"value-{2 * MAX_COOKIES - 1:06d}"
    assert len(state.former_secrets) == MAX_FORMER_SECRETS  # the evicted ones, bounded
    assert "cookies" not in repr(state)


def test_the_names_of_the_latest_cookies_are_noted_whatever_their_values() -> None:
    from flowith_proto.state import MAX_COOKIES, ClientState

    state = ClientState()
    state.learn_cookies([("Set-Cookie", "lang=en"), ("Set-Cookie", "no-value-at-all")])
    assert list(state.cookie_names) == ["lang"]  # what a full jar keeps
    state.learn_cookies([("Set-Cookie", f"c{n}=value-{n:06d}") for n in range(MAX_COOKIES)])
    state.learn_cookies([("Set-Cookie", "lang=fr")])
    assert len(state.cookie_names) == MAX_COOKIES
    assert list(state.cookie_names)[-2:] == [f"c{MAX_COOKIES - 1}", "lang"]
    assert "c0" not in state.cookie_names


def test_a_full_jar_lets_go_of_stale_names_then_of_the_most_repeated_one() -> None:
    from flowith_proto.state import MAX_COOKIES, excess_cookies

    def name(cookie: tuple[str, int]) -> str:
        return cookie[0]

    paths = [("a", path) for path in range(MAX_COOKIES)]
    assert excess_cookies(paths, name, {"a"}) == []  # not full
    cookies = [("old", 0), *paths, ("lang", 0)]
    assert excess_cookies(cookies, name, {"a", "lang"}) == [("old", 0), ("a", 0)]
    assert excess_cookies([*cookies, ("b", 0)], name, {"a", "b", "lang"}) == [
        ("old", 0),
        ("a", 0),
        ("a", 1),
    ]


def test_the_former_secrets_kept_are_refresh_tokens_not_access_tokens() -> None:
    # Each refresh let go of two credentials, so only the last 16 refresh tokens stayed
    # hidden; an access token is a JWT, masked by its shape anyway.
    from flowith_proto.auth import Credentials
    from flowith_proto.state import MAX_FORMER_SECRETS, ClientState

    def jwt(n: int) -> str:
        return f"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ{n:04d}In0.c2lnbmF0dXJl{n:04d}"

    state = ClientState(credentials=Credentials.from_tokens(jwt(0), refresh_token="rt-0000-abcd"))
    for n in range(1, MAX_FORMER_SECRETS + 1):
        state.credentials = state.credentials.with_tokens(jwt(n), f"rt-{n:04d}-abcd")
    assert state.former_secrets == [f"rt-{n:04d}-abcd" for n in range(MAX_FORMER_SECRETS)]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:99999", "its port is not usable (Port out of range"),
        ("http://127.0.0.1:abc", "its port is not usable (Port could not be cast"),
        ("http://127.0.0.1:0", "its port is not usable (0)"),
        ("http://user:pw@127.0.0.1:1", "it holds a user name or password"),
        ("http://:80", "it names no host"),
        ("ftp://files.example", "the scheme must be http or https"),
        ("https://edge.example?x=1", "it holds a query or a fragment"),
        ("https://edge.example/a b", "it holds whitespace"),
        ("http://a..bé", "its host is no valid domain name (Empty Label)"),
        ("http://bé.de:99999", "its port is not usable (Port out of range"),
        ("http://xn--ü.de", "its host is no valid domain name (Label has disallowed"),
        ("http://é/\udce9", "it holds a lone surrogate"),
        (5, "not a string"),
    ],
)
def test_a_base_url_no_transport_can_use_is_refused_when_the_client_is_made(
    url: object, problem: str
) -> None:
    # Each transport failed on these at the first request, each in its own way
    # (httpx on asyncio: a bare ExceptionGroup; aiohttp: a bare ValueError).
    import flowith_aiohttp
    import flowith_httpx

    client_classes: list[Any] = [flowith_httpx.FlowithClient, flowith_aiohttp.FlowithClient]
    for client_class in client_classes:
        for option in ("edge_url", "supabase_url"):
            with pytest.raises(ValidationError) as info:
                client_class("t", **{option: url})
            assert str(info.value).startswith(f"{option} must be an http(s) URL of a host")
            assert problem in str(info.value)
            assert ":pw@" not in str(info.value)  # a password is no part of the message


@pytest.mark.parametrize(
    "url", ["https://edge.flowith.io", "http://127.0.0.1:8080", "http://[::1]:80", "https://h/p"]
)
def test_usable_base_urls_are_kept(url: str) -> None:
    from flowith_proto.config import FlowithConfig

    assert FlowithConfig(edge_url=url + "/").edge_url == url


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("http://bücher.example/", "http://xn--bcher-kva.example"),
        ("https://edge_1.bücher.example", "https://edge_1.xn--bcher-kva.example"),
        ("https://faß.de:8443/präfix", "https://xn--fa-hia.de:8443/pr%C3%A4fix"),
    ],
)
def test_a_base_url_is_kept_in_ascii(url: str, sent: str) -> None:
    # aiohttp sent the host as it was given, in UTF-8, and routed it by that name,
    # which NO_PROXY's entry for it (matched by its ASCII name) never matched.
    from flowith_proto.config import FlowithConfig

    config = FlowithConfig(edge_url=url, supabase_url=url)
    assert (config.edge_url, config.supabase_url) == (sent, sent)


# The misuse leaves the first loop's connections open when that loop ends: their
# sockets warn as they are collected.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_client_used_from_another_event_loop_says_so(tmp_path: Path) -> None:
    """A client belongs to the event loop it first ran in. From another one, each
    transport failed deep inside in its own way (``Event loop is closed``, a lock of
    the other loop), or, from a second thread's loop, worked once and then broke
    the client for its own loop."""
    import gc
    import threading

    import anyio
    import anyio.to_thread

    import flowith_aiohttp
    import flowith_httpx
    from flowith_httpx.fake_server import FakeFlowithServer
    from flowith_proto.errors import FlowithError
    from flowith_proto.fake import FakeFlowith

    fake = FakeFlowith()
    fake.add_file("/f/a/b.bin", b"x" * 1000, "application/octet-stream")
    ready = threading.Event()
    stop = threading.Event()
    urls: list[str] = []

    async def serve() -> None:
        async with FakeFlowithServer(fake) as server:
            urls.append(server.url)
            ready.set()
            await anyio.to_thread.run_sync(stop.wait)

    serving = threading.Thread(target=anyio.run, args=(serve,))
    serving.start()
    try:
        ready.wait(10)
        cases: list[tuple[Any, list[str]]] = [
            (flowith_httpx.FlowithClient, ["asyncio", "asyncio", "trio"]),
            (flowith_httpx.FlowithClient, ["trio", "asyncio"]),
            (flowith_aiohttp.FlowithClient, ["asyncio", "asyncio"]),
        ]
        for client_class, backends in cases:
            client = client_class(fake.token, edge_url=urls[0], supabase_url=urls[0])

            async def credits(client: Any = client) -> int:
                return len(await client.get_credits())

            async def download(client: Any = client) -> object:
                return await client.download(urls[0] + "/f/a/b.bin", tmp_path)

            assert anyio.run(credits, backend=backends[0]) >= 1
            for backend in backends[1:]:
                for call in (credits, download):
                    with pytest.raises(FlowithError, match="belongs to the event loop it first"):
                        anyio.run(call, backend=backend)
            for _ in range(2):  # refused, so the client stays open for its own loop to close
                with pytest.raises(FlowithError, match="belongs to the event loop it first ran"):
                    anyio.run(client.aclose, backend=backends[-1])
            assert list(tmp_path.iterdir()) == []  # nothing was downloaded
            assert not [r for r in fake.requests if r.path == "/f/a/b.bin"]
            del client, credits, download, call
            gc.collect()  # the first loop's sockets warn here, under this test's filters
    finally:
        stop.set()
        serving.join(10)


@pytest.mark.parametrize("status", [301, 302, 304])
def test_a_redirect_without_a_location_says_so(status: int) -> None:
    # It said "the server redirected to ''".
    error = error_from_response(status, {}, b"")
    assert isinstance(error, APIError)
    assert str(error) == f"HTTP {status} without a Location to follow"
    assert error.status_code == status


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        (
            "/auth/callback?code=OAUTHCODEsecret777&state=x",
            "/auth/callback?code=[REDACTED]&state=x",
        ),
        (
            "//user:PWsecret888@127.0.0.1:1/x?access_token=TOKsecret999",
            "//user:[REDACTED]@127.0.0.1:1/x?access_token=[REDACTED]",
        ),
        ("https:/user:PWsecret888@host/x", "https:/user:[REDACTED]@host/x"),
    ],
)
def test_a_redirect_to_a_relative_url_hides_its_credentials(location: str, shown: str) -> None:
    # Only a Location with "://" was read as a URL: an OAuth callback's code, a
    # password and a token went into the message as they were.
    error = error_from_response(302, {"Location": location}, b"", endpoint="GET /user/credit_type")
    assert str(error) == (
        f"HTTP 302 from GET /user/credit_type: the server redirected to {shown!r}, "
        "which the client does not follow with your credentials"
    )


@pytest.mark.parametrize(
    "url",
    [
        "//cdn.example/f/a.png?X-Amz-Signature=AMZSIGsecret0123456789abcdef",
        "cdn.example/f/a.png?token=AMZSIGsecret0123456789abcdef",
        "https://cdn.example/f/my photo.png\udce9?X-Amz-Signature=AMZSIGsecret0123456789abcdef",
        "ftp://user:AMZSIGsecret0123456789abcdef@cdn.example/f/a.png",
    ],
)
def test_a_download_url_refused_is_quoted_masked(url: str) -> None:
    # Masked only in the forms text tells for a URL ("scheme://", no space): a
    # protocol-relative or host-first URL showed its signature.
    with pytest.raises(ValidationError, match=r"^cannot download ") as refused:
        download_request(FlowithConfig(), url)
    assert "AMZSIGsecret" not in str(refused.value)
    assert "[REDACTED]" in str(refused.value)


@pytest.mark.parametrize("option", ["edge_url", "supabase_url"])
@pytest.mark.parametrize(
    "url", ["https:/user:BASEPWsecret555@edge.example", "//user:BASEPWsecret555@edge.example"]
)
def test_a_base_url_refused_is_quoted_masked(option: str, url: str) -> None:
    with pytest.raises(ValidationError, match=rf"^{option} must be") as refused:
        FlowithConfig(**{option: url})
    assert "BASEPWsecret555" not in str(refused.value)


def test_the_credentials_a_url_carries_are_found_as_written_and_decoded() -> None:
    url = (
        "https://u:p%40ssword-1@s3.test/b/k.png?X-Amz-Algorithm=AWS4&id=eq.5"
        "&X-Amz-Signature=abcdef0123456789&X-Amz-Security-Token=IQoJb3JpZ2lu%2Fxyz"
    )
    assert url_secrets(url) == [
        "p%40ssword-1",
        "abcdef0123456789",
        "IQoJb3JpZ2lu%2Fxyz",
        "p@ssword-1",
        "IQoJb3JpZ2lu/xyz",
    ]
    # An answer quoting them outside any URL, as S3's SignatureDoesNotMatch does:
    quoted = "<SignatureProvided>abcdef0123456789</SignatureProvided> IQoJb3JpZ2lu/xyz"
    assert redact(quoted, url_secrets(url)) == (
        "<SignatureProvided>[REDACTED]</SignatureProvided> [REDACTED]"
    )


def test_the_endpoint_named_by_an_error_is_redacted() -> None:
    # The path went into the message and .endpoint as it was.
    token = "opaque-path-token-0123456789"
    error = error_from_response(
        404, {}, b"{}", secrets=[token], endpoint=f"GET /f/{token}/a.png"
    )
    assert error is not None
    assert token not in f"{error} {error.endpoint}"
    assert error.endpoint == "GET /f/[REDACTED]/a.png"


def test_every_validation_error_the_library_raises_says_its_status() -> None:
    # ValidationError defaults to the server's 422 (the original client's): an argument
    # refused before sending must say None, or it claims an HTTP answer.
    import ast
    import pathlib

    root = pathlib.Path(__file__).parent.parent
    missing = []
    for package in ("flowith_proto", "flowith_httpx", "flowith_aiohttp"):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "id", None) == "ValidationError"
                    and not any(keyword.arg == "status_code" for keyword in node.keywords)
                ):
                    missing.append(f"{path}:{node.lineno}")
    assert missing == []


def test_a_generation_error_is_scrubbed_of_the_held_secrets_in_every_field() -> None:
    # scrub() masked the message only: .error and .error_type (printed by the README's
    # own example, and pickled with the error) kept an opaque token the server echoed.
    held = "rt_SECRET_abc123XYZ"
    failed = GenerationError(
        f"failed: provider said {held}", error=f"provider said {held}", error_type=f"bad {held}"
    )
    scrub(failed, [held])
    copy = pickle.loads(pickle.dumps(failed))
    for error in (failed, copy):
        assert held not in f"{error} {error.error} {error.error_type}"
        assert error.error == "provider said [REDACTED]"
        assert error.error_type == "bad [REDACTED]"


class _ParserError(Exception):
    """Shaped as aiohttp's parser errors: its str shows ``message``, and its args hold
    the raw line it refused."""

    def __init__(self, line: bytes) -> None:
        super().__init__(line)
        self.message = f"Invalid header token:\n\n  {line!r}"

    def __str__(self) -> str:
        return f"400, message:\n{self.message}"


def _raised_from_a_transports_error(line: bytes) -> ConnectionFailedError:
    """The library's error as a transport raises it, from the error of the parser
    that refused ``line``, itself raised from another (httpcore's from h11's)."""
    try:
        try:
            try:
                raise _ParserError(line)
            except _ParserError as refused:
                raise RuntimeError(f"illegal header line: {line!r}") from refused
        except RuntimeError as exc:
            raise ConnectionFailedError("malformed answer: illegal header line") from exc
    except ConnectionFailedError as error:
        return error


def _chain_shown(error: BaseException) -> str:
    """What a traceback, and a look at each error of the chain, shows."""
    shown = "".join(traceback.format_exception(error))
    link: BaseException | None = error
    while link is not None:
        shown += f"{link!r} {link.args!r} {vars(link)!r}"
        link = link.__cause__ or link.__context__
    return shown


def test_what_the_errors_a_library_error_was_raised_from_say_is_redacted() -> None:
    # Only the library's own error was redacted: a traceback (logging.exception) printed
    # the transport's below it, quoting the answer's line with a signed URL, or a cookie
    # value the client held.
    held = "sid-COOKIEVALUE123456"
    signed = "https://cdn.test/f/a.png?X-Amz-Signature=AMZSIG0123456789abcdef"
    line = f"Location : {signed}&echo={held}".encode()
    error = _raised_from_a_transports_error(line)
    scrub(error, [held])
    shown = _chain_shown(error)
    assert "AMZSIG0123456789abcdef" not in shown
    assert held not in shown
    # Still the whole chain, each error's type and what it said, redacted.
    assert "_ParserError: 400, message:" in shown
    assert "RuntimeError: illegal header line: b'Location : https://cdn.test/f/a.png" in shown
    assert "X-Amz-Signature=[REDACTED]&echo=[REDACTED]" in shown

    error = _raised_from_a_transports_error(line)
    redact_chain(error)  # what a transport does before it raises: no secret held there
    shown = _chain_shown(error)
    assert "AMZSIG0123456789abcdef" not in shown
    assert f"&echo={held}" in shown  # masked on the error's way out, by scrub


def test_an_excerpt_masks_a_credential_before_shortening_it() -> None:
    # Cut first, a JWT kept the last 28 characters of its signature, no longer
    # shaped like a JWT for the log mask to find.
    jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyIn0." + "s" * 20 + "TAILtail" * 3
    shown = excerpt({"remain_quota": jwt})
    assert "TAILtail" not in shown
    assert "[REDACTED]" in shown


def test_the_live_secrets_can_be_read_while_another_thread_registers_clients() -> None:
    # Iterating the registry raised "dictionary changed size during iteration" from a
    # log call when another thread made a client meanwhile.
    import threading

    from flowith_proto.errors import hide_secrets_of, live_secrets
    from flowith_proto.state import ClientState

    kept = [ClientState() for _ in range(200)]
    for state in kept:
        hide_secrets_of(state)
    stop = threading.Event()

    def register() -> None:
        while not stop.is_set():
            hide_secrets_of(ClientState())  # and dropped at once: registered, then gone

    thread = threading.Thread(target=register)
    thread.start()
    try:
        for _ in range(3000):
            live_secrets()
    finally:
        stop.set()
        thread.join()


def test_an_excerpt_of_megabytes_masks_only_the_ends_it_shows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Masking the whole value before cutting it searched all of a 10 MB data URL.
    from flowith_proto import errors

    searched: list[int] = []
    masked = errors.redact

    def noting(text: str, secrets: Any) -> str:
        searched.append(len(text))
        return masked(text, secrets)

    monkeypatch.setattr(errors, "redact", noting)
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    shown = excerpt({"url": "data:image/png;base64," + "A" * 10_000_000 + jwt})
    assert max(searched) <= 2 * errors._MASKED_SPAN
    assert "c2lnbmF0" not in shown
    assert "[REDACTED]" in shown
    assert excerpt(jwt.encode()).count("[REDACTED]") == 1  # bytes: masked before cut too

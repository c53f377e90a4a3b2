"""The ``flowith`` subcommands: the public client API from a shell.

Each subcommand is a thin coroutine over one or two public client methods, so
the command line exercises exactly what a program would. Output is for people
by default (aligned tables, wrapped text) and for scripts with ``--json`` (one
JSON document, or JSON lines for streams). Credentials never reach the output:
every line written goes through :func:`~flowith_proto.errors.redact` with the
tokens in use, and any JWT-looking string is masked as well.

Exit codes (see :data:`EXIT_CODES_HELP`): 0 ok, 1 a local file could not be
read or written, 2 usage error, 3 authentication failure, 4 server or API
error (and ``doctor``: an assumption fails), 5 the server could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import builtins
import codecs
import contextlib
import functools
import importlib.metadata
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import textwrap
import threading
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar

import anyio
import anyio.to_thread
import attrs

from flowith_httpx import doctor
from flowith_proto import extras
from flowith_proto.abc import FlowithClientBase
from flowith_proto.auth import header_safe
from flowith_proto.cassette import CassetteError, CassetteMismatch
from flowith_proto.config import DEFAULT_EDGE_URL, DEFAULT_SUPABASE_URL
from flowith_proto.errors import (
    AuthenticationError,
    ConnectionFailedError,
    FlowithError,
    GenerationError,
    ValidationError,
    raise_interrupt_in,
    redact,
)
from flowith_proto.models import GenerationOutput, ImageOutput, VideoOutput

__all__ = [
    "EXIT_API",
    "EXIT_AUTH",
    "EXIT_CODES_HELP",
    "EXIT_CONNECTION",
    "EXIT_LOCAL",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandParser",
    "UsageError",
    "add_commands",
    "build_parser",
    "client_class",
    "error_line",
    "exit_code",
    "leaf_error",
    "run_command",
    "write_tokens",
]

T = TypeVar("T")

EXIT_OK = 0
EXIT_LOCAL = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_API = 4
EXIT_CONNECTION = 5
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
EXIT_READER_GONE = 141  # 128 + SIGPIPE: the reader of stdout went away
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process it ended

EXIT_CODES_HELP = """\
exit codes:
  0  success
  1  a local file could not be read or written
  2  usage error: bad arguments, a value the client refuses before sending it
     (a conversation id that is not a UUID...), or no token (set FLOWITH_TOKEN)
  3  authentication failed: the token was refused or expired and could not
     be renewed
  4  server or API error: an error answer, a failed generation, a timeout, an
     answer the client cannot read; for doctor, a protocol assumption fails
  5  connection failed: the server could not be reached or the connection broke
  130  interrupted (Ctrl-C)
  141  the reader of stdout went away (flowith models | head -1), quietly
  143  terminated (SIGTERM: kill, timeout, a container stopping), after
       closing what it had open, as Ctrl-C does

Every failure prints one line, "flowith: <message>", on stderr.
Environment: FLOWITH_TOKEN, FLOWITH_REFRESH_TOKEN, FLOWITH_USER_ID,
FLOWITH_EDGE_URL, FLOWITH_SUPABASE_URL, FLOWITH_EDGE_AUTH.
"""

_CONTROL = re.compile(r"\s+")
#: Control characters left once whitespace is collapsed (an escape sequence in a
#: title the server holds would drive the terminal): shown as U+FFFD instead.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    """``text`` on one line, its whitespace collapsed and control characters shown as
    U+FFFD, so text from the server cannot move the cursor or recolour the terminal."""
    return _UNPRINTABLE.sub("\ufffd", _CONTROL.sub(" ", text).strip())


#: The environment variables that hold tokens: masked in whatever the command writes.
_TOKEN_VARIABLES = ("FLOWITH_TOKEN", "FLOWITH_REFRESH_TOKEN")


class UsageError(Exception):
    """A mistake on the command line, found before any request (exit 2)."""


#: An argument that may be a token: one word of 12 characters or more with a digit and a
#: letter, of mixed case (an API key, base64) or without a hyphen (GoTrue's refresh
#: tokens: 12 lowercase letters and digits). Not a prompt (spaces), a model (lowercase
#: and hyphenated, or with a dot), a file (a dot), nor a conversation id (a UUID).
_TOKEN_LIKE = re.compile(
    r"(?!(?i:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$)"
    r"(?=\D*\d)(?=[^a-zA-Z]*[a-zA-Z])"
    r"(?:(?=[^a-z]*[a-z])(?=[^A-Z]*[A-Z])[\w~+/=-]{12,}|[a-z0-9_~+/=]{12,})"
)
#: Options whose value is a credential, and misspellings that keep one of these stems
#: (a value under 8 characters is too short to tell from ordinary text, and kept).
_CREDENTIAL_OPTION = re.compile(
    r"^--?[\w-]*(?:to?k|secret|key|pass|cookie|auth|cred|session)", re.IGNORECASE
)


def _credentials_in(args: Sequence[str]) -> list[str]:
    """The arguments a usage error must not quote: the values of credential-like options
    (``--refresh-tokn rt_...``, even one starting with ``-``) and whatever looks like a
    token (one put where another argument goes)."""
    found = []
    previous = ""
    for arg in args:
        name, equals, value = arg.partition("=")
        if _CREDENTIAL_OPTION.match(previous) or _TOKEN_LIKE.fullmatch(arg):
            found.append(arg)  # a credential option's value, even "-AbC...==", or a token
        elif (
            arg.startswith("-")
            and equals
            and (_CREDENTIAL_OPTION.match(name) or _TOKEN_LIKE.fullmatch(value))
        ):
            found.append(value)
        previous = "" if arg.startswith("-") and equals else arg
    return found


class CommandParser(argparse.ArgumentParser):
    """argparse, with its errors as the one ``flowith: ...`` line every
    failure prints (instead of a usage block)."""

    _parsing: Sequence[str] = ()

    def parse_known_args(  # type: ignore[override]  # typeshed's overloads
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._parsing = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        # argparse quotes the arguments it refused, and a token put in the wrong place
        # is one of them: masked as everywhere else, with the environment's tokens.
        tokens = [os.environ.get(name, "") for name in _TOKEN_VARIABLES]
        tokens += _credentials_in(self._parsing)
        shown = redact(message, tokens)
        self.exit(EXIT_USAGE, f"flowith: {shown} (see '{self.prog} --help')\n")


def check_choices(transport: str, backend: str) -> None:
    """Refuse a transport and event loop that cannot run together or are not
    installed, naming the extra to install."""
    if transport == "aiohttp" and backend == "trio":
        raise UsageError("aiohttp runs on asyncio only; use --transport httpx")
    choices = (("--transport", transport, "aiohttp"), ("--backend", backend, "trio"))
    for option, chosen, extra in choices:
        absent = extras.missing(extra) if chosen == extra else []
        if absent:
            raise UsageError(extras.needs(f"{option} {extra}", extra, absent))


def client_class(transport: str) -> type[FlowithClientBase]:
    """The client of ``transport``, imported only when chosen."""
    if transport == "aiohttp":
        from flowith_aiohttp import FlowithClient as AiohttpClient

        return AiohttpClient
    from flowith_httpx import FlowithClient as HttpxClient

    return HttpxClient


# -- the parser ------------------------------------------------------------------------------


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be positive and finite, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The options every subcommand shares. On the top parser they carry the
    defaults; on subcommands they are repeated with no default, so they may
    also follow the subcommand (``flowith models --json``)."""

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("global options")
    group.add_argument(
        "--transport", choices=("httpx", "aiohttp"), default=default("httpx"), help="HTTP library"
    )
    group.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default=default("asyncio"),
        help="event loop (aiohttp: asyncio only)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="machine-readable output: one JSON document, or JSON lines for streams",
    )
    group.add_argument(
        "--token",
        default=default(None),
        help="access token (else FLOWITH_TOKEN, which other users cannot see in ps)",
    )
    group.add_argument(
        "--refresh-token",
        default=default(None),
        help="refresh token, to renew an expired access token (else FLOWITH_REFRESH_TOKEN)",
    )
    group.add_argument(
        "--user-id", default=default(None), help="user id (else FLOWITH_USER_ID, else the token's)"
    )
    group.add_argument(
        "--edge-url", default=default(None), help="edge host (else FLOWITH_EDGE_URL)"
    )
    group.add_argument(
        "--supabase-url", default=default(None), help="Supabase host (else FLOWITH_SUPABASE_URL)"
    )
    group.add_argument(
        "--record",
        metavar="FILE",
        default=default(None),
        help="record the session to a cassette (secrets scrubbed); see 'flowith record'",
    )
    group.add_argument(
        "--replay",
        metavar="FILE",
        default=default(None),
        help="answer from a recorded cassette instead of the network (no token needed)",
    )
    group.add_argument(
        "--edge-auth",
        choices=("bare", "bearer"),
        default=default(None),
        help="how the edge gets the token (else FLOWITH_EDGE_AUTH, else bare)",
    )
    group.add_argument(
        "--save-tokens",
        metavar="FILE",
        default=default(None),
        help="read the tokens from FILE if it exists, and write the new ones there "
        "(mode 0600) whenever they are renewed",
    )
    group.add_argument(
        "--timeout",
        type=_positive,
        default=default(30.0),
        metavar="SECONDS",
        help="limit for each request (default 30); a generation has --result-timeout",
    )
    group.add_argument(
        "--result-timeout",
        type=_positive,
        default=default(120.0),
        metavar="SECONDS",
        help="how long a text or image generation may take in all (default 120; a video "
        "waits up to 300)",
    )


def _command(
    commands: argparse._SubParsersAction[CommandParser], name: str, help_text: str
) -> CommandParser:
    parser = commands.add_parser(name, help=help_text, description=help_text)
    _global_options(parser, top=False)
    return parser


_OVERWRITE_HELP = "replace a file of that name (else the next free name-1.ext is taken)"


def build_parser() -> tuple[CommandParser, argparse._SubParsersAction[CommandParser]]:
    """The ``flowith`` parser with its global options; the caller adds its own
    subcommands (``demo``) to the returned action, then :func:`add_commands`."""
    parser = CommandParser(
        prog="flowith",
        description="Unofficial client for the Flowith.io web app.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flowith {_version()}")
    _global_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    return parser, commands


def _version() -> str:
    try:
        return importlib.metadata.version("flowith")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "(not installed)"


def add_commands(commands: argparse._SubParsersAction[CommandParser]) -> None:
    """Every subcommand but ``demo``."""
    chat = _command(commands, "chat", "ask a text model; the answer streams as it is written")
    chat.add_argument("prompt", nargs="+", help="the message (several words are joined)")
    chat.add_argument("--model", help="model id (see 'flowith models')")
    chat.add_argument("--conv", metavar="CONV_ID", help="add the turn to this conversation")
    chat.add_argument(
        "--image", action="append", metavar="URL", help="an image URL to send (repeatable)"
    )
    chat.add_argument(
        "--reasoning",
        action="store_true",
        help="show the model's reasoning when stdout is not a terminal (marked [thinking])",
    )

    image = _command(commands, "image", "generate an image and print its URL")
    image.add_argument("prompt", nargs="+")
    image.add_argument("--model", help="image model id")
    image.add_argument("--aspect-ratio", default="1:1", help="W:H (default 1:1)")
    image.add_argument("--size", default="512", help="512, 1k, 2k or 4k (default 512)")
    image.add_argument("--out", metavar="DIR", help="save the image into DIR")
    image.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)

    video = _command(commands, "video", "generate a video and print its URL")
    video.add_argument("prompt", nargs="+")
    video.add_argument("--model", help="video model id")
    video.add_argument("--image-url", default="", metavar="URL", help="first frame")
    video.add_argument("--aspect-ratio", default="16:9", help="W:H (default 16:9)")
    video.add_argument("--resolution", default="480p", help="480p, 720p or 1080p (default 480p)")
    video.add_argument("--out", metavar="DIR", help="save the video into DIR")
    video.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)

    upload = _command(commands, "upload", "upload a file to Flowith's CDN and print its URL")
    upload.add_argument("file")

    models = _command(commands, "models", "the model catalogue")
    models.add_argument(
        "--media", choices=("text", "image", "video"), help="only models of this media"
    )

    _command(commands, "credits", "credit entries and the total left")

    conversations = _command(commands, "conversations", "list, show, rename or delete")
    actions = conversations.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _command(actions, "list", "the newest conversations")
    listing.add_argument("--limit", type=_count, default=20, help="how many (default 20)")
    show = _command(actions, "show", "a conversation's canvas: its nodes in order")
    show.add_argument("conv_id", metavar="CONV_ID")
    rename = _command(actions, "rename", "give a conversation a new title")
    rename.add_argument("conv_id", metavar="CONV_ID")
    rename.add_argument("title", nargs="+", metavar="TITLE")
    delete = _command(actions, "delete", "delete a conversation")
    delete.add_argument("conv_id", metavar="CONV_ID")

    templates = _command(commands, "templates", "prompt templates")
    templates.add_argument("--type", dest="template_type", metavar="T", help="only this type")

    profile = _command(commands, "profile", "show the profile, or change fields of it")
    profile.add_argument(
        "--set",
        dest="changes",
        action="append",
        metavar="KEY=VALUE",
        help="change a field (repeatable), then show the profile",
    )

    rewards = _command(commands, "rewards", "daily rewards")
    rewards.add_argument("action", choices=("status", "claim"))

    events = _command(commands, "events", "print the live event stream as JSON lines")
    events.add_argument(
        "--sse", action="store_true", help="/user_stream/sse (heartbeats, media results)"
    )
    events.add_argument(
        "--seconds", type=_positive, default=10.0, help="listen this long (default 10)"
    )

    check = _command(commands, "doctor", "check which protocol assumptions still hold (read-only)")
    check.add_argument(
        "--seconds",
        type=_positive,
        default=doctor.DEFAULT_SECONDS,
        help=f"listen to the live streams this long (default {doctor.DEFAULT_SECONDS:g})",
    )


# -- settings and tokens -----------------------------------------------------------------------


@attrs.frozen
class Settings:
    """The global options, resolved against the environment."""

    transport: str
    backend: str
    json: bool
    token: str = attrs.field(repr=False)  # never in a traceback or a debug print
    refresh_token: str = attrs.field(repr=False)
    user_id: str
    edge_url: str
    supabase_url: str
    edge_auth: str
    timeout: float
    save_tokens: Path | None
    result_timeout: float = 120.0
    record: Path | None = None
    replay: Path | None = None


def write_tokens(path: Path, access_token: str, refresh_token: str) -> None:
    """Replace ``path`` with the tokens, atomically and readable only by the
    user: a temporary file (created 0600) is written, synced and renamed."""
    text = json.dumps({"access_token": access_token, "refresh_token": refresh_token}) + "\n"
    folder = path.parent if str(path.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _read_tokens(path: Path) -> tuple[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # a local file that cannot be read: exit 1
        raise OSError(f"cannot read the tokens in {path}: {type(exc).__name__}") from None
    access = data.get("access_token") if isinstance(data, dict) else None
    refresh = data.get("refresh_token", "") if isinstance(data, dict) else None
    if not isinstance(access, str) or not access or not isinstance(refresh, str):
        raise OSError(f"{path} does not hold {{'access_token', 'refresh_token'}} strings")
    return access, refresh


def resolve_settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    """The options, else the environment, else the defaults; a token file
    that exists wins over both (it holds the newest tokens)."""
    check_choices(args.transport, args.backend)
    for option in ("save_tokens", "record", "replay", "out"):
        if getattr(args, option, None) == "":
            # Else taken for the option left out: an offline replay would go online.
            raise UsageError(f"--{option.replace('_', '-')} needs a file name, not ''")
    save = Path(args.save_tokens) if args.save_tokens else None
    # Trimmed, as the client trims them: blanks alone are no token.
    token = (args.token or env.get("FLOWITH_TOKEN", "")).strip()
    refresh = (args.refresh_token or env.get("FLOWITH_REFRESH_TOKEN", "")).strip()
    if save is not None and save.exists():
        token, refresh = _read_tokens(save)
    for name, value in (("token", token), ("refresh token", refresh)):
        if value and not header_safe(value.strip()):  # never quoted: it is a secret
            raise UsageError(f"the {name} holds a character no HTTP header can carry")
    replay = Path(args.replay) if args.replay else None
    if replay is not None and args.record:
        raise UsageError("--record and --replay exclude each other: a replay sends nothing")
    if not token and replay is None:
        raise UsageError("no token: pass --token or set FLOWITH_TOKEN")
    edge_auth = args.edge_auth or env.get("FLOWITH_EDGE_AUTH", "") or "bare"
    if edge_auth not in ("bare", "bearer"):
        # Quoted masked: a token in the wrong variable is a likely mistake.
        shown = redact(repr(edge_auth), [token, refresh])
        raise UsageError(f"FLOWITH_EDGE_AUTH must be bare or bearer, got {shown}")
    return Settings(
        transport=args.transport,
        backend=args.backend,
        json=args.json,
        token=token,
        refresh_token=refresh,
        user_id=args.user_id or env.get("FLOWITH_USER_ID", ""),
        edge_url=args.edge_url or env.get("FLOWITH_EDGE_URL", "") or DEFAULT_EDGE_URL,
        supabase_url=args.supabase_url
        or env.get("FLOWITH_SUPABASE_URL", "")
        or DEFAULT_SUPABASE_URL,
        edge_auth=edge_auth,
        timeout=args.timeout,
        result_timeout=args.result_timeout,
        save_tokens=save,
        record=Path(args.record) if args.record else None,
        replay=replay,
    )


class Tokens:
    """The tokens in use; renewed ones are kept (and saved) because a refresh
    token works once: losing the new one signs the user out."""

    def __init__(self, access: str, refresh: str, save: Path | None, err: TextIO) -> None:
        self.access = access
        self.refresh = refresh
        self._save = save
        self._err = err
        self._seen = {access, refresh}
        #: Renewed tokens could not be written to ``--save-tokens``: the run exits 1.
        self.unsaved = False

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every token seen in this run, renewed and replaced ones included."""
        return tuple(s for s in self._seen if s)

    async def renewed(self, access: str, refresh: str) -> None:
        """The client's ``on_token_refresh``."""
        self.access, self.refresh = access, refresh
        self._seen |= {access, refresh}
        if self._save is None:
            self._err.write(
                "note: the tokens were renewed and the old refresh token is used up; "
                "pass --save-tokens FILE to keep the new ones\n"
            )
            return
        try:
            await anyio.to_thread.run_sync(write_tokens, self._save, access, refresh)
        except OSError as exc:
            # The old refresh token is spent: a script must see this, not a success.
            self.unsaved = True
            self._err.write(f"flowith: could not save the new tokens to {self._save}: {exc}\n")


# -- output ------------------------------------------------------------------------------------


def _speaks_unicode(stream: TextIO) -> bool:
    """Whether ``stream``'s encoding can carry any character (a UTF)."""
    try:
        return codecs.lookup(getattr(stream, "encoding", None) or "utf-8").name.startswith("utf-")
    except LookupError:
        return False


class Output:
    """stdout and stderr, with every secret scrubbed from what is written."""

    def __init__(self, out: TextIO, err: TextIO, secrets: Callable[[], Iterable[str]]) -> None:
        self.out = out
        self.err = err
        self._secrets = secrets
        # JSON for a stream that cannot carry every character (ASCII, Latin-1) escapes
        # them itself, as JSON does: the stream's own escapes (\U0001f600) are no JSON.
        self._ascii_json = not _speaks_unicode(out)

    def scrub(self, text: str) -> str:
        return redact(text, self._secrets())

    def write(self, text: str) -> None:
        self.out.write(self.scrub(text))
        self.out.flush()

    def line(self, text: str = "") -> None:
        self.write(text + "\n")

    def note(self, text: str) -> None:
        """A remark for the person at the terminal (stderr, never parsed)."""
        self.err.write(self.scrub(text) + "\n")
        self.err.flush()

    def document(self, value: Any) -> None:
        """The one JSON document of ``--json``."""
        self.line(json.dumps(value, ensure_ascii=self._ascii_json, indent=2, default=str))

    def json_line(self, value: Any) -> None:
        """One JSON line of a stream, flushed at once."""
        self.line(
            json.dumps(value, ensure_ascii=self._ascii_json, separators=(",", ":"), default=str)
        )

    @property
    def width(self) -> int:
        """Where text wraps: the terminal's width, else 100 columns."""
        return max(shutil.get_terminal_size((100, 24)).columns, 40)

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
        # Scrubbed before any cell is cut: a cut token no longer looks like one.
        cells = [[self.scrub(_cell(c)) for c in row] for row in rows]
        # Cut to the terminal's width; in a file or a pipe, where a cut is lost for
        # good, not at all.
        width = self.width if self.out.isatty() else sys.maxsize
        for text in render_table(headers, cells, width):
            self.line(text)

    def fields(self, values: Mapping[str, Any]) -> None:
        """``key: value`` lines, long values wrapped under themselves."""
        keys = [str(k) for k in values]
        pad = max((len(k) for k in keys), default=0) + 2
        for key, value in zip(keys, values.values(), strict=True):
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            text = _printable(self.scrub(text))  # scrubbed before wrapping cuts a token
            lead = f"{key + ':':<{pad}}"
            wrapped = textwrap.wrap(
                text, self.width, initial_indent=lead, subsequent_indent=" " * pad
            )
            self.line("\n".join(wrapped) if wrapped else lead.rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return _printable(str(value))


def _columns(text: str) -> int:
    """The columns ``text`` takes on a terminal: two for a wide (CJK) character,
    none for a combining mark, one for the rest."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def _fit(text: str, size: int) -> str:
    """``text`` cut (with "…") to ``size`` columns, then padded to them."""
    if _columns(text) > size:
        kept = []
        used = 1  # the "…"
        for character in text:
            width = _columns(character)
            if used + width > size:
                break
            kept.append(character)
            used += width
        text = "".join(kept) + "…"
    return text + " " * (size - _columns(text))


def render_table(headers: Sequence[str], rows: list[list[str]], width: int) -> list[str]:
    """Columns padded to line up (in terminal columns: a CJK character takes two);
    the widest column is cut (with "…") until the table fits ``width``, but never the
    ``ID`` column: ids are what one pastes into the next command (``--conv``,
    ``rename``, ``--model``)."""
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [_columns(h) for h in headers]
    for row in cells:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], _columns(cell))
    gap = 2
    cuttable = [i for i, header in enumerate(headers) if header != "ID"]
    while cuttable and sum(widths) + gap * (len(widths) - 1) > width:
        widest = max(cuttable, key=lambda i: widths[i])
        if widths[widest] <= 8:
            break
        widths[widest] -= 1
    lines = []
    for row in [list(headers), *cells]:
        parts = [_fit(cell, widths[i]) for i, cell in enumerate(row)]
        lines.append((" " * gap).join(parts).rstrip())
    return lines


def _number(value: float) -> str:
    """A quota as people write it: ``1523.5``, ``2000``."""
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def _excerpt(text: str, size: int = 240) -> str:
    flat = _printable(text)
    return flat if len(flat) <= size else flat[: size - 1] + "…"


# -- the run -----------------------------------------------------------------------------------


@attrs.define
class Context:
    """What a subcommand needs: its options, the tokens and the output."""

    settings: Settings
    tokens: Tokens
    out: Output

    def client(self, *, edge_auth: str | None = None, renew: bool = True) -> FlowithClientBase:
        """A client of the chosen transport with the current tokens (or the
        replay of a cassette, with ``--replay``)."""
        settings = self.settings
        if settings.replay is not None:
            from flowith_httpx.testing import ReplayClient

            return ReplayClient(settings.replay, timeout=settings.timeout)
        try:
            return client_class(settings.transport)(
                self.tokens.access,
                user_id=settings.user_id,
                refresh_token=self.tokens.refresh if renew else "",
                edge_url=settings.edge_url,
                supabase_url=settings.supabase_url,
                timeout=settings.timeout,
                result_timeout=settings.result_timeout,
                on_token_refresh=self.tokens.renewed if renew else None,
                edge_auth=edge_auth or settings.edge_auth,
                record_to=settings.record,
            )
        except ValueError as exc:  # a setting it refuses: a SOCKS proxy without socksio, say
            raise UsageError(str(exc)) from None


Command = Callable[[Context, argparse.Namespace], Awaitable[int]]


class _Reasoning:
    """Writes a streamed answer; reasoning is dimmed on a terminal, hidden
    when piped unless asked for, and then marked ``[thinking]``."""

    def __init__(self, out: Output, *, show: bool) -> None:
        self.out = out
        self.color = out.out.isatty()
        self.show = self.color or show
        self.in_reasoning = False

    def step(self, step: GenerationOutput) -> None:
        if step.reasoning_delta and self.show:
            if not self.in_reasoning:
                self.in_reasoning = True
                self.out.write("\x1b[2m" if self.color else "[thinking] ")
            self.out.write(step.reasoning_delta)
        if step.text_delta:
            self._end_reasoning()
            self.out.write(step.text_delta)

    def _end_reasoning(self) -> None:
        if self.in_reasoning:
            self.in_reasoning = False
            self.out.write("\x1b[0m\n" if self.color else "\n")

    def finish(self) -> None:
        self._end_reasoning()
        self.out.write("\n")


def _step_json(step: GenerationOutput) -> dict[str, Any]:
    return {
        "event": "step",
        "text_delta": step.text_delta,
        "reasoning_delta": step.reasoning_delta,
        "node_id": step.node_id,
        "conv_id": step.conv_id,
    }


async def _chat(ctx: Context, args: argparse.Namespace) -> int:
    prompt = " ".join(args.prompt)
    printer = _Reasoning(ctx.out, show=args.reasoning)
    last: GenerationOutput | None = None
    async with ctx.client() as client:
        if args.conv is None:
            run = client.generate_stream(prompt, model=args.model, images=args.image or None)
        else:  # a turn of the conversation: its thread is read and sent along
            session = client.start_conversation(conv_id=args.conv)
            run = session.send_stream(prompt, model=args.model, images=args.image or None)
        async with run:
            async for step in run:
                last = step
                if ctx.settings.json:
                    ctx.out.json_line(_step_json(step))
                else:
                    printer.step(step)
    if last is None:
        raise GenerationError("the generation ended without an answer")
    if ctx.settings.json:
        ctx.out.json_line(
            {
                "event": "result",
                "text": last.text,
                "reasoning": last.reasoning,
                "node_id": last.node_id,
                "conv_id": last.conv_id,
                "model": last.model,
            }
        )
    else:
        printer.finish()
        ctx.out.note(f"conversation {last.conv_id} (continue it with --conv {last.conv_id})")
    return EXIT_OK


async def _with_progress(ctx: Context, label: str, work: Callable[[], Awaitable[T]]) -> T:
    """Wait for ``work`` while showing the elapsed time on stderr: a line that
    updates itself on a terminal, a line every 10 s otherwise."""
    err = ctx.out.err
    tty = err.isatty()
    started = anyio.current_time()

    async def tick() -> None:
        seconds = 0
        while True:
            await anyio.sleep(1)
            seconds += 1
            if tty:
                err.write(f"\r{label}: waiting, {seconds} s")
                err.flush()
            elif seconds % 10 == 0:
                err.write(f"{label}: still waiting, {seconds} s\n")
                err.flush()

    outcome: list[T] = []
    error: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(tick)
        try:
            outcome.append(await work())
        except Exception as exc:  # re-raised below, once the ticker is gone
            error = exc
        group.cancel_scope.cancel()
    if tty:
        err.write("\r\x1b[K")
    if error is not None:
        raise error
    ctx.out.note(f"{label}: ready after {anyio.current_time() - started:.1f} s")
    return outcome[0]


async def _image(ctx: Context, args: argparse.Namespace) -> int:
    async with ctx.client() as client:
        result = await _with_progress(
            ctx,
            "image",
            lambda: client.generate_image(
                " ".join(args.prompt),
                model=args.model,
                aspect_ratio=args.aspect_ratio,
                image_size=args.size,
            ),
        )
        image = result.image
        if image is None:
            raise GenerationError("the image generation returned no image")
        await _deliver(ctx, args, image.url, image.save, result)
    return EXIT_OK


async def _video(ctx: Context, args: argparse.Namespace) -> int:
    async with ctx.client() as client:
        result = await _with_progress(
            ctx,
            "video",
            lambda: client.generate_video(
                " ".join(args.prompt),
                model=args.model,
                image_url=args.image_url,
                aspect_ratio=args.aspect_ratio,
                resolution=args.resolution,
            ),
        )
        if not result.video_url:
            raise GenerationError("the video generation returned no URL")
        await _deliver(ctx, args, result.video_url, result.save, result)
    return EXIT_OK


async def _deliver(
    ctx: Context,
    args: argparse.Namespace,
    url: str,
    save: Callable[..., Awaitable[Path]],
    result: ImageOutput | VideoOutput,
) -> None:
    """Print where a media result is, after saving it into ``--out`` if asked;
    if saving fails, still say where it is (it was made, and paid for) before
    the error."""
    show = functools.partial(
        _media_result, ctx, url, model=result.model, node_id=result.node_id, conv_id=result.conv_id
    )
    if not args.out:
        show(None)
        return
    try:
        path = await save(args.out, overwrite=args.overwrite)
    except FileExistsError as exc:
        show(None)
        raise FileExistsError(f"{exc.filename} exists; pass --overwrite to replace it") from None
    except BaseException:
        show(None)
        raise
    show(path)


def _media_result(
    ctx: Context, url: str, path: Path | None, *, model: str, node_id: str, conv_id: str
) -> None:
    if ctx.settings.json:
        ctx.out.document(
            {
                "url": url,
                "path": None if path is None else str(path),
                "model": model,
                "node_id": node_id,
                "conv_id": conv_id,
            }
        )
        return
    ctx.out.line(url)
    if path is not None:
        ctx.out.line(f"saved to {path}")


async def _upload(ctx: Context, args: argparse.Namespace) -> int:
    file = anyio.Path(args.file)
    if await file.is_dir():
        raise IsADirectoryError(f"{args.file} is a folder, not a file")
    if not await file.exists():
        raise FileNotFoundError(f"no such file: {args.file}")
    if not await file.is_file():  # a device or a pipe: no size to announce
        raise OSError(f"{args.file} is not a regular file (an upload is read from a file on disk)")
    async with ctx.client() as client:
        record = await client.upload_file(args.file)
    if ctx.settings.json:
        ctx.out.document({"url": record.url, "file_type": record.file_type})
    else:
        ctx.out.line(record.url)
    return EXIT_OK


async def _models(ctx: Context, args: argparse.Namespace) -> int:
    async with ctx.client() as client:
        models = await client.list_models()
    if args.media:
        models = [m for m in models if m.media == args.media]
    rows = [{"id": m.model_id, "title": m.title, "media": m.media, "tier": m.tier} for m in models]
    if ctx.settings.json:
        ctx.out.document(rows)
    else:
        ctx.out.table(("ID", "TITLE", "MEDIA", "TIER"), [list(r.values()) for r in rows])
    return EXIT_OK


async def _credits(ctx: Context, args: argparse.Namespace) -> int:
    async with ctx.client() as client:
        entries = await client.get_credits()
    total = sum(e.remain_quota for e in entries)
    if ctx.settings.json:
        ctx.out.document(
            {
                "entries": [
                    {
                        "sub_type": e.sub_type,
                        "remain_quota": e.remain_quota,
                        "init_quota": e.init_quota,
                        "from_date": e.from_date,
                        "to_date": e.to_date,
                    }
                    for e in entries
                ],
                "total": total,
            }
        )
        return EXIT_OK
    ctx.out.table(
        ("TYPE", "LEFT", "OF", "FROM", "TO"),
        [
            [e.sub_type, _number(e.remain_quota), _number(e.init_quota), e.from_date, e.to_date]
            for e in entries
        ],
    )
    ctx.out.line(f"total: {_number(total)} credits left")
    return EXIT_OK


def _conversation_json(record: Any) -> dict[str, Any]:
    return {
        "id": record.conv_id,
        "title": record.title,
        "preview": record.preview,
        "updated_at": record.metadata.get("updated_at"),
    }


async def _conversations(ctx: Context, args: argparse.Namespace) -> int:
    out = ctx.out
    async with ctx.client() as client:
        if args.action == "list":
            records = await client.list_conversations(limit=args.limit)
            if ctx.settings.json:
                out.document([_conversation_json(r) for r in records])
            else:
                out.table(
                    ("ID", "TITLE", "UPDATED"),
                    [
                        [r.conv_id, r.title or "(untitled)", str(r.metadata.get("updated_at", ""))]
                        for r in records
                    ],
                )
        elif args.action == "show":
            record = await client.get_conversation(args.conv_id)
            nodes = await client.get_flow_nodes(args.conv_id)
            _show_conversation(ctx, record, nodes)
        elif args.action == "rename":
            record = await client.rename_conversation(args.conv_id, " ".join(args.title))
            if ctx.settings.json:
                out.document(_conversation_json(record))
            else:
                out.line(f"renamed {record.conv_id}: {_cell(record.title)}")
        else:
            await client.get_conversation(args.conv_id)  # a missing one is an error, not a no-op
            await client.delete_conversation(args.conv_id)
            if ctx.settings.json:
                out.document({"id": args.conv_id, "deleted": True})
            else:
                out.line(f"deleted {args.conv_id}")
    return EXIT_OK


def _node_kind(node_type: str) -> str:
    return {"1": "user", "2": "AI"}.get(node_type, f"type {node_type}")


def _show_conversation(ctx: Context, record: Any, nodes: Sequence[Any]) -> None:
    out = ctx.out
    if ctx.settings.json:
        out.document(
            {
                **_conversation_json(record),
                "nodes": [
                    {
                        "id": n.node_id,
                        "parent": n.p_id,
                        "type": _node_kind(n.node_type),
                        "model": n.model,
                        "text": n.text,
                    }
                    for n in nodes
                ],
            }
        )
        return
    out.line(f"{record.title or '(untitled)'}  ({record.conv_id})")
    out.line(f"{len(nodes)} nodes")
    width = out.width
    for number, node in enumerate(nodes, 1):
        kind = _node_kind(node.node_type)
        head = f"{number}. {kind}" + (f" ({node.model})" if node.model else "") + ": "
        text = _excerpt(out.scrub(node.text)) or "(empty)"
        wrapped = textwrap.wrap(text, width, initial_indent=head, subsequent_indent="     ")
        out.line("\n".join(wrapped))


async def _templates(ctx: Context, args: argparse.Namespace) -> int:
    async with ctx.client() as client:
        templates = await client.list_templates(template_type=args.template_type)
    rows = [
        {
            "id": t.template_id,
            "name": t.name,
            "type": t.template_type,
            "category": t.category,
            "model": t.model,
        }
        for t in templates
    ]
    if ctx.settings.json:
        ctx.out.document(rows)
    else:
        ctx.out.table(("ID", "NAME", "TYPE", "CATEGORY", "MODEL"), [list(r.values()) for r in rows])
    return EXIT_OK


def _changes(pairs: Sequence[str]) -> dict[str, Any]:
    """``--set`` pairs as profile fields (values stay text)."""
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set wants KEY=VALUE, got {pair!r}")
        if key in ("timeout", "user_id"):  # the method's own parameters, not profile fields
            raise UsageError(f"--set cannot change {key!r}")
        changes[key] = value
    return changes


async def _profile(ctx: Context, args: argparse.Namespace) -> int:
    changes = _changes(args.changes or ())
    async with ctx.client() as client:
        if changes:
            profile = await client.update_user_profile(**changes)
        else:
            profile = await client.get_user_profile()
    shown = dict(profile.metadata) or {"id": profile.user_id, "language": profile.language}
    if ctx.settings.json:
        ctx.out.document(shown)
    else:
        ctx.out.fields(shown)
    return EXIT_OK


async def _rewards(ctx: Context, args: argparse.Namespace) -> int:
    async with ctx.client() as client:
        if args.action == "claim":
            answer = await client.claim_daily_reward()
        else:
            answer = await client.get_daily_rewards_status()
    if ctx.settings.json:
        ctx.out.document(answer)
    elif isinstance(answer, Mapping):
        ctx.out.fields(answer)
    else:
        ctx.out.line(json.dumps(answer, ensure_ascii=False))
    return EXIT_OK


async def _events(ctx: Context, args: argparse.Namespace) -> int:
    async with ctx.client() as client:
        listen = client.stream_user_sse if args.sse else client.stream_user_stream
        async for payload in listen(timeout=args.seconds):
            ctx.out.json_line(payload)
    return EXIT_OK


async def _doctor(ctx: Context, args: argparse.Namespace) -> int:
    settings = ctx.settings

    def make(*, edge_auth: str, renew: bool) -> FlowithClientBase:
        return ctx.client(edge_auth=edge_auth, renew=renew)

    report = await doctor.run_doctor(
        make,
        access_token=lambda: ctx.tokens.access,
        user_id=settings.user_id,
        transport=settings.transport,
        backend=settings.backend,
        edge_url=settings.edge_url,
        supabase_url=settings.supabase_url,
        seconds=args.seconds,
    )
    if settings.json:
        ctx.out.document(report.as_json())
    else:
        ctx.out.write(report.render(ctx.out.width))
    return EXIT_API if report.failed else EXIT_OK


COMMANDS: dict[str, Command] = {
    "chat": _chat,
    "image": _image,
    "video": _video,
    "upload": _upload,
    "models": _models,
    "credits": _credits,
    "conversations": _conversations,
    "templates": _templates,
    "profile": _profile,
    "rewards": _rewards,
    "events": _events,
    "doctor": _doctor,
}


def leaf_error(error: BaseException) -> BaseException:
    """The error inside (nested) exception groups from task groups: the first
    library error if there is one, else the first error."""
    inner = getattr(error, "exceptions", None)
    if not isinstance(inner, tuple) or not inner:
        return error
    leaves = [leaf_error(e) for e in inner]
    return next((e for e in leaves if isinstance(e, FlowithError)), leaves[0])


def exit_code(error: BaseException) -> int | None:
    """The exit code of a failure, or ``None`` for a bug (which keeps its traceback)."""
    if isinstance(error, UsageError):
        return EXIT_USAGE
    if isinstance(error, ValidationError) and error.status_code is None:
        return EXIT_USAGE  # refused by the client before any request
    if isinstance(error, AuthenticationError):
        return EXIT_AUTH
    if isinstance(error, ConnectionFailedError):
        return EXIT_CONNECTION
    if isinstance(error, CassetteError):
        return EXIT_LOCAL  # a cassette that cannot be read is a local file
    if isinstance(error, CassetteMismatch):
        return EXIT_API  # the replayed command asked for what the recording lacks
    if isinstance(error, (FlowithError, builtins.TimeoutError)):
        return EXIT_API
    if isinstance(error, OSError):
        return EXIT_LOCAL
    return None


def error_line(error: BaseException) -> str:
    text = _printable(str(error))
    if isinstance(error, builtins.TimeoutError) and not text:
        text = "timed out"
    return text or type(error).__name__


class Terminated(KeyboardInterrupt):
    """The run was ended by SIGTERM, and wound down as Ctrl-C winds it down."""


def run_until_interrupted(function: Callable[..., Awaitable[T]], *args: object, backend: str) -> T:
    """``anyio.run``, where Ctrl-C is a ``KeyboardInterrupt`` on every Python, and
    SIGTERM a :class:`Terminated`.

    On 3.10, anyio's backport of ``asyncio.Runner`` cannot uncancel the main task
    that SIGINT cancelled, and lets its ``CancelledError`` out instead. A
    cancellation of the whole run can only have come from outside: it is an
    interruption whatever its source. SIGTERM's default is to end the process on
    the spot, leaving a download's ``.part`` file and a cassette's last records
    behind: it is handed to the event loop's own Ctrl-C handling instead.
    """
    terminated = False
    # Started with SIGINT ignored (a shell's background job: `flowith fake &`), the
    # event loops install no handler of their own, and SIGTERM had none to borrow:
    # it raised KeyboardInterrupt wherever the run stood, past its winding down.
    # Like an explicit `kill -INT`, it winds the run down for the run's length.
    ignored = _main_thread() and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def on_sigterm(signum: int, frame: Any) -> None:
        nonlocal terminated
        terminated = True
        on_sigint = signal.getsignal(signal.SIGINT)
        if not callable(on_sigint):  # ignored, or the system's default: none to borrow
            raise KeyboardInterrupt
        on_sigint(signal.SIGINT, frame)

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread: signals are not ours to handle
        previous = None
    try:
        try:
            return anyio.run(function, *args, backend=backend)
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
        except BaseException as exc:
            # trio raises Ctrl-C in whichever task runs: inside a task group, it comes
            # out wrapped in an exception group (with the others' cancellations).
            raise_interrupt_in(exc)
            raise
    except KeyboardInterrupt:
        if terminated:
            raise Terminated from None
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _main_thread() -> bool:
    """Whether signal handlers may be set here (only the main thread may)."""
    return threading.current_thread() is threading.main_thread()


def reader_gone(stream: TextIO) -> int:
    """stdout's reader went away (``flowith models | head -1``): end quietly, as a
    process that SIGPIPE ended would, and let nothing write to the pipe again
    (Python's own flush at exit would complain)."""
    with contextlib.suppress(OSError, ValueError):  # not a real file: nothing to redirect
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
    return EXIT_READER_GONE


def run_command(
    args: argparse.Namespace,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run the parsed subcommand; every failure becomes one line and an exit code."""
    out_stream = sys.stdout if stdout is None else stdout
    err_stream = sys.stderr if stderr is None else stderr
    try:
        settings = resolve_settings(args, os.environ if env is None else env)
    except UsageError as exc:
        given = [getattr(args, name, None) or "" for name in ("token", "refresh_token")]
        given += [(os.environ if env is None else env).get(name, "") for name in _TOKEN_VARIABLES]
        err_stream.write(f"flowith: {redact(str(exc), given)}\n")
        return EXIT_USAGE
    except OSError as exc:  # the token file cannot be read
        err_stream.write(f"flowith: {error_line(exc)}\n")
        return EXIT_LOCAL
    tokens = Tokens(settings.token, settings.refresh_token, settings.save_tokens, err_stream)
    out = Output(out_stream, err_stream, lambda: tokens.secrets)
    ctx = Context(settings, tokens, out)
    command = COMMANDS[args.command]
    try:
        finished = run_until_interrupted(command, ctx, args, backend=settings.backend)
        return EXIT_LOCAL if finished == 0 and tokens.unsaved else finished
    except Terminated:
        out.note("flowith: terminated")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        out.note("flowith: interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        error = leaf_error(exc)
        if isinstance(error, BrokenPipeError):
            return reader_gone(out_stream)
        code = exit_code(error)
        if code is None:
            raise
        out.note(f"flowith: {error_line(error)}")
        return code

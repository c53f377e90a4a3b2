"""The ``flowith`` command.

``flowith demo`` needs no account and no network: it starts the fake Flowith on
a loopback port and holds a streamed, multi-turn conversation with it through
the real client and real sockets, printing what a user would see.

``flowith fake`` serves a fake Flowith until Ctrl-C (its model answers "You said:
…", without the demo's reasoning and memory) and prints the environment that points
the other commands at it, to try them offline.

The other subcommands (:mod:`flowith_httpx.cli_commands`) use an account (or the fake):
``chat``, ``image``, ``video``, ``upload``, ``models``, ``credits``,
``conversations list|show|rename|delete``, ``templates``, ``profile``,
``rewards status|claim``, ``events`` and ``doctor``
(:mod:`flowith_httpx.doctor`). ``flowith --help`` lists their options.

Exit codes:

- 0: success;
- 1: a local file could not be read or written;
- 2: usage error (argparse's, a value the client refuses before sending it,
  or no token: set ``FLOWITH_TOKEN``);
- 3: authentication failed (``AuthenticationError``);
- 4: server or API error (``APIError`` and its other subclasses,
  ``GenerationError``, ``TimeoutError``, ``ResponseDecodeError``); for
  ``doctor``, a protocol assumption fails;
- 5: connection failed (``ConnectionFailedError``: an unreachable host);
- 130: interrupted (Ctrl-C); 141: the reader of stdout went away; 143: terminated
  (SIGTERM), after closing what was open, as Ctrl-C does. Not ``fake``: a server
  that serves until stopped, it exits 0 when Ctrl-C or SIGTERM stops it.

Every failure prints one line, ``flowith: <message>``, on stderr; no
credential is ever printed.
"""

from __future__ import annotations

import argparse
import codecs
import io
import logging
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from typing import TextIO

import anyio

from flowith_httpx.cli_commands import (
    EXIT_INTERRUPTED,
    EXIT_LOCAL,
    EXIT_TERMINATED,
    Terminated,
    UsageError,
    add_commands,
    build_parser,
    check_choices,
    client_class,
    error_line,
    exit_code,
    leaf_error,
    reader_gone,
    run_command,
    run_until_interrupted,
)
from flowith_proto.fake import FakeFlowith, Step, Turn, chunk, complete, pause

__all__ = ["main"]

DEMO_PROMPTS = (
    "Hi! My name is Alice and I love async Python.",
    "What is my name, and what do I love?",
    "Write a haiku about that.",
)

DEMO_IMAGE = "A lighthouse at dusk, watercolour"
DEMO_VIDEO = "The lighthouse beam sweeping over the waves"

_NAME = re.compile(r"my name is (\w+)", re.IGNORECASE)
_LOVE = re.compile(r"i love ([^.!?]+)", re.IGNORECASE)


def _remembered(turn: Turn, pattern: re.Pattern[str]) -> str | None:
    for message in turn.messages:
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, str):
            found = pattern.search(content)
            if found:
                return found.group(1)
    return None


def demo_responder(turn: Turn) -> Sequence[Step]:
    """A small scripted model that really uses the conversation history the
    client sends, so the demo shows multi-turn memory rather than canned text."""
    name = _remembered(turn, _NAME) or "friend"
    love = _remembered(turn, _LOVE) or "many things"
    prompt = turn.prompt.lower()
    if "haiku" in prompt:
        thought = f"A haiku: 5-7-5 syllables, about {love}."
        answer = "Tasks await, then wake —\nevent loops hum quietly,\none stream serves them all."
    elif "what is my name" in prompt:
        thought = f"Earlier in this conversation the user said their name is {name}."
        answer = f"Your name is {name}, and you love {love}."
    else:
        thought = "The user is introducing themselves; greet them by name."
        answer = f"Nice to meet you, {name}! Ask me anything."
    steps: list[Step] = [chunk("<think>")]
    steps += [chunk(word) for word in re.findall(r"\S+\s*", thought)]
    steps.append(chunk("</think>"))
    for word in re.findall(r"\S+\s*", answer):
        steps += [pause(0.02), chunk(word)]
    steps.append(complete())
    return steps


class _Printer:
    """Writes reasoning dimmed on a terminal, marked otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.color = out.isatty()
        self.in_reasoning = False

    def reasoning(self, text: str) -> None:
        if not self.in_reasoning:
            self.in_reasoning = True
            self.out.write("\x1b[2m  thinking: " if self.color else "  [thinking] ")
        self.out.write(text)
        self.out.flush()

    def answer(self, text: str) -> None:
        if self.in_reasoning:
            self.in_reasoning = False
            self.out.write("\x1b[0m\n" if self.color else "\n")
            self.out.write("flowith> ")
        self.out.write(text)
        self.out.flush()


async def run_demo(transport: str, backend: str, out: TextIO) -> None:
    """The demo conversation against a fake Flowith served on loopback."""
    from flowith_httpx.fake_server import FakeFlowithServer

    fake = FakeFlowith(responder=demo_responder, heartbeat_interval=1.0)
    async with FakeFlowithServer(fake) as server:
        out.write(f"flowith demo: a fake Flowith is serving on {server.url}\n")
        out.write(f"(no account, no network; transport {transport} on {backend})\n")
        make_client = client_class(transport)
        async with make_client(fake.token, edge_url=server.url, supabase_url=server.url) as client:
            session = client.start_conversation(model="deepseek-r1")
            for prompt in DEMO_PROMPTS:
                out.write(f"\nyou> {prompt}\n")
                printer = _Printer(out)
                async for step in session.send_stream(prompt):
                    if step.reasoning_delta:
                        printer.reasoning(step.reasoning_delta)
                    if step.text_delta:
                        printer.answer(step.text_delta)
                out.write("\n")
            with tempfile.TemporaryDirectory(prefix="flowith-demo-") as folder:
                out.write(f"\nyou> (image) {DEMO_IMAGE}\n")
                image = await session.generate_image(DEMO_IMAGE, aspect_ratio="16:9")
                assert image.image is not None
                saved = await image.image.save(folder)
                out.write(f"flowith> image ready: {image.image.url}\n")
                out.write(f"         saved to {saved} ({saved.stat().st_size} bytes)\n")
                out.write(f"\nyou> (video) {DEMO_VIDEO}\n")
                video = await session.generate_video(DEMO_VIDEO)
                saved = await video.save(folder)
                out.write(f"flowith> video ready: {video.video_url}\n")
                out.write(f"         saved to {saved} ({saved.stat().st_size} bytes)\n")
            out.write("         (a temporary folder, removed as the demo ends)\n")
            assert session.conv_id is not None
            title = await client.generate_title([{"role": "user", "content": DEMO_PROMPTS[0]}])
            await client.rename_conversation(session.conv_id, title)
            out.write(f"\ntitled the conversation: {title}\n")
            conversations = await client.list_conversations(limit=5)
            out.write("your latest conversations:\n")
            for record in conversations:
                out.write(f"  {record.conv_id}  {record.title or '(untitled)'}\n")
            nodes = await client.get_flow_nodes(session.conv_id)
            kinds = " → ".join("you" if n.node_type == "1" else "ai" for n in nodes)
            out.write(f"the canvas of this conversation: {len(nodes)} nodes, {kinds}\n")
            credits = await client.get_credits()
            out.write(f"credits left: {sum(c.remain_quota for c in credits):.2f}\n")
            out.write(
                f"\n{session.turn} turns in conversation {session.conv_id}, "
                f"over {client.stream_connections} shared event stream connection.\n"
            )


def _parser() -> argparse.ArgumentParser:
    parser, commands = build_parser()
    for verb, summary in (
        ("record", "run COMMAND and record its session to a cassette: record FILE COMMAND..."),
        ("replay", "run COMMAND against a recorded cassette, offline: replay FILE COMMAND..."),
    ):
        cassette = commands.add_parser(verb, help=summary)
        cassette.add_argument("cassette", metavar="FILE")
        cassette.add_argument("rest", nargs=argparse.REMAINDER, metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="chat with a fake Flowith on loopback (no account or network needed)"
    )
    # No defaults here: the global --transport / --backend provide them, and
    # either spelling (before or after "demo") works.
    demo.add_argument("--transport", choices=("httpx", "aiohttp"), default=argparse.SUPPRESS)
    demo.add_argument("--backend", choices=("asyncio", "trio"), default=argparse.SUPPRESS)
    fake = commands.add_parser(
        "fake",
        help="serve a fake Flowith on loopback until Ctrl-C, for trying the other commands "
        "offline: it prints the environment to point them at it",
    )
    fake.add_argument("--port", type=_port, default=0, help="port to listen on (default: any)")
    add_commands(commands)
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port (0 to 65535): {text!r}")
    return port


async def serve_fake(port: int, out: TextIO, *, started: anyio.Event | None = None) -> None:
    """Serve a fake Flowith (with its default model, which echoes the prompt) until
    cancelled, after printing the environment that points the other commands at it."""
    from flowith_httpx.fake_server import FakeFlowithServer, no_proxy_with_loopback

    fake = FakeFlowith()
    # What a 500 of the fake's ("see the server log") points at, on stderr: the
    # library's loggers have no handler of their own.
    failures = logging.StreamHandler(sys.stderr)
    failures.setLevel(logging.WARNING)
    failures.setFormatter(logging.Formatter("flowith fake: %(message)s"))
    FakeFlowithServer.log.addHandler(failures)
    try:
        async with FakeFlowithServer(fake, port=port) as server:
            out.write(
                f"flowith fake: a fake Flowith is serving on {server.url} (Ctrl-C stops it)\n"
                "# in another shell, then run any command (flowith chat hello):\n"
                f"export FLOWITH_EDGE_URL={server.url}\n"
                f"export FLOWITH_SUPABASE_URL={server.url}\n"
                f"export FLOWITH_TOKEN={fake.token}\n"
                # Both spellings: urllib prefers the lower-case one where both are set.
                f"export NO_PROXY={no_proxy_with_loopback(os.environ.get('NO_PROXY'))}\n"
                f"export no_proxy={no_proxy_with_loopback(os.environ.get('no_proxy'))}\n"
            )
            out.flush()
            if started is not None:
                started.set()
            await anyio.sleep_forever()
    finally:
        FakeFlowithServer.log.removeHandler(failures)


def _without_cassette_verb(argv: list[str], verb: str, cassette: str) -> list[str]:
    """``... record FILE COMMAND...`` as ``... COMMAND... --record FILE``, the option
    before a ``--`` of the command's (after it, it would be words of a prompt)."""
    for index in range(len(argv) - 1):
        if argv[index] == verb and argv[index + 1] == cassette:
            rest = argv[index + 2 :]
            if rest[:1] == ["--"]:
                rest = rest[1:]
            end = rest.index("--") if "--" in rest else len(rest)
            return [*argv[:index], *rest[:end], f"--{verb}", cassette, *rest[end:]]
    return argv


class _Discarded(io.TextIOBase):
    """Where the lines for a closed stderr go: nowhere, as to ``/dev/null``."""

    def write(self, text: str) -> int:
        return len(text)


def _escaped(error: UnicodeError) -> tuple[str | bytes, int]:
    """An encoding error handler: a surrogate escape (a byte of the command line that
    was no text) as that byte, any other character as a backslash escape."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    if "\udc80" <= error.object[error.start] <= "\udcff":
        return bytes([ord(error.object[error.start]) - 0xDC00]), error.start + 1
    return codecs.backslashreplace_errors(
        UnicodeEncodeError(
            error.encoding, error.object, error.start, error.start + 1, error.reason
        )
    )


_ESCAPED = "flowith-escaped"
codecs.register_error(_ESCAPED, _escaped)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowith`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if sys.stdout is None:  # started with stdout closed (flowith ... >&-)
        print("flowith: standard output is closed", file=sys.stderr or sys.__stderr__)
        return EXIT_LOCAL
    if sys.stderr is None:  # started with stderr closed (2>&-): its lines go nowhere
        sys.stderr = _Discarded()
    for stream in (sys.stdout, sys.stderr):
        # A character the terminal's encoding lacks (PYTHONIOENCODING=ascii, a legacy
        # console, the C locale without UTF-8 mode) is written escaped, not a
        # UnicodeEncodeError ending the run; bytes of the command line that were
        # not text (surrogate escapes) still go out as they came.
        if isinstance(stream, io.TextIOWrapper) and stream.errors in ("strict", "surrogateescape"):
            stream.reconfigure(errors=_ESCAPED)
    try:
        args = _parser().parse_args(argv)
        if args.command in ("record", "replay"):
            if not args.rest:
                print(f"flowith: {args.command} FILE needs a command to run", file=sys.stderr)
                return 2
            args = _parser().parse_args(_without_cassette_verb(argv, args.command, args.cassette))
    except SystemExit as exit:  # --help, or a usage error argparse reported
        return exit.code if isinstance(exit.code, int) else 2
    if args.command == "doctor" and (args.record or args.replay):
        # It makes a client per check, each of which would start the file afresh,
        # and reads the event stream over the network itself.
        print("flowith: doctor cannot be recorded or replayed", file=sys.stderr)
        return 2
    if args.command in ("demo", "fake") and args.json:  # the global option, before it
        print(f"flowith: {args.command} has no JSON output: leave out --json", file=sys.stderr)
        return 2
    if args.command == "demo":
        try:
            check_choices(args.transport, args.backend)
        except UsageError as exc:
            print(f"flowith: {exc}", file=sys.stderr)
            return 2
        # The fake is on loopback: a proxy configured for the internet must not stand
        # in between, nor be set up at all (a SOCKS one would need socksio just to be
        # bypassed), nor NO_PROXY read (httpx refuses a host in it it cannot read).
        # This process's own environment, which both transports read.
        for scheme in ("ALL", "HTTPS", "HTTP", "NO"):
            for name in (f"{scheme}_PROXY", f"{scheme.lower()}_proxy"):
                os.environ.pop(name, None)
        try:
            run_until_interrupted(
                run_demo, args.transport, args.backend, sys.stdout, backend=args.backend
            )
        except Terminated:
            print("flowith: terminated", file=sys.stderr)
            return EXIT_TERMINATED
        except KeyboardInterrupt:
            print("flowith: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as exc:  # one line, as other commands (a task group's: its error)
            error = leaf_error(exc)
            if isinstance(error, BrokenPipeError):
                return reader_gone(sys.stdout)
            code = exit_code(error)  # the output cannot be written (a full disk), say
            if code is None:
                raise
            print(f"flowith: {error_line(error)}", file=sys.stderr)
            return code
        return 0
    if args.command == "fake":
        try:
            run_until_interrupted(serve_fake, args.port, sys.stdout, backend="asyncio")
        except KeyboardInterrupt:
            print("flowith fake: stopped", file=sys.stderr)
        except OSError as exc:  # the port is taken, say
            print(f"flowith: {exc}", file=sys.stderr)
            return EXIT_LOCAL
        return 0
    return run_command(args)

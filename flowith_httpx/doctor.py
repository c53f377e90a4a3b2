"""``flowith doctor``: which of the client's protocol assumptions still hold.

The client is reverse-engineered; the web app changes without notice. The
doctor takes a read-only tour of an account (the auth user, credits, models,
profile, one page of conversations, both live streams for a few seconds) and
judges each assumption of ``protocol.md`` that a change would break as
``holds``, ``fails`` or ``unknown``, with the evidence. The report names no
secret, so it can be pasted into a bug report as it is.

Everything goes through the public client API, except one thing the client
deliberately hides: ``stream_user_stream`` unwraps the ``{"data": ..., "id"}``
envelope, so the doctor reads ``/user_stream/stream`` itself, with the request
the public :class:`~flowith_proto.endpoints.Endpoints` builder makes, to see
the frames as sent.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import platform
import statistics
import sys
import textwrap
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal, Protocol

import anyio
import attrs

from flowith_proto.abc import FlowithClientBase
from flowith_proto.auth import Credentials
from flowith_proto.config import FlowithConfig
from flowith_proto.endpoints import Endpoints
from flowith_proto.errors import (
    AuthenticationError,
    FlowithError,
)
from flowith_proto.events import (
    Connected,
    Heartbeat,
    MalformedEvent,
    UnknownEvent,
    parse_event,
)
from flowith_proto.request import Request
from flowith_proto.sse import SSEDecoder

__all__ = [
    "DEFAULT_SECONDS",
    "EXPECTED_HEARTBEAT_S",
    "ROW_SHAPES",
    "Check",
    "ClientFactory",
    "Report",
    "RowShape",
    "Step",
    "run_doctor",
]

Verdict = Literal["holds", "fails", "unknown"]

#: How long the doctor listens to the live streams by default (seconds): one
#: heartbeat interval and some margin.
DEFAULT_SECONDS = 6.0
#: protocol.md 2.2 / 4.1: ``{"heartbeat": <ms>}`` about every 5 s.
EXPECTED_HEARTBEAT_S = 5.0
#: A measured interval within this factor of the expected one still "holds".
_HEARTBEAT_TOLERANCE = 1.5
#: Bytes of a raw /stream frame quoted as evidence.
_EXCERPT = 120


@attrs.frozen
class RowShape:
    """The fields a row type is read from (``expected``: the client's typed
    record reads them) and the other fields protocol.md or the fake know of
    (``known``); anything else is new."""

    name: str
    section: str
    expected: frozenset[str]
    known: frozenset[str]


#: The row shapes the doctor checks; ``expected`` mirrors what
#: ``flowith_proto.convert`` reads into each record (a test keeps them in step).
ROW_SHAPES: dict[str, RowShape] = {
    "conversation": RowShape(
        "conversation rows",
        "2.4",
        frozenset({"id", "title", "user_id", "is_absolute_mode", "preview"}),
        frozenset({"project_id", "is_delete", "metadata", "created_at", "updated_at"}),
    ),
    "models": RowShape(
        "model entries",
        "2.3",
        frozenset({"title", "media", "tier"}),
        frozenset({"provider", "logo", "desc", "context_window", "reasoning"}),
    ),
    "credits": RowShape(
        "credit entries",
        "2.3",
        frozenset({"remain_quota", "init_quota", "sub_type", "from_date", "to_date"}),
        frozenset({"policy_summary", "remain_days", "credit_policy_snapshot"}),
    ),
}


@attrs.frozen
class Step:
    """One stop of the tour: what was read, and whether it could be."""

    name: str
    ok: bool
    detail: str


@attrs.frozen
class Check:
    """One protocol assumption, its verdict and the evidence for it."""

    name: str
    section: str
    verdict: Verdict
    evidence: str


@attrs.define
class Report:
    """Everything the doctor found, as text or as one JSON document."""

    header: dict[str, str]
    steps: list[Step] = attrs.field(factory=list)
    checks: list[Check] = attrs.field(factory=list)

    @property
    def failed(self) -> bool:
        """An assumption fails, or a stop of the tour could not be read."""
        return any(c.verdict == "fails" for c in self.checks) or not all(s.ok for s in self.steps)

    def counts(self) -> dict[str, int]:
        counted = Counter(c.verdict for c in self.checks)
        return {verdict: counted.get(verdict, 0) for verdict in ("holds", "fails", "unknown")}

    def as_json(self) -> dict[str, Any]:
        return {
            "header": dict(self.header),
            "tour": [attrs.asdict(step) for step in self.steps],
            "assumptions": [attrs.asdict(check) for check in self.checks],
            "summary": self.counts(),
        }

    def render(self, width: int) -> str:
        """The report as aligned, wrapped text ``width`` columns wide."""
        width = max(width, 60)
        head = self.header
        lines = [
            f"flowith doctor report ({head['generated']})",
            f"  flowith {head['flowith']}, Python {head['python']}, {head['platform']}",
            f"  transport {head['transport']} on {head['backend']}",
            f"  edge {head['edge_url']}",
            f"  supabase {head['supabase_url']}",
            f"  listened to the live streams for {head['seconds']} s",
            "",
            "tour:",
        ]
        name_width = max((len(s.name) for s in self.steps), default=0)
        for step in self.steps:
            lead = f"  {'ok' if step.ok else 'FAILED':<6}  {step.name:<{name_width}}  "
            lines.extend(_wrapped(lead, step.detail, width))
        lines += ["", "assumptions:"]
        # By name only: the sections (kept in the JSON) number the team's protocol
        # fact sheet, which is not shipped.
        labels = [c.name for c in self.checks]
        label_width = max((len(label) for label in labels), default=0)
        for check, label in zip(self.checks, labels, strict=True):
            lead = f"  {check.verdict:<7}  {label:<{label_width}}  "
            lines.extend(_wrapped(lead, check.evidence, width))
        counts = self.counts()
        lines += [
            "",
            f"summary: {counts['holds']} hold, {counts['fails']} fail, {counts['unknown']} unknown",
        ]
        return "\n".join(lines) + "\n"


def _wrapped(lead: str, text: str, width: int) -> list[str]:
    """``lead`` then ``text`` wrapped under itself (or under the lead's start
    when the lead leaves too little room)."""
    indent = " " * len(lead) if width - len(lead) >= 30 else "      "
    return textwrap.wrap(
        text,
        width=width,
        initial_indent=lead,
        subsequent_indent=indent,
        break_on_hyphens=False,
    ) or [lead.rstrip()]


class ClientFactory(Protocol):
    """Makes a client of the chosen transport with the current tokens.

    ``edge_auth`` picks the edge's scheme; ``renew=False`` leaves the refresh
    token out, so a refused probe cannot spend it (a refresh token works once).
    """

    def __call__(self, *, edge_auth: str, renew: bool) -> FlowithClientBase: ...


@attrs.frozen
class _Frame:
    """One frame of a live stream: when it arrived (seconds into the window)
    and its JSON payload (``None`` if it was not JSON)."""

    at: float
    payload: Any
    text: str


# -- the tour ------------------------------------------------------------------------------


async def _timed(
    steps: list[Step], name: str, read: Callable[[], Awaitable[Any]], describe: Callable[[Any], str]
) -> tuple[bool, Any, FlowithError | None]:
    """Run one read of the tour and note it as a step."""
    started = anyio.current_time()
    try:
        value = await read()
    except FlowithError as exc:
        steps.append(Step(name, False, f"{type(exc).__name__}: {exc}"))
        return False, None, exc
    elapsed = anyio.current_time() - started
    steps.append(Step(name, True, f"{describe(value)} ({elapsed:.2f} s)"))
    return True, value, None


async def _probe_edge(make_client: ClientFactory, scheme: str) -> tuple[bool, FlowithError | None]:
    """One read-only edge call with ``scheme``; ``(accepted, error)``."""
    async with make_client(edge_auth=scheme, renew=False) as client:
        try:
            await client.get_credit_type()
        except FlowithError as exc:
            return False, exc
    return True, None


def _edge_auth_check(
    bare: tuple[bool, FlowithError | None], bearer: tuple[bool, FlowithError | None]
) -> tuple[Check, str]:
    """The verdict on protocol.md 1.4, and the scheme the rest of the tour uses."""

    def refused(error: FlowithError | None) -> str:
        return f"refused ({error})" if error is not None else "refused"

    bare_ok, bare_error = bare
    bearer_ok, bearer_error = bearer
    name, section = "edge auth scheme", "1.4"
    if bare_ok:
        other = "Bearer accepted too" if bearer_ok else f"Bearer {refused(bearer_error)}"
        return Check(name, section, "holds", f"the bare token is accepted; {other}"), "bare"
    bare_auth = isinstance(bare_error, AuthenticationError)
    if bearer_ok and bare_auth:
        evidence = (
            f"the edge wants Bearer: the bare token was {refused(bare_error)}, "
            "'Bearer <token>' was accepted (use --edge-auth bearer)"
        )
        return Check(name, section, "fails", evidence), "bearer"
    if bearer_ok:
        evidence = f"the bare call failed for another reason ({bare_error}); Bearer was accepted"
        return Check(name, section, "unknown", evidence), "bearer"
    if bare_auth and isinstance(bearer_error, AuthenticationError):
        evidence = (
            f"the edge refused the token with both schemes (bare: {bare_error}; "
            f"Bearer: {bearer_error}) although Supabase accepted it"
        )
        return Check(name, section, "fails", evidence), "bare"
    evidence = f"no edge call succeeded (bare: {bare_error}; Bearer: {bearer_error})"
    return Check(name, section, "unknown", evidence), "bare"


def _row_check(key: str, rows: Sequence[Mapping[str, Any]] | None, why: str = "") -> Check:
    """Compare served rows with the fields the client reads (missing: fails)
    and the fields known so far (new ones are reported, they break nothing)."""
    shape = ROW_SHAPES[key]
    if rows is None:
        return Check(shape.name, shape.section, "unknown", f"could not be read: {why}")
    if not rows:
        return Check(shape.name, shape.section, "unknown", "no rows to inspect (the list is empty)")
    missing: Counter[str] = Counter()
    new: Counter[str] = Counter()
    for row in rows:
        keys = set(row)
        missing.update(shape.expected - keys)
        new.update(keys - shape.expected - shape.known)
    total = len(rows)

    def listed(counter: Counter[str]) -> str:
        return ", ".join(f"{field} ({count}/{total})" for field, count in sorted(counter.items()))

    parts = []
    if missing:
        parts.append(f"missing fields the client reads: {listed(missing)}")
    if new:
        parts.append(f"new fields: {listed(new)}")
    if missing:
        return Check(shape.name, shape.section, "fails", f"{total} rows; " + "; ".join(parts))
    fields = ", ".join(sorted(shape.expected))
    evidence = f"{total} rows carry every field the client reads ({fields})"
    if new:
        evidence += "; " + parts[-1] + " (ignored by the client)"
    return Check(shape.name, shape.section, "holds", evidence)


# -- the live streams ----------------------------------------------------------------------


async def _listen_sse(
    client: FlowithClientBase, seconds: float, frames: list[_Frame], start: float
) -> None:
    async for payload in client.stream_user_sse(timeout=seconds):
        frames.append(_Frame(anyio.current_time() - start, payload, ""))


async def _listen_raw(
    client: FlowithClientBase,
    request: Request,
    seconds: float,
    frames: list[_Frame],
    start: float,
) -> None:
    """The ``/user_stream/stream`` frames exactly as sent (envelope and all), read
    through the client's own transport: its proxy route, its decoding of the body,
    its reading of an error answer."""
    decoder = SSEDecoder()
    # Opened within the client's timeout, as a listener's stream is; then heard for
    # the window, as /user_stream/sse is.
    body = await client._open_event_stream(request, None, media_type="text/event-stream")
    deadline = client._now() + seconds
    try:
        while chunk := await body.read(deadline):  # None once the window has passed
            now = anyio.current_time() - start
            for event in decoder.feed(chunk):
                try:
                    payload = json.loads(event.data)
                except ValueError:
                    payload = None
                frames.append(_Frame(now, payload, event.data))
    finally:
        await body.aclose()


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _label(payload: Any) -> str:
    """A frame's kind as the report names it."""
    event = parse_event(payload)
    if isinstance(event, Heartbeat):
        return "heartbeat"
    if isinstance(event, Connected):
        return "connected"
    inner = event.raw if not isinstance(event, MalformedEvent) else {}
    kind = inner.get("type") if isinstance(inner, Mapping) else None
    return kind if isinstance(kind, str) and kind else type(event).__name__


def _envelope_check(frames: Sequence[_Frame], seconds: float, why: str) -> Check:
    """protocol.md 4.1/4.2: every /stream event is ``{"data": {...}, "id": ...}``."""
    name, section = "/stream envelope", "4.1, 4.2"
    if why:
        return Check(name, section, "unknown", f"/user_stream/stream could not be read: {why}")
    events = [f for f in frames if not isinstance(parse_event(f.payload), Heartbeat)]
    if not events:
        beats = len(frames)
        return Check(
            name,
            section,
            "unknown",
            f"no event arrived on /user_stream/stream in {seconds:g} s "
            f"({_plural(beats, 'heartbeat')}): "
            "events flow only while a generation runs; start one in the web app during "
            "the doctor's window to check this",
        )
    bare = [
        f
        for f in events
        if not (
            isinstance(f.payload, dict)
            and isinstance(f.payload.get("data"), dict)
            and "id" in f.payload
        )
    ]
    if bare:
        sample = bare[0].text[:_EXCERPT]
        return Check(
            name,
            section,
            "fails",
            f"{len(bare)} of {len(events)} events arrived without the "
            f'{{"data": {{...}}, "id"}} envelope, e.g. {sample}',
        )
    return Check(
        name,
        section,
        "holds",
        f'{len(events)} events, every one wrapped as {{"data": {{...}}, "id": "..."}}',
    )


def _types_check(
    stream: Sequence[_Frame], sse: Sequence[_Frame], stream_why: str, sse_why: str
) -> Check:
    """protocol.md 4.2/4.3: the event types the client understands."""
    name, section = "event types", "4.2, 4.3"
    strange: Counter[str] = Counter()
    parts = []
    seen = 0
    for label, frames, why in (("/stream", stream, stream_why), ("/sse", sse, sse_why)):
        if why:
            parts.append(f"{label}: not read")
            continue
        kinds: Counter[str] = Counter()
        for frame in frames:
            event = parse_event(frame.payload)
            kinds[_label(frame.payload)] += 1
            if isinstance(event, (UnknownEvent, MalformedEvent)):
                strange[f"{label} {_label(frame.payload)}"] += 1
            elif not isinstance(event, Heartbeat):
                seen += 1
        shown = ", ".join(f"{kind} x{count}" for kind, count in sorted(kinds.items()))
        parts.append(f"{label}: {shown or 'nothing'}")
    evidence = "; ".join(parts)
    if strange:
        odd = ", ".join(f"{kind} x{count}" for kind, count in sorted(strange.items()))
        return Check(
            name, section, "fails", f"events the client does not understand: {odd}; " + evidence
        )
    if not seen:
        return Check(name, section, "unknown", f"no event besides heartbeats: {evidence}")
    return Check(name, section, "holds", f"every event is one the client reads: {evidence}")


def _heartbeat_check(sse: Sequence[_Frame], seconds: float, why: str) -> Check:
    """protocol.md 2.2/4.1: ``/sse`` sends a heartbeat about every 5 s.

    The interval is measured between consecutive heartbeats; with a single
    one, from the frame before it (a server that beats after an idle
    interval writes it that long after its last frame, the ``connected``
    acknowledgement)."""
    name, section = "heartbeat interval", "2.2, 4.1"
    if why:
        return Check(name, section, "unknown", f"/user_stream/sse could not be read: {why}")
    beats = [i for i, f in enumerate(sse) if isinstance(parse_event(f.payload), Heartbeat)]
    expected = EXPECTED_HEARTBEAT_S
    if not beats:
        if seconds >= 2 * expected:
            evidence = (
                f"no heartbeat on /sse in {seconds:g} s (expected one about every {expected:g} s)"
            )
            return Check(name, section, "fails", evidence)
        return Check(
            name,
            section,
            "unknown",
            f"no heartbeat on /sse within {seconds:g} s; the client expects one about every "
            f"{expected:g} s (listen longer: --seconds {2 * expected + 2:g})",
        )
    if len(beats) > 1:
        gaps = [sse[b].at - sse[a].at for a, b in itertools.pairwise(beats)]
        how = f"median of {len(gaps)} intervals"
    else:
        first = beats[0]
        gaps = [sse[first].at - (sse[first - 1].at if first else 0.0)]
        how = "one heartbeat, timed from the frame before it"
    measured = statistics.median(gaps)
    evidence = f"/sse heartbeat every {measured:.1f} s ({how}), expected ~{expected:g} s"
    low, high = expected / _HEARTBEAT_TOLERANCE, expected * _HEARTBEAT_TOLERANCE
    verdict: Verdict = "holds" if low <= measured <= high else "fails"
    return Check(name, section, verdict, evidence)


# -- the whole run -------------------------------------------------------------------------


def _header(
    transport: str, backend: str, edge_url: str, supabase_url: str, seconds: float
) -> dict[str, str]:
    try:
        version = importlib.metadata.version("flowith")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "flowith": version,
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "transport": transport,
        "backend": backend,
        "edge_url": edge_url,
        "supabase_url": supabase_url,
        "seconds": f"{seconds:g}",
    }


async def run_doctor(
    make_client: ClientFactory,
    *,
    access_token: Callable[[], str],
    user_id: str,
    transport: str,
    backend: str,
    edge_url: str,
    supabase_url: str,
    seconds: float,
) -> Report:
    """The tour. Failures of the first stop (the token itself, or an
    unreachable host) are raised: nothing else can be judged without it."""
    report = Report(_header(transport, backend, edge_url, supabase_url, seconds))
    steps = report.steps

    async with make_client(edge_auth="bare", renew=True) as client:
        user = await client.get_auth_user()
    provider = user.get("app_metadata", {}).get("provider") if isinstance(user, dict) else None
    steps.append(Step("auth user", True, f"the token is valid (provider: {provider or 'unknown'})"))

    bare = await _probe_edge(make_client, "bare")
    bearer = await _probe_edge(make_client, "bearer")
    auth_check, scheme = _edge_auth_check(bare, bearer)
    steps.append(
        Step(
            "edge auth probe",
            bare[0] or bearer[0],
            f"bare: {'accepted' if bare[0] else bare[1]}; "
            f"Bearer: {'accepted' if bearer[0] else bearer[1]}",
        )
    )

    async with make_client(edge_auth=scheme, renew=True) as client:
        ok, credits, error = await _timed(
            steps,
            "credits",
            client.get_credits,
            lambda c: f"{len(c)} entries, {sum(e.remain_quota for e in c):g} left",
        )
        credit_rows = [dict(c.metadata) for c in credits] if ok else None
        credit_check = _row_check("credits", credit_rows, str(error))
        ok, models, error = await _timed(
            steps, "models", client.list_models, lambda m: f"{len(m)} models"
        )
        model_rows = [dict(m.metadata) for m in models] if ok else None
        model_check = _row_check("models", model_rows, str(error))
        await _timed(
            steps,
            "profile",
            client.get_user_profile,
            lambda p: f"language {p.language or '(unset)'}",
        )
        ok, conversations, error = await _timed(
            steps,
            "conversations",
            lambda: client.list_conversations(limit=5),
            lambda c: f"{len(c)} rows (limit 5)",
        )
        conversation_rows = [dict(c.metadata) for c in conversations] if ok else None
        conversation_check = _row_check("conversation", conversation_rows, str(error))

        stream_frames: list[_Frame] = []
        sse_frames: list[_Frame] = []
        problems = {"stream": "", "sse": ""}
        request = Endpoints(
            FlowithConfig(edge_url=edge_url, supabase_url=supabase_url, edge_auth=scheme),
            Credentials.from_tokens(access_token(), user_id=user_id),
        ).user_stream()

        async def guarded(key: str, listen: Callable[[], Awaitable[None]]) -> None:
            try:
                await listen()
            except FlowithError as exc:
                problems[key] = f"{type(exc).__name__}: {exc}"

        start = anyio.current_time()
        async with anyio.create_task_group() as group:
            group.start_soon(
                guarded,
                "stream",
                lambda: _listen_raw(client, request, seconds, stream_frames, start),
            )
            group.start_soon(
                guarded, "sse", lambda: _listen_sse(client, seconds, sse_frames, start)
            )
    for key, frames, path in (
        ("stream", stream_frames, "/user_stream/stream"),
        ("sse", sse_frames, "/user_stream/sse"),
    ):
        why = problems[key]
        detail = why or f"{_plural(len(frames), 'frame')} in {seconds:g} s"
        steps.append(Step(path, not why, detail))

    report.checks += [
        auth_check,
        _envelope_check(stream_frames, seconds, problems["stream"]),
        _types_check(stream_frames, sse_frames, problems["stream"], problems["sse"]),
        _heartbeat_check(sse_frames, seconds, problems["sse"]),
        conversation_check,
        model_check,
        credit_check,
    ]
    return report

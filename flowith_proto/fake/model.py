"""The fake Flowith service: all its hosts as one pure function of requests and time.

:meth:`FakeFlowith.handle` takes a request as it arrived on the wire plus the
current unix time and returns a complete response, or a :class:`FakeStream`
for the event-stream endpoints. Nothing here reads a clock or a global random
source: time comes in as ``now`` and ids come from the model's own seeded
generator, so the same requests give the same answers, byte for byte.

Requests are checked the way the real servers check them (auth scheme,
``apikey``, PostgREST's query syntax, constraints, row-level security,
GoTrue's sessions), and a deviation gets the real status and error body.
Routing is a table, :data:`ROUTES`: an endpoint is one registered handler
(here, in :mod:`.edge`, :mod:`.gotrue` and :mod:`.rpc`), a PostgREST table is
one :class:`TableSpec` (in :mod:`.tables`).
"""

from __future__ import annotations

import copy
import heapq
import itertools
import json
import random
import string
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import attrs
import jwt

from flowith_proto.config import DEFAULT_SUPABASE_KEY
from flowith_proto.fake import edge, gotrue, rpc
from flowith_proto.fake import postgrest as pg
from flowith_proto.fake.edge import read_turn
from flowith_proto.fake.frames import LineEnding, comment_frame, data_frame, heartbeat_frame
from flowith_proto.fake.gotrue import RefreshToken
from flowith_proto.fake.postgrest import iso_time
from flowith_proto.fake.routing import ROUTES, Call, Result, Route, route
from flowith_proto.fake.rpc import OnlineSession
from flowith_proto.fake.script import (
    STEP_TYPES,
    Channel,
    ChunkStep,
    CloseStep,
    CommentStep,
    CompleteStep,
    DropStep,
    FailStep,
    HangStep,
    HeartbeatStep,
    OtherNodeStep,
    PauseStep,
    RawStep,
    Responder,
    RowStep,
    Script,
    Step,
    Turn,
    WorkflowStep,
    default_media_responder,
    default_responder,
)
from flowith_proto.fake.seed import seed as initial_rows
from flowith_proto.fake.stream import (
    CloseStream,
    DropStream,
    FakeStream,
    Hang,
    SendBytes,
    StreamItem,
)
from flowith_proto.fake.tables import TABLES, TableSpec, check_not_null, rls_violation
from flowith_proto.fake.wire import (
    FakeResponse,
    RecordedRequest,
    Reject,
    edge_error,
    gotrue_error,
    json_response,
    parse_target,
    pg_error,
)

__all__ = [
    "DEFAULT_CDN_URL",
    "FAKE_JWT_SECRET",
    "FAKE_REFRESH_TOKEN",
    "FAKE_SESSION_ID",
    "FAKE_USER_ID",
    "ROUTES",
    "TABLES",
    "TOKEN_EXPIRES_AT",
    "Call",
    "FakeFlowith",
    "Route",
    "TableSpec",
]

#: The user the fake signs its token for.
FAKE_USER_ID = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
#: The fake's HMAC key (PyJWT wants at least 32 bytes for HS256). Not a real secret.
FAKE_JWT_SECRET = "fake-flowith-hs256-signing-key-for-tests-only"
#: ``exp`` of :attr:`FakeFlowith.token`: 2100-01-01, far beyond any test.
TOKEN_EXPIRES_AT = 4_102_444_800
#: The GoTrue session of :attr:`FakeFlowith.token` and :attr:`FakeFlowith.refresh_token`.
FAKE_SESSION_ID = "5e551011-0000-4000-8000-000000000001"
#: The initial refresh token of that session.
FAKE_REFRESH_TOKEN = "fkrt0initial"
#: Where generated and uploaded files are served until a server says its own URL.
DEFAULT_CDN_URL = "http://cdn.fake-flowith.invalid"
_ISSUED_AT = 1_704_067_200  # 2024-01-01, fixed so the token is the same every run

EdgeAuthMode = Literal["bare", "bearer", "either"]
VideoNodeIds = Literal["server", "echo"]
_EDGE_AUTH_MODES = ("bare", "bearer", "either")
_REST = "/rest/v1/"
_RPC = "/rest/v1/rpc/"
_AUTH = "/auth/v1/"
#: The edge endpoints whose rows :meth:`FakeFlowith.rename_field` can rename.
_EDGE_ROW_PATHS = {"/user/credits": "credits", "/models": "models"}
TokenState = Literal["ok", "invalid", "expired", "revoked"]


@attrs.define
class _Fault:
    """An injected answer for the next ``remaining`` matching requests."""

    remaining: int
    method: str | None
    path: str | None
    status: int
    body: Any
    headers: tuple[tuple[str, str], ...]


class FakeFlowith:
    """A pure, deterministic model of the Flowith edge, its CDN and its Supabase project.

    ``edge_auth`` is the scheme the edge accepts for the token: ``"bare"``
    (the web app's), ``"bearer"``, or ``"either"``. ``heartbeat_interval`` is
    how long a stream may stay idle before the server writes a heartbeat.
    ``responder`` answers a text completion that has no :meth:`script` queued,
    ``media_responder`` an image or video generation. ``cdn_url`` is the base
    of the file URLs the fake hands out (a server sets it to its own URL unless
    it is given here). ``seed_rows`` fills the tables with a believable
    account and a stranger's rows (:mod:`flowith_proto.fake.seed`).

    The other knobs are plain attributes: :attr:`video_node_ids`,
    :attr:`generation_cost`, :attr:`credits_as_strings`, :attr:`daily_reward`,
    :attr:`max_upload_size`, :attr:`access_token_ttl`,
    :attr:`online_session_ttl`, :attr:`revoke_access_on_logout`, :attr:`max_rows`,
    :attr:`stream_envelope`, :attr:`field_renames` (:meth:`rename_field`).
    """

    def __init__(
        self,
        *,
        user_id: str = FAKE_USER_ID,
        supabase_key: str = DEFAULT_SUPABASE_KEY,
        edge_auth: EdgeAuthMode = "bare",
        seed: int = 0,
        heartbeat_interval: float = 5.0,
        responder: Responder | None = None,
        media_responder: Responder | None = None,
        cdn_url: str | None = None,
        seed_rows: bool = True,
    ) -> None:
        if edge_auth not in _EDGE_AUTH_MODES:
            raise ValueError(f"edge_auth must be one of {_EDGE_AUTH_MODES}, got {edge_auth!r}")
        if not heartbeat_interval > 0:
            raise ValueError(f"heartbeat_interval must be positive, got {heartbeat_interval!r}")
        self.user_id = str(uuid.UUID(user_id))
        self.supabase_key = supabase_key
        self.edge_auth: EdgeAuthMode = edge_auth
        self.heartbeat_interval = heartbeat_interval
        self.responder: Responder = responder or default_responder
        self.media_responder: Responder = media_responder or default_media_responder
        #: ``"server"``: ``/video/async`` creates its node under a new id of its
        #: own and answers with it; ``"echo"``: under the request's ``nodeId``.
        self.video_node_ids: VideoNodeIds = "server"
        #: Credits a successful generation costs (charged when its row becomes done).
        self.generation_cost = 1.0
        #: Send the numbers of ``/user/credits`` as strings (``"1523.5"``).
        self.credits_as_strings = False
        #: Credits a daily-reward claim adds.
        self.daily_reward = 20.0
        #: The largest ``/file/store`` upload accepted (bytes); larger is 413.
        self.max_upload_size = 100 * 1024 * 1024
        #: Lifetime of the access tokens a refresh issues (seconds).
        self.access_token_ttl = 3600
        #: An online session not refreshed for this long stops counting (seconds).
        self.online_session_ttl = 300.0
        #: After a logout, refuse the logged-out sessions' access tokens on the
        #: edge and PostgREST too, not only on GoTrue.
        self.revoke_access_on_logout = False
        #: The most rows a PostgREST read answers, whatever its ``limit`` (Supabase's
        #: ``max-rows``, 1,000 unless a project sets another); ``None``: no cap.
        self.max_rows: int | None = 1000
        #: Wrap each ``/user_stream/stream`` event as ``{"data": event, "id": "<n>"}``
        #: (protocol.md 4.1); ``False`` sends the bare event, as a changed server might.
        self.stream_envelope = True
        #: Fields renamed in served rows: ``{table: {old: new}}`` (see :meth:`rename_field`).
        self.field_renames: dict[str, dict[str, str]] = {}
        #: A valid access token for ``user_id``; clients sign in with it.
        self.token = self.issue_token(session_id=FAKE_SESSION_ID)
        #: The refresh token of the same session (single use: it rotates).
        self.refresh_token = FAKE_REFRESH_TOKEN
        #: Every request received, in order.
        self.requests: list[RecordedRequest] = []
        #: Every accepted generation (text, image, video), in order.
        self.turns: list[Turn] = []
        #: Every stream connection ever opened (closed ones included).
        self.streams: list[FakeStream] = []
        self._rng = random.Random(seed)
        self._secrets = random.Random(f"refresh-tokens-{seed}")
        self._scripts: deque[Script] = deque()
        self._rows: dict[str, dict[Any, dict[str, Any]]] = {name: {} for name in TABLES}
        self._row_changes: list[tuple[float, int, str, dict[str, Any]]] = []
        self._order = itertools.count()
        self._event_ids = itertools.count(1)
        # Numbers the access tokens refreshes issue: each is a token of its own, so
        # that expire_token() on one leaves the next good.
        self._refreshes = itertools.count(1)
        self._seq: dict[str, int] = {}
        self._faults: list[_Fault] = []
        #: How many answers :meth:`fail_next` replaced so far.
        self.faults_served = 0
        self._cdn_url = (cdn_url or DEFAULT_CDN_URL).rstrip("/")
        self._cdn_url_fixed = cdn_url is not None
        self._files: dict[str, tuple[bytes, str]] = {}
        self._credits: dict[str, list[dict[str, Any]]] = {}
        self._claimed_at: dict[str, list[float]] = {}
        self._sessions: dict[str, str] = {FAKE_SESSION_ID: self.user_id}
        self._refresh_tokens: dict[str, RefreshToken] = {
            FAKE_REFRESH_TOKEN: RefreshToken(FAKE_SESSION_ID, self.user_id)
        }
        self._expired_tokens: set[str] = set()
        self._online: dict[str, OnlineSession] = {}
        self._seeded: set[tuple[str, Any]] = set()
        if seed_rows:
            self._seed()

    def _seed(self) -> None:
        seeded = initial_rows(self.user_id, self._cdn_url)
        for table, rows in seeded.rows.items():
            for row in rows:
                self._rows[table][row["id"]] = row
                self._seeded.add((table, row["id"]))
        for path, data, content_type in seeded.files:
            self._files[path] = (data, content_type)

    # -- tokens and sessions ---------------------------------------------------

    def issue_token(
        self,
        sub: str | None = None,
        *,
        expires_at: float = TOKEN_EXPIRES_AT,
        issued_at: float | None = None,
        session_id: str | None = None,
        token_id: str | None = None,
    ) -> str:
        """A token signed by this fake (for another user, or one that expires).

        ``session_id`` ties it to a GoTrue session (a logout revokes it);
        tokens without one belong to no session. ``token_id`` (its ``jti``) tells
        apart tokens whose other claims match (two refreshes within a second).
        """
        claims: dict[str, Any] = {
            "aud": "authenticated",
            "exp": int(expires_at),
            "iat": _ISSUED_AT if issued_at is None else int(issued_at),
            "iss": "https://fake.flowith.invalid/auth/v1",
            "role": "authenticated",
            "sub": self.user_id if sub is None else sub,
        }
        if session_id is not None:
            claims["session_id"] = session_id
        if token_id is not None:
            claims["jti"] = token_id
        return jwt.encode(claims, FAKE_JWT_SECRET, algorithm="HS256")

    def issue_refresh_token(self, sub: str | None = None) -> str:
        """Start a new GoTrue session for ``sub`` (the fake's user by default)
        and return its refresh token."""
        user = self.user_id if sub is None else sub
        session_id = self._new_id()
        self._sessions[session_id] = user
        return self._new_refresh_token(session_id, user)

    def _new_refresh_token(self, session_id: str, user: str) -> str:
        alphabet = string.ascii_lowercase + string.digits
        token = "".join(self._secrets.choice(alphabet) for _ in range(12))
        self._refresh_tokens[token] = RefreshToken(session_id, user)
        return token

    @property
    def issued_refresh_tokens(self) -> list[str]:
        """Every refresh token the fake has handed out, used or not (what a
        cassette must never hold)."""
        return list(self._refresh_tokens)

    def expire_token(self, token: str) -> None:
        """Make ``token`` answer as expired everywhere from now on (401 on the
        edge, PGRST303 on PostgREST, ``bad_jwt`` on GoTrue)."""
        self._expired_tokens.add(token)

    def token_state(self, token: str, now: float, *, host: str = "edge") -> TokenState:
        """How a host judges ``token`` at ``now``: GoTrue also checks that the
        token's session still exists; the edge and PostgREST do only if
        :attr:`revoke_access_on_logout` is set."""
        claims = self._claims(token)
        if not claims:
            return "invalid"
        exp = claims.get("exp")
        if token in self._expired_tokens or (isinstance(exp, (int, float)) and exp <= now):
            return "expired"
        session = claims.get("session_id")
        if (
            isinstance(session, str)
            and (host == "gotrue" or self.revoke_access_on_logout)
            and session not in self._sessions
        ):
            return "revoked"
        return "ok"

    # -- the CDN -----------------------------------------------------------------

    @property
    def cdn_url(self) -> str:
        """The base of the file URLs the fake hands out (``scheme://host[:port]``).

        Setting it rewrites the URLs the fake already stored under the old
        base (upload records, node values), so they keep pointing at files it serves.
        """
        return self._cdn_url

    @cdn_url.setter
    def cdn_url(self, value: str) -> None:
        base = value.rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ValueError(f"cdn_url must be scheme://host[:port], got {value!r}")
        old, self._cdn_url = self._cdn_url, base
        self._cdn_url_fixed = True
        if old == base:
            return
        for record in self._rows["user_upload_records"].values():
            if isinstance(record.get("value"), str) and record["value"].startswith(old + "/"):
                record["value"] = base + record["value"][len(old) :]
        for node in self._rows["flow_node"].values():
            data = node.get("data")
            if not isinstance(data, dict):
                continue
            result = data.get("value")
            if isinstance(result, str) and result.startswith(old + "/"):
                data["value"] = base + result[len(old) :]

    def serving_at(self, url: str) -> None:
        """A server tells the model its URL: the CDN base follows it, unless
        ``cdn_url`` was set explicitly."""
        if not self._cdn_url_fixed:
            self.cdn_url = url
            self._cdn_url_fixed = False

    def add_file(
        self, path: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> str:
        """Serve ``data`` at ``path`` (``/f/<id>/<name>``, or a URL under the CDN
        base) from now on; returns its URL. The bytes are kept, not copied."""
        if path.startswith(("http://", "https://")):
            path = urlsplit(path).path
        if not path.startswith("/") or path.startswith((_REST, _AUTH)) or path in ROUTES:
            raise ValueError(f"a file path must start with '/' and not be an API path: {path!r}")
        self._files[path] = (data, content_type)
        return self.file_url(path)

    def file_url(self, path: str) -> str:
        """The URL at which the fake serves the file at ``path``."""
        return self._cdn_url + quote(path)

    @property
    def files(self) -> dict[str, tuple[bytes, str]]:
        """The files the CDN serves: path -> (bytes, content type)."""
        return dict(self._files)

    # -- credits -------------------------------------------------------------------

    def _ledger(self, user: str) -> list[dict[str, Any]]:
        ledger = self._credits.get(user)
        if ledger is None:
            if user == self.user_id:
                ledger = [
                    _credit("pro", 2000, 1523.5, "2026-01-01", "2099-01-01", ["free", "pro"]),
                    _credit("Invitation", 100, 100, "2026-03-01", "2099-12-31", ["free"]),
                ]
            else:
                ledger = [_credit("trial", 100, 100, "2026-01-01", "2099-01-01", ["free"])]
            self._credits[user] = ledger
        return ledger

    def credits(self, user: str | None = None) -> list[dict[str, Any]]:
        """A copy of a user's credit entries (the fake's user by default)."""
        return copy.deepcopy(self._ledger(user or self.user_id))

    def remaining_credits(self, user: str | None = None) -> float:
        """The sum of a user's ``remain_quota``."""
        return float(sum(entry["remain_quota"] for entry in self._ledger(user or self.user_id)))

    def set_credits(self, amount: float, user: str | None = None) -> None:
        """Give a user ``amount`` credits in total (all in the first entry;
        ``0`` makes generations answer ``402``)."""
        if isinstance(amount, bool) or not isinstance(amount, (int, float)):
            raise TypeError(f"set_credits() takes a number, not {type(amount).__name__}")
        ledger = self._ledger(user or self.user_id)
        for index, entry in enumerate(ledger):
            entry["remain_quota"] = amount if index == 0 else 0
        if not ledger:
            ledger.append(_credit("pro", amount, amount, "2026-01-01", "2099-01-01", ["free"]))

    def _require_credits(self, user: str) -> None:
        remaining = self.remaining_credits(user)
        if remaining <= 0 or remaining < self.generation_cost:
            raise Reject(edge_error(402, "Insufficient credits"))

    def _charge(self, user: str, amount: float) -> None:
        for entry in self._ledger(user):
            if amount <= 0:
                return
            taken = min(entry["remain_quota"], amount)
            if taken > 0:
                entry["remain_quota"] = _tidy(entry["remain_quota"] - taken)
                amount -= taken

    def _add_credits(self, user: str, amount: float) -> None:
        ledger = self._ledger(user)
        if not ledger:
            ledger.append(_credit("pro", 0, 0, "2026-01-01", "2099-01-01", ["free"]))
        ledger[0]["remain_quota"] = _tidy(ledger[0]["remain_quota"] + amount)

    # -- public knobs and views ------------------------------------------------

    def script(self, *steps: Step, line_ending: LineEnding = "\n", multiline: bool = False) -> None:
        """Queue what the next generation (text, image or video) does
        (first queued, first used). Each step is one of the step functions'
        results: anything else is a :class:`TypeError` here, not a 500 later."""
        given: tuple[object, ...] = steps  # typed as steps, but a test may pass anything
        for step in given:
            if not isinstance(step, STEP_TYPES):
                hint = " (pass the steps themselves: script(*steps))" if isinstance(
                    step, (list, tuple)
                ) else ""
                raise TypeError(f"not a script step: {step!r}{hint}")
        self._scripts.append(Script(tuple(steps), line_ending, multiline))

    def advance(self, *, now: float) -> None:
        """Apply the row changes scripts scheduled up to ``now``.

        :meth:`handle` does this itself; call it before reading :attr:`nodes`
        when a script paused before changing a row. A node that becomes
        ``done`` charges its owner :attr:`generation_cost`.
        """
        changes = self._row_changes
        nodes = self._rows["flow_node"]
        while changes and changes[0][0] <= now:
            due, _, node_id, change = heapq.heappop(changes)
            row = nodes.get(node_id)
            if row is not None:
                data = row.get("data")
                old = data if isinstance(data, dict) else {}
                row["data"] = {**old, **change}
                row["updated_at"] = iso_time(due)
                if change.get("status") == "done" and old.get("status") != "done":
                    owner = self._rows["conversation"].get(row["conv_id"])
                    if owner is not None:
                        self._charge(owner["user_id"], self.generation_cost)

    def open_streams(self, channel: Channel | None = None) -> list[FakeStream]:
        """The connections still open (on one channel, or both)."""
        return [
            s for s in self.streams if not s.closed and (channel is None or s.channel == channel)
        ]

    def close_streams(self, *, now: float, channel: Channel = "stream") -> None:
        """End every open connection of ``channel`` cleanly, now."""
        self._end_streams(CloseStream(), now, channel)

    def drop_streams(self, *, now: float, channel: Channel = "stream") -> None:
        """Break every open connection of ``channel`` (no final chunk), now."""
        self._end_streams(DropStream(), now, channel)

    def _end_streams(self, item: StreamItem, now: float, channel: Channel) -> None:
        order = next(self._order)
        for stream in self.open_streams(channel):
            stream.schedule(now, order, item)
            stream.wake()

    @property
    def stream_connections(self) -> int:
        """How many ``/user_stream/stream`` connections were opened."""
        return sum(1 for s in self.streams if s.channel == "stream")

    @property
    def sse_connections(self) -> int:
        """How many ``/user_stream/sse`` connections were opened."""
        return sum(1 for s in self.streams if s.channel == "sse")

    def rows(self, table: str) -> dict[Any, dict[str, Any]]:
        """A copy of every row of ``table`` by id, seeded rows and all users' included."""
        return copy.deepcopy(self._rows[table])

    def _created(self, table: str) -> dict[Any, dict[str, Any]]:
        return {
            key: copy.deepcopy(row)
            for key, row in self._rows[table].items()
            if (table, key) not in self._seeded
        }

    @property
    def conversations(self) -> dict[str, dict[str, Any]]:
        """A copy of the ``conversation`` rows created through requests, by id
        (the seed's rows are left out: :meth:`rows` has them)."""
        return self._created("conversation")

    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        """A copy of the ``flow_node`` rows created through requests or
        generations, by id (the seed's rows are left out: :meth:`rows` has them)."""
        return self._created("flow_node")

    def online_count(self, *, now: float) -> int:
        """How many online sessions were refreshed within :attr:`online_session_ttl`."""
        return sum(1 for s in self._online.values() if now - s.last_seen <= self.online_session_ttl)

    def rename_field(self, table: str, old: str, new: str) -> None:
        """Serve ``table``'s rows with the key ``old`` renamed to ``new``, as if
        the web app had renamed a column (the stored rows keep ``old``).

        ``table`` is a PostgREST table (its ``GET`` answers change) or one of
        the edge's row lists: ``"credits"`` (``/user/credits`` entries) and
        ``"models"`` (the ``/models`` entries). :attr:`field_renames` holds
        every rename; clear it to undo them.
        """
        if table not in TABLES and table not in _EDGE_ROW_PATHS.values():
            known = ", ".join([*TABLES, *_EDGE_ROW_PATHS.values()])
            raise ValueError(f"no table {table!r}; one of {known}")
        if not old or not new or old == new:
            raise ValueError("rename_field needs two different, non-empty field names")
        self.field_renames.setdefault(table, {})[old] = new

    def _renamed(self, request: RecordedRequest, response: FakeResponse) -> FakeResponse:
        """``response`` with :attr:`field_renames` applied to the rows it serves."""
        if request.method != "GET" or response.status != 200:
            return response
        path = request.path
        table = path[len(_REST) :] if path.startswith(_REST) else _EDGE_ROW_PATHS.get(path)
        renames = self.field_renames.get(table or "")
        if not renames:
            return response
        body = response.json()

        def rename(row: Any) -> Any:
            if not isinstance(row, dict):
                return row
            return {renames.get(key, key): value for key, value in row.items()}

        if isinstance(body, list):
            body = [rename(row) for row in body]
        elif isinstance(body, dict) and table == "models":
            body = {key: rename(entry) for key, entry in body.items()}
        else:
            body = rename(body)
        headers = [(k, v) for k, v in response.headers if k.lower() != "content-type"]
        return json_response(200, body, headers)

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """The recorded requests with this method and (decoded) path."""
        return [r for r in self.requests if r.method == method and r.path == path]

    # -- the entry point ---------------------------------------------------------

    def handle(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        *,
        now: float,
    ) -> FakeResponse | FakeStream:
        """Answer one request; ``target`` is the path and query as sent on the wire."""
        self.advance(now=now)
        path, query = parse_target(target)
        request = RecordedRequest(
            method.upper(),
            target,
            path,
            query,
            tuple((str(k), str(v)) for k, v in headers),
            body if isinstance(body, bytes) else bytes(body),
            now,
        )
        self.requests.append(request)
        injected = self._injected_fault(request)
        if injected is not None:
            return injected
        routes = ROUTES.get(path)
        if routes is None:
            return self._unrouted(request)
        route = routes.get(request.method)
        if route is None:
            allow = ", ".join(sorted(routes))
            return json_response(405, {"message": "Method Not Allowed"}, [("allow", allow)])
        try:
            token = ""
            if route.auth == "rest":
                user, token = self._rest_user(request, now)
            elif route.auth == "edge":
                user, token = self._edge_user(request, now)
            elif route.auth == "gotrue":
                user, token = self._gotrue_user(request, now)
            else:
                user = ""
                if route.auth == "apikey":
                    self._check_apikey(request)
            result = route.handler(self, Call(request, user, now, token))
            if self.field_renames and isinstance(result, FakeResponse):
                result = self._renamed(request, result)
            return result
        except Reject as reject:
            return reject.response

    # -- fault injection -------------------------------------------------------------

    def fail_next(
        self,
        count: int,
        status: int,
        *,
        method: str | None = None,
        path: str | None = None,
        body: Any = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Answer the next ``count`` matching requests with ``status`` instead
        of serving them (the request is recorded, nothing else changes).

        ``method`` and ``path`` (the decoded path, e.g. ``"/rest/v1/flow_node"``)
        narrow which requests count; ``body`` (JSON) and ``headers`` (e.g.
        ``[("Retry-After", "1")]``) shape the answer. Faults queue in order.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a whole number of at least 1, got {count!r}")
        # Checked now: an impossible status breaks the fake's answer, and the test
        # would see a dropped connection instead of the error it meant to inject.
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError(f"status must be an HTTP status from 200 to 599, got {status!r}")
        payload = body if body is not None else {"message": f"injected {status}"}
        self._faults.append(
            _Fault(count, method.upper() if method else None, path, status, payload, tuple(headers))
        )

    def unused(self) -> list[str]:
        """What was queued and never used, one line each: scripts no generation took
        (first queued first) and faults with requests still to answer. A test that
        ends with some did not run what it set up (the ``flowith_fake`` fixture fails
        it, as respx fails a route never called)."""
        left = [
            f"script({', '.join(repr(step) for step in script.steps)})"
            for script in self._scripts
        ]
        for fault in self._faults:
            where = [f"method={fault.method!r}"] if fault.method else []
            where += [f"path={fault.path!r}"] if fault.path else []
            matching = f" ({', '.join(where)})" if where else ""
            left.append(
                f"fail_next: {fault.remaining} more {fault.status} answer(s){matching}"
            )
        return left

    def _injected_fault(self, request: RecordedRequest) -> FakeResponse | None:
        for fault in self._faults:
            if (fault.method is None or fault.method == request.method) and (
                fault.path is None or fault.path == request.path
            ):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                self.faults_served += 1
                return json_response(fault.status, fault.body, list(fault.headers))
        return None

    def _unrouted(self, request: RecordedRequest) -> FakeResponse:
        path = request.path
        if path.startswith(_RPC):
            name = path[len(_RPC) :]
            return pg_error(
                404,
                "PGRST202",
                f"Could not find the function public.{name} without parameters in the schema cache",
                hint=None,
            )
        if path.startswith(_REST):
            name = path[len(_REST) :]
            message = f"Could not find the table 'public.{name}' in the schema cache"
            return pg_error(404, "PGRST205", message)
        if path.startswith(_AUTH):
            return json_response(404, {"code": 404, "error_code": "not_found", "msg": "Not Found"})
        stored = self._files.get(path)
        if stored is not None:
            if request.method != "GET":
                return json_response(405, {"message": "Method Not Allowed"}, [("allow", "GET")])
            data, content_type = stored
            return FakeResponse(
                200,
                (
                    ("content-type", content_type),
                    ("cache-control", "public, max-age=31536000, immutable"),
                ),
                data,
            )
        return edge_error(404, "Not Found")

    # -- authentication ----------------------------------------------------------

    @staticmethod
    def _claims(token: str) -> dict[str, Any]:
        """The claims of a token this fake signed; ``{}`` for any other string.

        Only the signature is checked here (PyJWS, no clock); expiry is judged
        against the ``now`` of the request, never the machine's clock.
        """
        try:
            claims = json.loads(jwt.api_jws.decode(token, FAKE_JWT_SECRET, algorithms=["HS256"]))
        except (jwt.PyJWTError, ValueError):
            return {}
        if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
            return {}
        return claims

    def _edge_user(self, request: RecordedRequest, now: float) -> tuple[str, str]:
        value = request.header("authorization")
        if not value:
            raise Reject(edge_error(401, "Missing authorization header"))
        bearer = value[:7].lower() == "bearer "
        if (self.edge_auth == "bare" and bearer) or (self.edge_auth == "bearer" and not bearer):
            raise Reject(edge_error(401, "Unauthorized: unexpected authorization scheme"))
        token = value[7:].strip() if bearer else value.strip()
        state = self.token_state(token, now)
        if state == "invalid":
            raise Reject(edge_error(401, "Unauthorized: invalid token"))
        if state == "expired":
            raise Reject(edge_error(401, "jwt expired"))
        if state == "revoked":
            raise Reject(edge_error(401, "Unauthorized: session not found"))
        return str(self._claims(token)["sub"]), token

    def _check_apikey(self, request: RecordedRequest) -> None:
        if request.header("apikey") != self.supabase_key:
            raise Reject(
                json_response(
                    401,
                    {
                        "message": "Invalid API key",
                        "hint": "Double check your Supabase `anon` or `service_role` API key.",
                    },
                )
            )

    def _rest_user(self, request: RecordedRequest, now: float) -> tuple[str, str]:
        self._check_apikey(request)
        value = request.header("authorization") or ""
        if value[:7].lower() != "bearer ":
            raise Reject(
                pg_error(
                    401,
                    "PGRST301",
                    "JWT could not be decoded",
                    details="expected 'Authorization: Bearer <JWT>'",
                )
            )
        token = value[7:].strip()
        state = self.token_state(token, now)
        if state == "invalid":
            raise Reject(pg_error(401, "PGRST301", "JWT cryptographic operation failed"))
        if state == "expired":
            raise Reject(pg_error(401, "PGRST303", "JWT expired"))
        if state == "revoked":
            raise Reject(pg_error(401, "PGRST303", "JWT expired", details="session revoked"))
        for name in ("accept-profile", "content-profile"):
            schema = request.header(name)
            if schema is not None and schema != "public":
                raise Reject(
                    pg_error(
                        406,
                        "PGRST106",
                        f"Invalid schema: {schema}",
                        hint="Only the following schemas are exposed: public, graphql_public",
                    )
                )
        return str(self._claims(token)["sub"]), token

    def _gotrue_user(self, request: RecordedRequest, now: float) -> tuple[str, str]:
        self._check_apikey(request)
        value = request.header("authorization") or ""
        if value[:7].lower() != "bearer " or not value[7:].strip():
            raise Reject(
                gotrue_error(
                    request, 401, "no_authorization", "This endpoint requires a valid Bearer token"
                )
            )
        token = value[7:].strip()
        state = self.token_state(token, now, host="gotrue")
        if state == "invalid":
            raise Reject(
                gotrue_error(
                    request,
                    401,
                    "bad_jwt",
                    "invalid JWT: unable to parse or verify signature, signature is invalid",
                )
            )
        if state == "expired":
            raise Reject(
                gotrue_error(
                    request,
                    401,
                    "bad_jwt",
                    "invalid JWT: unable to parse or verify signature, "
                    "token has invalid claims: token is expired",
                )
            )
        if state == "revoked":
            raise Reject(
                gotrue_error(
                    request,
                    403,
                    "session_not_found",
                    "Session from session_id claim in JWT does not exist",
                )
            )
        return str(self._claims(token)["sub"]), token

    # -- PostgREST tables ----------------------------------------------------------

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    @staticmethod
    def _spec(call: Call) -> TableSpec:
        return TABLES[call.request.path[len(_REST) :]]

    @staticmethod
    def _json_body(request: RecordedRequest, *, rest: bool) -> Any:
        if not pg.content_type_is_json(request.headers):
            if rest:
                raise Reject(
                    pg_error(415, "PGRST107", "The Content-Type sent in the request is invalid")
                )
            raise Reject(edge_error(415, "Content-Type must be application/json"))
        try:
            return json.loads(request.body)
        except ValueError:
            if rest:
                raise Reject(pg_error(400, "PGRST102", "Empty or invalid json")) from None
            raise Reject(edge_error(400, "Invalid JSON body")) from None

    def _filters(self, table: pg.Table, request: RecordedRequest) -> list[pg.Filter]:
        return [pg.parse_filter(table, k, v) for k, v in request.query if k not in pg.RESERVED]

    def _visible(self, spec: TableSpec, user: str) -> list[dict[str, Any]]:
        """The rows ``user`` may write (the ``visible`` policy)."""
        return [
            row for row in self._rows[spec.table.name].values() if spec.visible(self, row, user)
        ]

    def _readable(self, spec: TableSpec, user: str) -> list[dict[str, Any]]:
        return [
            row for row in self._rows[spec.table.name].values() if spec.can_read(self, row, user)
        ]

    @staticmethod
    def _read_only(spec: TableSpec) -> Reject:
        return Reject(pg_error(403, "42501", f"permission denied for table {spec.table.name}"))

    def _rest_select(self, call: Call) -> Result:
        spec = self._spec(call)
        table = spec.table
        request = call.request
        selection = pg.parse_read_select(
            table, request.param("select"), {name: s.table for name, s in TABLES.items()}
        )
        embeds = selection.embeds
        filters: list[pg.Filter] = []
        embedded_filters: dict[str, list[pg.Filter]] = {name: [] for name in embeds}
        null_filters: list[tuple[str, bool]] = []
        for key, value in request.query:
            if key in pg.RESERVED:
                continue
            head, dot, rest = key.partition(".")
            if dot and "->" not in head:
                embed = embeds.get(head)
                if embed is None:
                    raise Reject(
                        pg_error(
                            400,
                            "PGRST108",
                            f"'{head}' is not an embedded resource in this request",
                            hint=f"Verify that '{head}' is included in the 'select' query "
                            "parameter.",
                        )
                    )
                target = TABLES[embed.relation.target].table
                embedded_filters[head].append(pg.parse_filter(target, rest, value, json_paths=True))
            elif key in embeds and value.lower() in ("is.null", "not.is.null"):
                null_filters.append((key, value.lower() == "is.null"))
            else:
                filters.append(pg.parse_filter(table, key, value))
        limit = pg.parse_count("limit", request.param("limit"))
        offset = pg.parse_count("offset", request.param("offset")) or 0
        rows = [r for r in self._readable(spec, call.user) if all(f.matches(r) for f in filters)]
        shaped: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for row in rows:
            related = {
                name: self._embedded(embed, row, call.user, embedded_filters[name])
                for name, embed in embeds.items()
            }
            if all((related[name] is None) == want_null for name, want_null in null_filters):
                shaped.append((row, related))
        order = pg.order_rows(table, [row for row, _ in shaped], request.param("order"))
        by_identity = {id(row): related for row, related in shaped}
        window = order[offset:] if limit is None else order[offset : offset + limit]
        if self.max_rows is not None:
            window = window[: self.max_rows]  # cut silently, as PostgREST does
        body = [self._shape(row, selection, by_identity[id(row)]) for row in window]
        content_range = f"{offset}-{offset + len(body) - 1}/*" if body else "*/*"
        return json_response(200, body, [("content-range", content_range)])

    def _embedded(
        self, embed: pg.Embed, row: Mapping[str, Any], user: str, filters: Sequence[pg.Filter]
    ) -> dict[str, Any] | None:
        """The related row of a many-to-one embedding, or ``None`` if there is
        none, row-level security hides it, or an embedded filter drops it."""
        spec = TABLES[embed.relation.target]
        target = self._rows[spec.table.name].get(row.get(embed.relation.column))
        if target is None or not spec.can_read(self, target, user):
            return None
        if not all(f.matches(target) for f in filters):
            return None
        return {column: target.get(column) for column in embed.columns}

    @staticmethod
    def _shape(
        row: Mapping[str, Any], selection: pg.Selection, related: Mapping[str, Any]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in selection.items:
            if isinstance(item, str):
                out[item] = row.get(item)
            elif item.columns:
                # ``*,conv_id(*)``: the embedding takes the column's place, as the
                # last of two equal keys does when a client parses the JSON.
                out[item.name] = related[item.name]
        result: dict[str, Any] = json.loads(json.dumps(out))
        return result

    def _rest_insert(self, call: Call) -> Result:
        spec = self._spec(call)
        table = spec.table
        request = call.request
        if not spec.writable:
            raise self._read_only(spec)
        payload = self._json_body(request, rest=True)
        objects = payload if isinstance(payload, list) else [payload]
        if not all(isinstance(o, dict) for o in objects):
            raise Reject(pg_error(400, "PGRST102", "Empty or invalid json"))
        columns_text = request.param("columns")
        if columns_text is not None:
            columns = pg.parse_columns(table, columns_text)
        else:
            if len({frozenset(o) for o in objects}) > 1:
                raise Reject(pg_error(400, "PGRST102", "All object keys must match"))
            columns = list(objects[0]) if objects else []
            for column in columns:
                table.body_column(column)
        selected = pg.parse_select(table, request.param("select"))
        preferences = pg.prefer(request.headers)
        resolution = preferences.get("resolution")
        stored = self._rows[table.name]
        staged: dict[Any, dict[str, Any]] = {}
        written: list[dict[str, Any]] = []
        for obj in objects:
            row = spec.defaults(self, call.user, call.now)
            row.update({c: pg.coerce(table, c, obj.get(c)) for c in columns})
            check_not_null(table, row)
            key = row["id"]
            if key in stored or key in staged:
                if resolution == "ignore-duplicates":
                    continue
                if resolution != "merge-duplicates" or key in staged:
                    raise Reject(
                        pg_error(
                            409,
                            "23505",
                            f'duplicate key value violates unique constraint "{table.name}_pkey"',
                            details=f"Key (id)=({key}) already exists.",
                        )
                    )
                if not spec.visible(self, stored[key], call.user):
                    raise Reject(rls_violation(table.name))
                row = {**stored[key], **{c: row[c] for c in columns}}
            spec.check(self, row, call.user, staged)
            staged[key] = row
            written.append(row)
        stored.update(staged)
        if preferences.get("return") == "representation":
            return json_response(201, pg.project(written, selected))
        return FakeResponse(201)

    def _rest_update(self, call: Call) -> Result:
        spec = self._spec(call)
        table = spec.table
        request = call.request
        if not spec.writable:
            raise self._read_only(spec)
        payload = self._json_body(request, rest=True)
        if not isinstance(payload, dict):
            raise Reject(pg_error(400, "PGRST102", "Empty or invalid json"))
        changes = {k: pg.coerce(table, k, v) for k, v in payload.items()}
        filters = self._filters(table, request)
        selected = pg.parse_select(table, request.param("select"))
        matched = [r for r in self._visible(spec, call.user) if all(f.matches(r) for f in filters)]
        updated: list[tuple[Any, dict[str, Any]]] = []
        for row in matched:
            new = {**row, **changes}
            if "updated_at" in table.columns and "updated_at" not in changes:
                new["updated_at"] = iso_time(call.now)
            check_not_null(table, new)
            if not spec.visible(self, new, call.user):  # row-level security's WITH CHECK
                raise Reject(rls_violation(table.name))
            updated.append((row["id"], new))
        stored = self._rows[table.name]
        for old_id, new in updated:
            del stored[old_id]
            stored[new["id"]] = new
        if pg.prefer(request.headers).get("return") == "representation":
            return json_response(200, pg.project([new for _, new in updated], selected))
        return FakeResponse(204)

    # -- the edge: generation ------------------------------------------------------

    def _generation_target(self, conv_id: str, node_id: str, user: str) -> None:
        """A generation needs the user's live conversation and its type ``"2"`` node."""
        conversation = self._rows["conversation"].get(conv_id)
        if conversation is None or conversation["user_id"] != user or conversation["is_delete"]:
            raise Reject(edge_error(404, f"Conversation {conv_id} not found"))
        node = self._rows["flow_node"].get(node_id)
        if node is None or node["conv_id"] != conv_id or node["type"] != "2":
            raise Reject(edge_error(404, f"AI node {node_id} not found in the conversation"))

    def _start(self, turn: Turn, now: float, responder: Responder) -> None:
        """Record the turn and play the next queued script, or the responder's."""
        self.turns.append(turn)
        script = self._scripts.popleft() if self._scripts else Script(tuple(responder(turn)))
        self._play(script, turn, now)

    @route("POST", "/completion/async", auth="edge")
    def _completion(self, call: Call) -> Result:
        """Start a text generation; its events go to the user's open streams."""
        request = call.request
        if request.param("mode") != "general":
            raise Reject(edge_error(400, "mode must be 'general'"))
        turn = read_turn(self._json_body(request, rest=False), call.user)
        self._generation_target(turn.conv_id, turn.node_id, call.user)
        self._require_credits(call.user)
        self._start(turn, call.now, self.responder)
        return json_response(200, {"status": "processing", "nodeId": turn.node_id})

    def _open_stream(self, call: Call) -> FakeStream:
        request = call.request
        user_id = request.param("user_id")
        if not user_id:
            raise Reject(edge_error(400, "user_id is required"))
        if user_id != call.user:
            raise Reject(edge_error(403, "user_id does not match the token"))
        accept = request.header("accept") or ""
        if "text/event-stream" not in accept.lower():
            raise Reject(edge_error(406, "Not Acceptable: send 'Accept: text/event-stream'"))
        stream = FakeStream(path=request.path, user_id=call.user, opened_at=call.now)
        self.streams.append(stream)
        return stream

    @route("GET", "/user_stream/stream", auth="edge")
    def _user_stream(self, call: Call) -> Result:
        """The shared generation stream: every event of the user."""
        return self._open_stream(call)

    @route("GET", "/user_stream/sse", auth="edge")
    def _user_sse(self, call: Call) -> Result:
        """The keep-alive stream, which also carries ``workflow_complete``."""
        stream = self._open_stream(call)
        stream.schedule(call.now, next(self._order), SendBytes(data_frame({"status": "connected"})))
        return stream

    # -- playing a script ----------------------------------------------------------

    def _node_fields(self, node_id: str, conv_id: str, at: float) -> dict[str, Any]:
        seq = self._seq.get(node_id, 0)
        self._seq[node_id] = seq + 1
        return {"nodeId": node_id, "convId": conv_id, "seq": seq, "timestamp": _ms(at)}

    def _envelope(self, event: dict[str, Any]) -> dict[str, Any]:
        """``/user_stream/stream`` wraps each event: ``{"data": event, "id": "<n>"}``
        (the bare event when :attr:`stream_envelope` is off)."""
        if not self.stream_envelope:
            return event
        return {"data": event, "id": str(next(self._event_ids))}

    def _play(self, script: Script, turn: Turn, start: float) -> None:
        """Put the script's frames on the user's streams and schedule its row changes."""
        at = start
        texts: list[str] = []
        touched: dict[int, FakeStream] = {}

        def emit(item: StreamItem, channel: Channel = "stream") -> None:
            order = next(self._order)
            for stream in self.open_streams(channel):
                if stream.user_id == turn.user_id and stream.accepting:
                    stream.schedule(at, order, item)
                    touched[id(stream)] = stream

        def frame(payload: Any) -> SendBytes:
            return SendBytes(
                data_frame(payload, line_ending=script.line_ending, multiline=script.multiline)
            )

        def change_row(**change: Any) -> None:
            heapq.heappush(self._row_changes, (at, next(self._order), turn.node_id, change))

        for step in script.steps:
            if isinstance(step, PauseStep):
                at += step.seconds
            elif isinstance(step, ChunkStep):
                texts.append(step.text)
                fields = self._node_fields(turn.node_id, turn.conv_id, at)
                emit(frame(self._envelope({"type": "chunks", **fields, "chunks": [step.text]})))
            elif isinstance(step, OtherNodeStep):
                fields = self._node_fields(self._new_id(), turn.conv_id, at)
                emit(frame(self._envelope({"type": "chunks", **fields, "chunks": [step.text]})))
            elif isinstance(step, CompleteStep):
                result = "".join(texts) if step.result is None else step.result
                fields = self._node_fields(turn.node_id, turn.conv_id, at)
                event = {"type": "complete", **fields, "result": result}
                emit(frame(self._envelope({**event, "reasoning": step.reasoning})))
                change_row(status="done", value=result)
            elif isinstance(step, FailStep):
                event = {
                    "type": "status",
                    "nodeId": turn.node_id,
                    "convId": turn.conv_id,
                    "status": step.status,
                    "error": step.error,
                    "error_type": step.error_type,
                    "timestamp": _ms(at),
                }
                emit(frame(self._envelope(event)))
                change_row(status=step.status, error=step.error, error_type=step.error_type)
            elif isinstance(step, WorkflowStep):
                emit(frame(_workflow_event(step, turn, at)), "sse")
                if step.status == "completed":
                    change_row(status="done", value=step.result)
                else:
                    change_row(status="failed", error=step.error, error_type=step.error_type)
            elif isinstance(step, RowStep):
                change_row(**step.data, status=step.status, value=step.value)
            elif isinstance(step, HeartbeatStep):
                emit(SendBytes(heartbeat_frame(at, line_ending=script.line_ending)), step.channel)
            elif isinstance(step, CommentStep):
                emit(
                    SendBytes(comment_frame(step.text, line_ending=script.line_ending)),
                    step.channel,
                )
            elif isinstance(step, RawStep):
                emit(SendBytes(step.data), step.channel)
            elif isinstance(step, CloseStep):
                emit(CloseStream(), step.channel)
            elif isinstance(step, DropStep):
                emit(DropStream(), step.channel)
            elif isinstance(step, HangStep):
                emit(Hang(), step.channel)
            else:  # pragma: no cover - the Step union is exhaustive
                raise TypeError(f"not a script step: {step!r}")
        self.advance(now=start)
        for stream in touched.values():
            stream.wake()


def _ms(now: float) -> int:
    return int(now * 1000)


def _tidy(value: float) -> float:
    """Credit arithmetic without binary noise (``1523.5 - 0.1`` is ``1523.4``)."""
    rounded = round(value, 6)
    return int(rounded) if rounded == int(rounded) else rounded


def _credit(
    sub_type: str, init: float, remain: float, start: str, end: str, tiers: list[str]
) -> dict[str, Any]:
    def day(text: str) -> str:
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).isoformat()

    return {
        "sub_type": sub_type,
        "init_quota": init,
        "remain_quota": remain,
        "from_date": day(start),
        "to_date": day(end),
        "policy_summary": {"allowed_model_tiers": tiers},
    }


def _workflow_event(step: WorkflowStep, turn: Turn, at: float) -> dict[str, Any]:
    """The bare (unwrapped) ``workflow_complete`` event of protocol.md 4.3."""
    task_type = step.task_type or ("image" if turn.kind == "text" else turn.kind)
    return {
        "type": "workflow_complete",
        "taskType": task_type,
        "nodeId": turn.node_id,
        "convId": turn.conv_id,
        "status": step.status,
        "result": step.result,
        "error": step.error,
        "error_type": step.error_type,
        "isPaid": step.is_paid,
        "timestamp": _ms(at),
        "sender": "fake-flowith",
    }


for _name in TABLES:
    ROUTES[_REST + _name] = {
        "GET": Route("GET", _REST + _name, "rest", FakeFlowith._rest_select),
        "POST": Route("POST", _REST + _name, "rest", FakeFlowith._rest_insert),
        "PATCH": Route("PATCH", _REST + _name, "rest", FakeFlowith._rest_update),
    }

#: The modules whose handlers registered their routes on import.
HANDLER_MODULES = (edge, gotrue, rpc)

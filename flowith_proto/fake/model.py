"""The fake Flowith service: both hosts as one pure function of requests and time.

:meth:`FakeFlowith.handle` takes a request as it arrived on the wire plus the
current unix time and returns a complete response, or a :class:`FakeStream`
for the event-stream endpoints. Nothing here reads a clock or a global random
source: time comes in as ``now`` and ids come from the model's own seeded
generator, so the same requests give the same answers, byte for byte.

Requests are checked the way the real servers check them (auth scheme,
``apikey``, PostgREST's query syntax, constraints, row-level security), and a
deviation gets the real status and error body. Routing is a table,
:data:`ROUTES`: an endpoint is one registered handler, a PostgREST table is one
:class:`TableSpec`.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import json
import random
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal, TypeVar

import attrs
import jwt

from flowith_proto.config import DEFAULT_SUPABASE_KEY
from flowith_proto.fake import postgrest as pg
from flowith_proto.fake.frames import LineEnding, comment_frame, data_frame, heartbeat_frame
from flowith_proto.fake.script import (
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
    default_responder,
)
from flowith_proto.fake.stream import (
    CloseStream,
    DropStream,
    FakeStream,
    Hang,
    SendBytes,
    StreamItem,
)
from flowith_proto.fake.wire import (
    FakeResponse,
    RecordedRequest,
    Reject,
    edge_error,
    json_response,
    parse_target,
    pg_error,
)

__all__ = [
    "FAKE_JWT_SECRET",
    "FAKE_USER_ID",
    "ROUTES",
    "TABLES",
    "TOKEN_EXPIRES_AT",
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
_ISSUED_AT = 1_704_067_200  # 2024-01-01, fixed so the token is the same every run

EdgeAuthMode = Literal["bare", "bearer", "either"]
_EDGE_AUTH_MODES = ("bare", "bearer", "either")
_ROLES = frozenset({"user", "assistant", "system"})
_REST = "/rest/v1/"


@attrs.frozen
class Call:
    """A request that passed authentication: who sent it, and when."""

    request: RecordedRequest
    user: str
    now: float


Result = FakeResponse | FakeStream
Handler = Callable[["FakeFlowith", Call], Result]
_H = TypeVar("_H", bound=Callable[..., Result])


@attrs.frozen
class Route:
    """One endpoint: ``auth`` says which host's rules check the request."""

    method: str
    path: str
    auth: Literal["edge", "rest"]
    handler: Callable[..., Result]


#: path -> method -> route. Both hosts share it: Supabase paths start with
#: ``/rest/v1/`` or ``/auth/v1/``, every other path is the edge's.
ROUTES: dict[str, dict[str, Route]] = {}


def _route(method: str, path: str, *, auth: Literal["edge", "rest"]) -> Callable[[_H], _H]:
    def register(handler: _H) -> _H:
        ROUTES.setdefault(path, {})[method] = Route(method, path, auth, handler)
        return handler

    return register


def _iso(now: float) -> str:
    """A ``timestamptz`` as PostgREST renders it (fixed width, so text order is time order)."""
    return datetime.fromtimestamp(now, tz=timezone.utc).isoformat(timespec="microseconds")


def _ms(now: float) -> int:
    return int(now * 1000)


class FakeFlowith:
    """A pure, deterministic model of the Flowith edge and its Supabase project.

    ``edge_auth`` is the scheme the edge accepts for the token: ``"bare"``
    (the web app's), ``"bearer"``, or ``"either"``. ``heartbeat_interval`` is
    how long a stream may stay idle before the server writes a heartbeat.
    ``responder`` answers a completion that has no :meth:`script` queued.
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
        #: A valid access token for ``user_id``; clients sign in with it.
        self.token = self.issue_token()
        #: Every request received, in order.
        self.requests: list[RecordedRequest] = []
        #: Every accepted completion, in order.
        self.turns: list[Turn] = []
        #: Every stream connection ever opened (closed ones included).
        self.streams: list[FakeStream] = []
        self._rng = random.Random(seed)
        self._scripts: deque[Script] = deque()
        self._rows: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in TABLES}
        self._row_changes: list[tuple[float, int, str, dict[str, Any]]] = []
        self._order = itertools.count()
        self._event_ids = itertools.count(1)
        self._seq: dict[str, int] = {}

    # -- public knobs and views ------------------------------------------------

    def issue_token(self, sub: str | None = None, *, expires_at: float = TOKEN_EXPIRES_AT) -> str:
        """A token signed by this fake (for another user, or one that expires)."""
        claims = {
            "aud": "authenticated",
            "exp": int(expires_at),
            "iat": _ISSUED_AT,
            "iss": "https://fake.flowith.invalid/auth/v1",
            "role": "authenticated",
            "sub": self.user_id if sub is None else sub,
        }
        return jwt.encode(claims, FAKE_JWT_SECRET, algorithm="HS256")

    def script(self, *steps: Step, line_ending: LineEnding = "\n", multiline: bool = False) -> None:
        """Queue what the next completion does (first queued, first used)."""
        self._scripts.append(Script(tuple(steps), line_ending, multiline))

    def advance(self, *, now: float) -> None:
        """Apply the row changes scripts scheduled up to ``now``.

        :meth:`handle` does this itself; call it before reading :attr:`nodes`
        when a script paused before changing a row.
        """
        changes = self._row_changes
        nodes = self._rows["flow_node"]
        while changes and changes[0][0] <= now:
            due, _, node_id, change = heapq.heappop(changes)
            row = nodes.get(node_id)
            if row is not None:
                data = row.get("data")
                row["data"] = {**(data if isinstance(data, dict) else {}), **change}
                row["updated_at"] = _iso(due)

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

    @property
    def conversations(self) -> dict[str, dict[str, Any]]:
        """A copy of the ``conversation`` rows by id."""
        return copy.deepcopy(self._rows["conversation"])

    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        """A copy of the ``flow_node`` rows by id."""
        return copy.deepcopy(self._rows["flow_node"])

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
            bytes(body),
            now,
        )
        self.requests.append(request)
        routes = ROUTES.get(path)
        if routes is None:
            if path.startswith(_REST):
                name = path[len(_REST) :]
                message = f"Could not find the table 'public.{name}' in the schema cache"
                return pg_error(404, "PGRST205", message)
            return edge_error(404, "Not Found")
        route = routes.get(request.method)
        if route is None:
            allow = ", ".join(sorted(routes))
            return json_response(405, {"message": "Method Not Allowed"}, [("allow", allow)])
        try:
            if route.auth == "rest":
                user = self._rest_user(request, now)
            else:
                user = self._edge_user(request, now)
            return route.handler(self, Call(request, user, now))
        except Reject as reject:
            return reject.response

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

    @staticmethod
    def _expired(claims: Mapping[str, Any], now: float) -> bool:
        exp = claims.get("exp")
        return isinstance(exp, (int, float)) and exp <= now

    def _edge_user(self, request: RecordedRequest, now: float) -> str:
        value = request.header("authorization")
        if not value:
            raise Reject(edge_error(401, "Missing authorization header"))
        bearer = value[:7].lower() == "bearer "
        if (self.edge_auth == "bare" and bearer) or (self.edge_auth == "bearer" and not bearer):
            raise Reject(edge_error(401, "Unauthorized: unexpected authorization scheme"))
        claims = self._claims(value[7:].strip() if bearer else value.strip())
        if not claims:
            raise Reject(edge_error(401, "Unauthorized: invalid token"))
        if self._expired(claims, now):
            raise Reject(edge_error(401, "jwt expired"))
        return str(claims["sub"])

    def _rest_user(self, request: RecordedRequest, now: float) -> str:
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
        claims = self._claims(value[7:].strip())
        if not claims:
            raise Reject(pg_error(401, "PGRST301", "JWT cryptographic operation failed"))
        if self._expired(claims, now):
            raise Reject(pg_error(401, "PGRST303", "JWT expired"))
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
        return str(claims["sub"])

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
        return [
            row for row in self._rows[spec.table.name].values() if spec.visible(self, row, user)
        ]

    def _rest_select(self, call: Call) -> Result:
        spec = self._spec(call)
        request = call.request
        filters = self._filters(spec.table, request)
        columns = pg.parse_select(spec.table, request.param("select"))
        limit = pg.parse_count("limit", request.param("limit"))
        offset = pg.parse_count("offset", request.param("offset")) or 0
        rows = [r for r in self._visible(spec, call.user) if all(f.matches(r) for f in filters)]
        rows = pg.order_rows(spec.table, rows, request.param("order"))[offset:]
        if limit is not None:
            rows = rows[:limit]
        body = pg.project(rows, columns)
        content_range = f"{offset}-{offset + len(body) - 1}/*" if body else "*/*"
        return json_response(200, body, [("content-range", content_range)])

    def _rest_insert(self, call: Call) -> Result:
        spec = self._spec(call)
        table = spec.table
        request = call.request
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
        staged: dict[str, dict[str, Any]] = {}
        written: list[dict[str, Any]] = []
        for obj in objects:
            row = spec.defaults(self, call.user, call.now)
            row.update({c: pg.coerce(table, c, obj.get(c)) for c in columns})
            _check_not_null(table, row)
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
                    raise Reject(_rls_violation(table.name))
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
        payload = self._json_body(request, rest=True)
        if not isinstance(payload, dict):
            raise Reject(pg_error(400, "PGRST102", "Empty or invalid json"))
        changes = {k: pg.coerce(table, k, v) for k, v in payload.items()}
        filters = self._filters(table, request)
        selected = pg.parse_select(table, request.param("select"))
        matched = [r for r in self._visible(spec, call.user) if all(f.matches(r) for f in filters)]
        updated: list[tuple[str, dict[str, Any]]] = []
        for row in matched:
            new = {**row, **changes}
            if "updated_at" in table.columns and "updated_at" not in changes:
                new["updated_at"] = _iso(call.now)
            _check_not_null(table, new)
            if not spec.visible(self, new, call.user):  # row-level security's WITH CHECK
                raise Reject(_rls_violation(table.name))
            updated.append((row["id"], new))
        stored = self._rows[table.name]
        for old_id, new in updated:
            del stored[old_id]
            stored[new["id"]] = new
        if pg.prefer(request.headers).get("return") == "representation":
            return json_response(200, pg.project([new for _, new in updated], selected))
        return FakeResponse(204)

    # -- the edge: generation ------------------------------------------------------

    @_route("POST", "/completion/async", auth="edge")
    def _completion(self, call: Call) -> Result:
        """Start a text generation; its events go to the user's open streams."""
        request = call.request
        if request.param("mode") != "general":
            raise Reject(edge_error(400, "mode must be 'general'"))
        turn = self._read_turn(self._json_body(request, rest=False), call.user)
        conversation = self._rows["conversation"].get(turn.conv_id)
        if (
            conversation is None
            or conversation["user_id"] != call.user
            or conversation["is_delete"]
        ):
            raise Reject(edge_error(404, f"Conversation {turn.conv_id} not found"))
        node = self._rows["flow_node"].get(turn.node_id)
        if node is None or node["conv_id"] != turn.conv_id or node["type"] != "2":
            raise Reject(edge_error(404, f"AI node {turn.node_id} not found in the conversation"))
        self.turns.append(turn)
        script = self._scripts.popleft() if self._scripts else Script(tuple(self.responder(turn)))
        self._play(script, turn, call.now)
        return json_response(200, {"status": "processing", "nodeId": turn.node_id})

    @staticmethod
    def _read_turn(body: Any, user: str) -> Turn:
        """The completion body checked field by field (a 400 names the first problem)."""

        def bad(message: str) -> Reject:
            return Reject(edge_error(400, message))

        if not isinstance(body, dict):
            raise bad("the body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise bad("'model' must be a non-empty string")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad("'messages' must be a non-empty list")
        for index, message in enumerate(messages):
            problem = _message_problem(message)
            if problem:
                raise bad(f"messages[{index}]: {problem}")
        if messages[-1]["role"] != "user":
            raise bad("the last message must have role 'user'")
        ids = {}
        for field in ("nodeId", "convId"):
            value = body.get(field)
            try:
                ids[field] = str(uuid.UUID(value)) if isinstance(value, str) else ""
            except ValueError:
                ids[field] = ""
            if not ids[field]:
                raise bad(f"{field!r} must be a UUID")
        if body.get("stream") is not True:
            raise bad("'stream' must be true")
        return Turn(
            prompt=_text_of(messages[-1]["content"]),
            messages=tuple(messages),
            model=model,
            conv_id=ids["convId"],
            node_id=ids["nodeId"],
            user_id=user,
        )

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

    @_route("GET", "/user_stream/stream", auth="edge")
    def _user_stream(self, call: Call) -> Result:
        """The shared generation stream: every event of the user."""
        return self._open_stream(call)

    @_route("GET", "/user_stream/sse", auth="edge")
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
        """``/user_stream/stream`` wraps each event: ``{"data": event, "id": "<n>"}``."""
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


def _workflow_event(step: WorkflowStep, turn: Turn, at: float) -> dict[str, Any]:
    """The bare (unwrapped) ``workflow_complete`` event of protocol.md 4.3."""
    return {
        "type": "workflow_complete",
        "taskType": step.task_type,
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


def _message_problem(message: Any) -> str:
    """What is wrong with one chat message, or ``""``."""
    if not isinstance(message, dict):
        return "must be an object"
    if message.get("role") not in _ROLES:
        return "'role' must be 'user', 'assistant' or 'system'"
    content = message.get("content")
    if isinstance(content, str):
        return ""
    if not isinstance(content, list) or not content:
        return "'content' must be a string or a non-empty list of parts"
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str):
            return "each content part must be an object with a 'type'"
        if kind == "text" and not isinstance(part.get("text"), str):
            return "a text part needs a string 'text'"
        if kind == "image_url":
            image = part.get("image_url")
            if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                return "an image_url part needs 'image_url': {'url': str}"
    return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p["text"] for p in content if p.get("type") == "text")


def _check_not_null(table: pg.Table, row: Mapping[str, Any]) -> None:
    for column in table.columns:
        if column in table.not_null and row.get(column) is None:
            raise Reject(
                pg_error(
                    400,
                    "23502",
                    f'null value in column "{column}" of relation "{table.name}" '
                    "violates not-null constraint",
                )
            )


def _rls_violation(table: str) -> FakeResponse:
    return pg_error(403, "42501", f'new row violates row-level security policy for table "{table}"')


def _fk_violation(table: str, constraint: str, column: str, value: Any) -> Reject:
    return Reject(
        pg_error(
            409,
            "23503",
            f'insert or update on table "{table}" violates foreign key constraint "{constraint}"',
            details=f'Key ({column})=({value}) is not present in table "{table}".',
        )
    )


@attrs.frozen
class TableSpec:
    """A PostgREST table: its schema and the rules the database enforces.

    ``defaults`` gives a new row's column defaults; ``visible`` is the
    row-level security policy (who may read and write a row); ``check`` runs
    the constraints of an insert (``staged`` holds the batch's earlier rows)
    and raises :class:`Reject`.
    """

    table: pg.Table
    defaults: Callable[[FakeFlowith, str, float], dict[str, Any]]
    visible: Callable[[FakeFlowith, Mapping[str, Any], str], bool]
    check: Callable[[FakeFlowith, dict[str, Any], str, Mapping[str, dict[str, Any]]], None]


def _conversation_defaults(fake: FakeFlowith, user: str, now: float) -> dict[str, Any]:
    return {
        "id": fake._new_id(),
        "user_id": user,
        "title": None,
        "project_id": None,
        "is_absolute_mode": True,
        "preview": None,
        "is_delete": False,
        "created_at": _iso(now),
        "updated_at": _iso(now),
    }


def _conversation_visible(fake: FakeFlowith, row: Mapping[str, Any], user: str) -> bool:
    return row.get("user_id") == user


def _conversation_check(
    fake: FakeFlowith, row: dict[str, Any], user: str, staged: Mapping[str, dict[str, Any]]
) -> None:
    if row["user_id"] != user:
        raise Reject(_rls_violation("conversation"))
    if row["project_id"] is not None:  # no flow_project rows are modeled
        raise _fk_violation(
            "conversation", "conversation_project_id_fkey", "project_id", row["project_id"]
        )


def _node_defaults(fake: FakeFlowith, user: str, now: float) -> dict[str, Any]:
    return {
        "id": None,
        "conv_id": None,
        "type": None,
        "p_id": None,
        "c_ids": [],
        "data": {},
        "position": {},
        "is_delete": False,
        "created_at": _iso(now),
        "updated_at": _iso(now),
    }


def _node_visible(fake: FakeFlowith, row: Mapping[str, Any], user: str) -> bool:
    conversation = fake._rows["conversation"].get(row.get("conv_id") or "")
    return conversation is not None and conversation["user_id"] == user


def _node_check(
    fake: FakeFlowith, row: dict[str, Any], user: str, staged: Mapping[str, dict[str, Any]]
) -> None:
    if row["type"] not in ("1", "2"):
        raise Reject(
            pg_error(
                400,
                "23514",
                'new row for relation "flow_node" violates check constraint "flow_node_type_check"',
            )
        )
    conv_id = row["conv_id"]
    conversation = fake._rows["conversation"].get(conv_id)
    if conversation is None or conversation["is_delete"]:
        raise _fk_violation("flow_node", "flow_node_conv_id_fkey", "conv_id", conv_id)
    if conversation["user_id"] != user:
        raise Reject(_rls_violation("flow_node"))
    parent = row["p_id"]
    if parent is not None and parent != conv_id:
        node = staged.get(parent) or fake._rows["flow_node"].get(parent)
        if node is None or node["conv_id"] != conv_id:
            raise _fk_violation("flow_node", "flow_node_p_id_fkey", "p_id", parent)


#: The PostgREST tables the fake serves, by name.
TABLES: dict[str, TableSpec] = {
    spec.table.name: spec
    for spec in (
        TableSpec(
            pg.Table(
                "conversation",
                {
                    "id": "uuid",
                    "user_id": "uuid",
                    "title": "text",
                    "project_id": "uuid",
                    "is_absolute_mode": "bool",
                    "preview": "text",
                    "is_delete": "bool",
                    "created_at": "timestamptz",
                    "updated_at": "timestamptz",
                },
                not_null=frozenset({"id", "user_id"}),
            ),
            _conversation_defaults,
            _conversation_visible,
            _conversation_check,
        ),
        TableSpec(
            pg.Table(
                "flow_node",
                {
                    "id": "uuid",
                    "conv_id": "uuid",
                    "type": "text",
                    "p_id": "uuid",
                    "c_ids": "uuid[]",
                    "data": "json",
                    "position": "json",
                    "is_delete": "bool",
                    "created_at": "timestamptz",
                    "updated_at": "timestamptz",
                },
                not_null=frozenset({"id", "conv_id", "type"}),
            ),
            _node_defaults,
            _node_visible,
            _node_check,
        ),
    )
}

for _name in TABLES:
    ROUTES[_REST + _name] = {
        "GET": Route("GET", _REST + _name, "rest", FakeFlowith._rest_select),
        "POST": Route("POST", _REST + _name, "rest", FakeFlowith._rest_insert),
        "PATCH": Route("PATCH", _REST + _name, "rest", FakeFlowith._rest_update),
    }

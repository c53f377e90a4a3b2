"""One builder per endpoint: hosts, paths, query order, headers and bodies.

The facts come from protocol.md (sections 1.4 and 2). Where the old client had
a defect (section 7) the builder does the right thing instead, and says so:
no JSON content type on bodiless requests (D26), ``Content-Profile`` on
PostgREST writes (D26), every filter value validated or encoded (D13), the
conversation history in ``messages`` (D6).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from flowith_proto.auth import Credentials
from flowith_proto.config import SUPABASE_CLIENT_INFO, EdgeAuth, FlowithConfig
from flowith_proto.errors import AuthenticationError
from flowith_proto.request import (
    Request,
    dump_json,
    encode_query,
    literal,
    quote_value,
    require_uuid,
)

__all__ = ["NODE_TYPE_AI", "NODE_TYPE_USER", "Endpoints", "Position"]

NODE_TYPE_USER = "1"
NODE_TYPE_AI = "2"

_ACCEPT_JSON = "application/json, text/plain, */*"
_JSON = "application/json"

_USER_NODE_COLUMNS = '"id","position","type","conv_id","p_id","c_ids","data"'
_AI_NODE_COLUMNS = '"id","conv_id","type","position","data","p_id","c_ids"'


@attrs.frozen
class Position:
    """A node's place on the flow canvas, in the web app's pixels."""

    x: int = 0
    y: int = 0

    def as_json(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y}


@attrs.frozen
class Endpoints:
    """Builds the requests of one signed-in user.

    Rebuild it (cheap) whenever the credentials change, so a replayed request
    after a token refresh carries the new token.
    """

    config: FlowithConfig
    credentials: Credentials

    # -- headers -----------------------------------------------------------

    def _token(self) -> str:
        token = self.credentials.access_token
        if not token:
            raise AuthenticationError("No access token set: pass token=... to the client.")
        return token

    def _edge_authorization(self) -> str:
        token = self._token()
        return f"Bearer {token}" if self.config.edge_auth is EdgeAuth.BEARER else token

    def _browser(self) -> list[tuple[str, str]]:
        return [
            ("User-Agent", self.config.user_agent),
            ("Origin", self.config.origin),
            ("Referer", self.config.referer),
        ]

    def edge_headers(self, content_type: str | None = None) -> tuple[tuple[str, str], ...]:
        """The edge's JSON calls: the token bare (or ``Bearer``, if configured)."""
        headers = [("Accept", _ACCEPT_JSON)]
        if content_type is not None:
            headers.append(("Content-Type", content_type))
        headers.append(("authorization", self._edge_authorization()))
        headers.extend(self._browser())
        return tuple(headers)

    def sse_headers(self, *, pragma: bool) -> tuple[tuple[str, str], ...]:
        """The event streams: ``/stream`` adds ``pragma``, ``/sse`` does not."""
        headers = [
            ("authorization", self._edge_authorization()),
            ("Accept", "text/event-stream"),
            ("Cache-Control", "no-cache"),
        ]
        if pragma:
            headers.append(("pragma", "no-cache"))
        headers.extend(self._browser())
        return tuple(headers)

    def rest_headers(
        self, *, write: bool = False, prefer: str | None = None
    ) -> tuple[tuple[str, str], ...]:
        """PostgREST: ``apikey`` plus ``Bearer``; reads name the schema in
        ``accept-profile``, writes in ``Content-Profile`` as supabase-js does."""
        headers = [("Accept", _ACCEPT_JSON), *self._browser()]
        headers.append(("apikey", self.config.supabase_key))
        headers.append(("authorization", f"Bearer {self._token()}"))
        if write:
            headers.append(("Content-Profile", "public"))
            headers.append(("Content-Type", _JSON))
            if prefer is not None:
                headers.append(("Prefer", prefer))
        else:
            headers.append(("accept-profile", "public"))
        headers.append(("x-client-info", SUPABASE_CLIENT_INFO))
        return tuple(headers)

    # -- URLs --------------------------------------------------------------

    def _edge(self, path: str, query: Sequence[tuple[str, str]] = ()) -> str:
        url = self.config.edge_url + path
        return f"{url}?{encode_query(query)}" if query else url

    def _rest(self, path: str, query: Sequence[tuple[str, str]] = ()) -> str:
        url = self.config.rest_url + path
        return f"{url}?{encode_query(query)}" if query else url

    def _user_id(self) -> str:
        if not self.credentials.user_id:
            raise AuthenticationError(
                "No user id: the token has no 'sub' claim; pass user_id=... to the client."
            )
        return require_uuid(self.credentials.user_id, "user_id")

    # -- the generation path -----------------------------------------------

    def create_conversation(self) -> Request:
        """Insert a conversation row; the answer carries its ``id``."""
        return Request(
            "POST",
            self._rest("/conversation", [("select", "id")]),
            self.rest_headers(write=True, prefer="return=representation"),
            dump_json({"project_id": None, "is_absolute_mode": True, "user_id": self._user_id()}),
        )

    def create_user_node(
        self,
        *,
        node_id: str,
        conv_id: str,
        parent_id: str,
        prompt: str,
        timestamp: str,
        position: Position,
        children: Sequence[str] = (),
    ) -> Request:
        """Insert the user's node (type ``"1"``) under ``parent_id``.

        The old client always hung it under the conversation root with no
        children (D6); a session passes the previous AI node as parent and
        the new AI node as child, so the canvas shows one thread.
        """
        row = {
            "id": require_uuid(node_id, "node_id"),
            "position": position.as_json(),
            "type": NODE_TYPE_USER,
            "conv_id": require_uuid(conv_id, "conv_id"),
            "p_id": require_uuid(parent_id, "parent_id"),
            "c_ids": [require_uuid(c, "child id") for c in children],
            "data": {"timestamp": timestamp, "value": prompt},
        }
        return Request(
            "POST",
            self._rest("/flow_node", [("columns", literal(_USER_NODE_COLUMNS))]),
            self.rest_headers(write=True, prefer="return=minimal"),
            dump_json([row]),
        )

    def create_ai_node(
        self,
        *,
        node_id: str,
        conv_id: str,
        parent_id: str,
        data: dict[str, Any],
        position: Position,
    ) -> Request:
        """Insert the node (type ``"2"``) that the server fills with the answer."""
        row = {
            "id": require_uuid(node_id, "node_id"),
            "conv_id": require_uuid(conv_id, "conv_id"),
            "type": NODE_TYPE_AI,
            "position": position.as_json(),
            "data": data,
            "p_id": require_uuid(parent_id, "parent_id"),
            "c_ids": [],
        }
        return Request(
            "POST",
            self._rest("/flow_node", [("columns", literal(_AI_NODE_COLUMNS))]),
            self.rest_headers(write=True, prefer="return=minimal"),
            dump_json([row]),
        )

    def start_completion(
        self,
        *,
        model: str,
        messages: Sequence[dict[str, Any]],
        node_id: str,
        conv_id: str,
    ) -> Request:
        """Ask the edge to generate into ``node_id``; the text arrives on the stream."""
        body = {
            "model": model,
            "messages": list(messages),
            "nodeId": require_uuid(node_id, "node_id"),
            "convId": require_uuid(conv_id, "conv_id"),
            "stream": True,
        }
        return Request(
            "POST",
            self._edge("/completion/async", [("mode", "general")]),
            self.edge_headers(_JSON),
            dump_json(body),
        )

    def poll_node(self, node_id: str) -> Request:
        """Read a node's ``data`` and ``type``: the authoritative result."""
        query = [("id", "eq." + require_uuid(node_id, "node_id")), ("select", "data,type")]
        return Request("GET", self._rest("/flow_node", query), self.rest_headers(), idempotent=True)

    def user_stream(self) -> Request:
        """``/user_stream/stream``: every generation event of the user."""
        return Request(
            "GET",
            self._edge("/user_stream/stream", [("user_id", quote_value(self._user_id()))]),
            self.sse_headers(pragma=True),
            idempotent=True,
            stream=True,
        )

    def user_sse(self) -> Request:
        """``/user_stream/sse``: heartbeats and ``workflow_complete`` events."""
        return Request(
            "GET",
            self._edge("/user_stream/sse", [("user_id", quote_value(self._user_id()))]),
            self.sse_headers(pragma=False),
            idempotent=True,
            stream=True,
        )

    # -- conversations -------------------------------------------------------

    def delete_conversation(self, conv_id: str) -> Request:
        """Soft-delete: mark the row ``is_delete``. The old client sent no
        ``Prefer`` and so could not tell a deleted row from no row at all
        (D21); asking for the updated ids makes a no-op visible."""
        query = [("id", "eq." + require_uuid(conv_id, "conv_id")), ("select", "id")]
        return Request(
            "PATCH",
            self._rest("/conversation", query),
            self.rest_headers(write=True, prefer="return=representation"),
            dump_json({"is_delete": True}),
        )

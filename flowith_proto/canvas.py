"""Reading a conversation's canvas whole, past PostgREST's cap on rows per answer.

Supabase answers a read with at most ``max-rows`` rows (1,000 unless the project
sets another number), silently: a canvas of 3,000 nodes read in one request
comes back as its first 1,000, and a session resumed from them would hang its
next turn under an old answer, send a third of the history and draw on top of
existing nodes. The first read is the plain one (so recordings of it still
replay); an answer as long as the cap means more may follow, so the rest is read
in pages of that size until one comes back shorter, or brings no node not read
yet: a server that ignores ``offset`` would answer the same page forever.

The pages are ordered by ``created_at`` and then ``id``, a total order; the first
read, by ``created_at`` alone, may have cut a group of nodes created at the same
instant anywhere, so the pages start at that group (the nodes at the end of the
first answer that share its last ``created_at``) and skip what was read already.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from flowith_proto.calls import call
from flowith_proto.convert import structure_rows
from flowith_proto.effects import Operation
from flowith_proto.endpoints import Endpoints
from flowith_proto.models import FlowNode
from flowith_proto.queries import unseen_rows
from flowith_proto.request import Request
from flowith_proto.state import ClientState

__all__ = ["POSTGREST_MAX_ROWS", "later_pages", "read_canvas"]

#: Supabase's default ``max-rows``: an answer this long may have been cut.
POSTGREST_MAX_ROWS = 1000


def read_canvas(
    state: ClientState, conv_id: str, *, context: str, deadline: float | None = None
) -> Operation[list[FlowNode]]:
    """The live nodes of ``conv_id`` (a checked UUID), in creation order."""
    response = yield from call(state, lambda e: e.flow_nodes(conv_id), deadline=deadline)
    with response.decoding():
        nodes = structure_rows(
            response.json(), FlowNode, context=context, owned=True, lone_object=False
        )
    if len(nodes) >= POSTGREST_MAX_ROWS:
        nodes += yield from later_pages(state, conv_id, nodes, context=context, deadline=deadline)
    return nodes


def later_pages(
    state: ClientState,
    conv_id: str,
    first: Sequence[FlowNode],
    *,
    context: str,
    timeout: float | None = None,
    deadline: float | None = None,
) -> Operation[list[FlowNode]]:
    """The nodes after ``first``, a first answer as long as the cap
    (:data:`POSTGREST_MAX_ROWS`), each once. A full page without a node not read
    yet ends the reading (a node without an id is told from the others by all its
    fields)."""
    nodes: list[FlowNode] = []
    seen: set[str] = set()
    unseen_rows(first, seen, _node_id)  # their keys
    tied = _tied_at_end(first)
    offset = len(first) - tied
    # Only a first answer of one such group may be followed by a page that brings no
    # node not read yet (the same nodes, in the other order): see below.
    all_tied = offset == 0
    while True:
        response = yield from call(
            state,
            functools.partial(_page, conv_id=conv_id, offset=offset),
            timeout=timeout,
            deadline=deadline,
        )
        with response.decoding():
            page = structure_rows(
                response.json(), FlowNode, context=context, owned=True, lone_object=False
            )
        offset += len(page)
        new, fresh = unseen_rows(page, seen, _node_id)
        nodes += new
        if len(page) < POSTGREST_MAX_ROWS or not (fresh or all_tied):
            return nodes
        all_tied = False  # the next page tells a server ignoring `offset`


def _node_id(node: FlowNode) -> str:
    return node.node_id


def _tied_at_end(nodes: Sequence[FlowNode]) -> int:
    """How many of ``nodes`` at their end share the last one's ``created_at``: NULLs
    too, which sort together and last. None when the rows lack the column (no
    PostgREST ``select=*`` answer does): they tell nothing, and re-reading a whole
    page for them would cost a request."""
    if "created_at" not in nodes[-1].metadata:
        return 0
    last = nodes[-1].metadata["created_at"]
    tied = 0
    for node in reversed(nodes):
        if node.metadata.get("created_at") != last:
            break
        tied += 1
    return tied


def _page(endpoints: Endpoints, *, conv_id: str, offset: int) -> Request:
    return endpoints.flow_nodes(conv_id, offset=offset, limit=POSTGREST_MAX_ROWS)

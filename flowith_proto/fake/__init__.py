"""A fake Flowith: a pure, deterministic model of the edge host and its Supabase project.

Tests and demos use it to run the real client end to end without the real
service. It is sans-I/O like the rest of the core: :class:`FakeFlowith` maps a
request (plus the current time) to a :class:`FakeResponse`, or to a
:class:`FakeStream` for the event-stream endpoints, and a small server
(``flowith_httpx.fake_server``) puts it on a loopback socket. A generation's
behaviour is scripted step by step (:func:`chunk`, :func:`complete`,
:func:`fail`, :func:`close_stream`, :func:`drop`, :func:`row`, ...).

It validates what it receives as the real servers do, so a passing test proves
the wire format. Where the protocol fact sheet says a behaviour is unknown, the
fake makes an assumption; ``docs/fake.md`` lists every one of them in a table.
"""

from flowith_proto.fake.frames import LineEnding, comment_frame, data_frame, heartbeat_frame
from flowith_proto.fake.model import (
    FAKE_JWT_SECRET,
    FAKE_USER_ID,
    ROUTES,
    TABLES,
    TOKEN_EXPIRES_AT,
    Call,
    FakeFlowith,
    Route,
    TableSpec,
)
from flowith_proto.fake.script import (
    Channel,
    Responder,
    Script,
    Step,
    Turn,
    chunk,
    close_stream,
    comment,
    complete,
    default_responder,
    drop,
    fail,
    hang,
    heartbeat,
    other_node,
    pause,
    raw,
    row,
    workflow_complete,
)
from flowith_proto.fake.stream import (
    CloseStream,
    DropStream,
    FakeStream,
    Hang,
    Pause,
    SendBytes,
    StreamItem,
)
from flowith_proto.fake.wire import FakeResponse, RecordedRequest

__all__ = [
    "FAKE_JWT_SECRET",
    "FAKE_USER_ID",
    "ROUTES",
    "TABLES",
    "TOKEN_EXPIRES_AT",
    "Call",
    "Channel",
    "CloseStream",
    "DropStream",
    "FakeFlowith",
    "FakeResponse",
    "FakeStream",
    "Hang",
    "LineEnding",
    "Pause",
    "RecordedRequest",
    "Responder",
    "Route",
    "Script",
    "SendBytes",
    "Step",
    "StreamItem",
    "TableSpec",
    "Turn",
    "chunk",
    "close_stream",
    "comment",
    "comment_frame",
    "complete",
    "data_frame",
    "default_responder",
    "drop",
    "fail",
    "hang",
    "heartbeat",
    "heartbeat_frame",
    "other_node",
    "pause",
    "raw",
    "row",
    "workflow_complete",
]

"""A fake Flowith: a pure, deterministic model of the edge host and its Supabase project.

Tests and demos use it to run the real client end to end without the real
service. It is sans-I/O like the rest of the core: :class:`FakeFlowith` maps a
request (plus the current time) to a :class:`FakeResponse`, or to a
:class:`FakeStream` for the event-stream endpoints, and a small server
(``flowith_httpx.fake_server``) puts it on a loopback socket. A generation's
behaviour is scripted step by step (:func:`chunk`, :func:`complete`,
:func:`fail`, :func:`close_stream`, :func:`drop`, :func:`row`,
:func:`workflow_complete`, ...); image and video generations play the same
scripts. Besides generation it serves every endpoint of the protocol fact
sheet's section 2: the account endpoints of the edge, uploads and the CDN
that serves them, every PostgREST table (seeded with a believable account and
a stranger's rows that row-level security hides), the RPCs, and GoTrue's
user, refresh-token rotation and logout.

It validates what it receives as the real servers do, so a passing test proves
the wire format. Where the protocol fact sheet says a behaviour is unknown, the
fake makes an assumption; ``docs/fake.md`` lists every one of them in a table.
"""

from flowith_proto.fake.catalog import MODELS, TEMPLATES
from flowith_proto.fake.frames import LineEnding, comment_frame, data_frame, heartbeat_frame
from flowith_proto.fake.model import (
    DEFAULT_CDN_URL,
    FAKE_JWT_SECRET,
    FAKE_REFRESH_TOKEN,
    FAKE_SESSION_ID,
    FAKE_USER_ID,
    ROUTES,
    TABLES,
    TOKEN_EXPIRES_AT,
    Call,
    FakeFlowith,
    Route,
    TableSpec,
)
from flowith_proto.fake.multipart import MultipartError, Part, parse_multipart
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
    default_media_responder,
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
from flowith_proto.fake.seed import (
    DELETED_NOTES,
    KYOTO_TRIP,
    OTHER_USER_ID,
    PRIVATE_PLANS,
    PRODUCT_LAUNCH,
    QUARTERLY_REPORT,
    SEED_NODES,
    SEED_PROJECTS,
    TEAM_WIKI,
    THIRD_USER_ID,
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
    "DEFAULT_CDN_URL",
    "DELETED_NOTES",
    "FAKE_JWT_SECRET",
    "FAKE_REFRESH_TOKEN",
    "FAKE_SESSION_ID",
    "FAKE_USER_ID",
    "KYOTO_TRIP",
    "MODELS",
    "OTHER_USER_ID",
    "PRIVATE_PLANS",
    "PRODUCT_LAUNCH",
    "QUARTERLY_REPORT",
    "ROUTES",
    "SEED_NODES",
    "SEED_PROJECTS",
    "TABLES",
    "TEAM_WIKI",
    "TEMPLATES",
    "THIRD_USER_ID",
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
    "MultipartError",
    "Part",
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
    "default_media_responder",
    "default_responder",
    "drop",
    "fail",
    "hang",
    "heartbeat",
    "heartbeat_frame",
    "other_node",
    "parse_multipart",
    "pause",
    "raw",
    "row",
    "workflow_complete",
]

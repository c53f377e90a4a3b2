"""One builder per endpoint: hosts, paths, query order, headers and bodies.

The facts come from protocol.md (sections 1.4 and 2). Where the old client had
a defect (section 7) the builder does the right thing instead, and says so:
no JSON content type on bodiless requests (D26), ``Content-Profile`` on
PostgREST writes (D26), every filter value validated or encoded (D13), the
conversation history in ``messages`` (D6). ``docs/protocol-decisions.md``
lists every such difference.

The builders live in one mixin per host: :mod:`.edge`, :mod:`.postgrest` and
:mod:`.gotrue`; :class:`Endpoints` combines them.
"""

from __future__ import annotations

import attrs

from flowith_proto.auth import Credentials
from flowith_proto.config import FlowithConfig
from flowith_proto.endpoints._core import NODE_TYPE_AI, NODE_TYPE_USER, Position
from flowith_proto.endpoints.edge import EdgeEndpoints, guess_upload_meta, upload_form
from flowith_proto.endpoints.gotrue import AuthEndpoints
from flowith_proto.endpoints.postgrest import RestEndpoints

__all__ = [
    "NODE_TYPE_AI",
    "NODE_TYPE_USER",
    "Endpoints",
    "Position",
    "guess_upload_meta",
    "upload_form",
]


@attrs.frozen
class Endpoints(EdgeEndpoints, RestEndpoints, AuthEndpoints):
    """Builds the requests of one signed-in user.

    Rebuild it (cheap) whenever the credentials change, so a replayed request
    after a token refresh carries the new token.
    """

    config: FlowithConfig
    credentials: Credentials

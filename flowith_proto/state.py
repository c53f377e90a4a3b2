"""What one client knows between calls: where to go, who it is, how long to wait."""

from __future__ import annotations

import attrs

from flowith_proto.auth import Credentials
from flowith_proto.config import FlowithConfig
from flowith_proto.endpoints import Endpoints
from flowith_proto.retry import RetryPolicy

__all__ = ["DEFAULT_TEXT_MODEL", "ClientState"]

#: The model the web app uses when none is chosen.
DEFAULT_TEXT_MODEL = "gpt-4.1-nano"


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


@attrs.define
class ClientState:
    """The mutable state every operation of one client shares.

    Only the credentials change over a client's life (a refresh replaces them);
    operations read :attr:`endpoints` afresh for every request so a replayed
    request carries the current token.
    """

    config: FlowithConfig = attrs.field(factory=FlowithConfig)
    credentials: Credentials = attrs.field(factory=Credentials)
    #: Seconds a generation may take, end to end, unless the call says otherwise.
    result_timeout: float = attrs.field(default=120.0, validator=_positive)
    #: Seconds between two reads of a node's row while falling back to polling.
    poll_interval: float = attrs.field(default=2.0, validator=_positive)
    #: Seconds a generation waits on a stream that says nothing about its node
    #: before it reads the node's row anyway (a missed or misrouted terminal
    #: event is then still found).
    stall_interval: float = attrs.field(default=15.0, validator=_positive)
    default_model: str = DEFAULT_TEXT_MODEL
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(self.config, self.credentials)

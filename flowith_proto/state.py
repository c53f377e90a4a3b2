"""What one client knows between calls: where to go, who it is, how long to wait."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Container, Iterable, Sequence
from typing import TypeVar

import attrs

from flowith_proto.auth import Credentials
from flowith_proto.config import FlowithConfig, check_seconds
from flowith_proto.endpoints import Endpoints
from flowith_proto.errors import JWT, MIN_SECRET_LENGTH
from flowith_proto.retry import RetryPolicy

__all__ = ["DEFAULT_TEXT_MODEL", "ClientState", "ThreadLedger", "excess_cookies"]

#: The most cookies whose values :meth:`ClientState.learn_cookies` keeps, and the
#: most a cookie jar the client owns keeps (see :func:`excess_cookies`).
MAX_COOKIES = 64
#: The most credentials let go of that :meth:`ClientState.retire` keeps hiding.
MAX_FORMER_SECRETS = 32
#: The model the web app uses when none is chosen.
DEFAULT_TEXT_MODEL = "gpt-4.1-nano"


_Cookie = TypeVar("_Cookie")


def excess_cookies(
    cookies: Sequence[_Cookie], name: Callable[[_Cookie], str], recent: Container[str]
) -> list[_Cookie]:
    """The cookies of a jar (``cookies``, in its order) to let go of, so that at most
    :data:`MAX_COOKIES` remain: a server setting new names, or one name on new paths,
    without end would grow it and every request's ``Cookie`` header without bound.
    Those whose ``name`` is not among the ``recent`` names go first; then, while too
    many remain, the first of the name that has the most (one name set on many
    paths does not push out the others)."""
    if len(cookies) <= MAX_COOKIES:
        return []
    excess = [cookie for cookie in cookies if name(cookie) not in recent]
    by_name: dict[str, list[_Cookie]] = {}
    for cookie in cookies:
        if name(cookie) in recent:
            by_name.setdefault(name(cookie), []).append(cookie)
    for _ in range(len(cookies) - len(excess) - MAX_COOKIES):
        excess.append(max(by_name.values(), key=len).pop(0))
    return excess


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    check_seconds(attribute.name, value)


def _retiring(state: ClientState, _attribute: object, new: Credentials) -> Credentials:
    """Replacing the credentials (a refresh, a logout) retires the old ones; not an
    access token, which is masked by its shape (a JWT) wherever it appears."""
    kept = new.secrets
    state.retire(s for s in state.credentials.secrets if s not in kept and not JWT.fullmatch(s))
    return new


def _positive_or_endless(
    _instance: object, attribute: attrs.Attribute[float], value: float
) -> None:
    check_seconds(attribute.name, value, endless=True)


@attrs.define
class ThreadLedger:
    """What the sessions of one client on one conversation share: how many turns
    they began, and which of them is running one. A session takes itself for its
    conversation's only writer (it keeps the thread and the canvas layout in
    memory); the ledger lets it notice the others of its client."""

    #: Turns begun by the client's sessions on the conversation (their user nodes).
    turns_begun: int = 0
    #: The conversation (a session's) whose turn is running, if any.
    writer: object = attrs.field(default=None, eq=False, repr=False)


@attrs.define
class ClientState:
    """The mutable state every operation of one client shares.

    Only the credentials change over a client's life (a refresh replaces them);
    operations read :attr:`endpoints` afresh for every request so a replayed
    request carries the current token.
    """

    config: FlowithConfig = attrs.field(factory=FlowithConfig)
    credentials: Credentials = attrs.field(factory=Credentials, on_setattr=_retiring)
    #: Seconds a generation may take, end to end, unless the call says otherwise.
    result_timeout: float = attrs.field(default=120.0, validator=_positive_or_endless)
    #: Seconds between two reads of a node's row while falling back to polling.
    poll_interval: float = attrs.field(default=2.0, validator=_positive)
    #: Seconds a generation waits on a stream that says nothing about its node
    #: before it reads the node's row anyway (a missed or misrouted terminal
    #: event is then still found).
    stall_interval: float = attrs.field(default=15.0, validator=_positive)
    default_model: str = DEFAULT_TEXT_MODEL
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    #: The value of each cookie the server set, by name (see :meth:`learn_cookies`).
    cookies: dict[str, str] = attrs.field(factory=dict, repr=False)
    #: The names of the cookies the server set lately, newest last, whatever their
    #: values: what a cookie jar the client owns keeps once full (:func:`excess_cookies`).
    cookie_names: dict[str, None] = attrs.field(factory=dict, repr=False)
    #: Credentials the client no longer holds, still hidden (see :meth:`retire`).
    former_secrets: list[str] = attrs.field(factory=list, repr=False)
    #: Unix seconds before which no early refresh is tried again: the last one failed
    #: while the access token was still good (see :func:`flowith_proto.calls.call`).
    early_refresh_after: float = 0.0
    #: The ledger of each conversation a live session of the client is on, by its
    #: id; one goes with the last session holding it.
    threads: weakref.WeakValueDictionary[str, ThreadLedger] = attrs.field(
        factory=weakref.WeakValueDictionary, repr=False, eq=False
    )

    def retire(self, values: Iterable[str]) -> None:
        """Keep hiding ``values`` although the client no longer holds them: a spent or
        signed-out refresh token, one passed to a single call, a cookie's replaced
        value. A server may still echo one (an error quoting the token it refused),
        and it still names the session. The latest :data:`MAX_FORMER_SECRETS` are kept.
        """
        for value in values:
            if len(value) >= MIN_SECRET_LENGTH and value not in self.former_secrets:
                self.former_secrets.append(value)
        del self.former_secrets[:-MAX_FORMER_SECRETS]

    def learn_cookies(self, headers: Iterable[tuple[str, str]]) -> list[str]:
        """Remember the values of the cookies ``headers`` set; return the new ones.

        A transport keeps cookies and sends them back, as a browser does, so they
        are credentials too: they are hidden like the tokens wherever they appear
        (an error body echoing the request, a cassette). The latest value of each
        name is kept, for at most :data:`MAX_COOKIES` names.
        """
        new: list[str] = []
        for name, value in headers:
            if name.lower() != "set-cookie":
                continue
            cookie_name, equals, rest = value.partition("=")
            if not equals:
                continue
            cookie_name = cookie_name.strip()
            self.cookie_names.pop(cookie_name, None)  # re-inserted last: the newest
            self.cookie_names[cookie_name] = None
            if len(self.cookie_names) > MAX_COOKIES:
                del self.cookie_names[next(iter(self.cookie_names))]
            cookie_value = rest.split(";", 1)[0].strip().strip('"')
            if len(cookie_value) < MIN_SECRET_LENGTH:
                continue  # too short to tell from ordinary text: "1", "true"
            if self.cookies.get(cookie_name) == cookie_value:
                continue
            replaced = self.cookies.pop(cookie_name, None)  # re-inserted last: the newest
            if len(self.cookies) >= MAX_COOKIES:
                replaced = self.cookies.pop(next(iter(self.cookies)))
            if replaced is not None:
                self.retire([replaced])
            self.cookies[cookie_name] = cookie_value
            new.append(cookie_value)
        return new

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every string no message, log line or cassette may show: the tokens, the
        public API key, the cookies' values and the credentials let go of."""
        return (
            *self.credentials.secrets,
            self.config.supabase_key,
            *self.cookies.values(),
            *self.former_secrets,
        )

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(self.config, self.credentials)

"""Writing a cassette while a client runs (the format: :mod:`flowith_proto.cassette`)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flowith_proto.cassette import CassetteWriter, Scrubber, redact_jwt, request_record
from flowith_proto.codings import ContentDecodingError
from flowith_proto.effects import Operation
from flowith_proto.errors import ConnectionFailedError, url_secrets
from flowith_proto.hub import ByteStream
from flowith_proto.operation_names import OperationNames
from flowith_proto.request import Request, Response

__all__ = ["PARTIAL_SUFFIX", "Recorder"]

#: Added to a cassette's name for the file a recording is written to until it ends.
PARTIAL_SUFFIX = ".partial"


class Recorder:
    """Records what a client sends and receives, scrubbed of every secret."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        user_id: str,
        access_token: str,
        has_refresh_token: bool,
        edge_url: str,
        supabase_url: str,
        secrets: Iterable[str],
        settings: Mapping[str, float] | None = None,
    ) -> None:
        self.scrubber = Scrubber()
        self.scrubber.learn(secrets)
        self._names = OperationNames(self.scrubber)
        # Written beside the cassette and put in its place only by close(): a session
        # that fails, or a process killed, leaves the cassette there was as it was.
        # (A link is followed: the file it names is the one replaced.)
        self.path = Path(os.path.realpath(path))
        #: Where the recording is written until it is complete: the cassette itself
        #: when it is no regular file (``os.devnull``, a pipe), which is written to,
        #: never replaced.
        self.partial_path = (
            self.path.with_name(self.path.name + PARTIAL_SUFFIX)
            if os.path.isfile(self.path) or not os.path.lexists(self.path)
            else self.path
        )
        # Its folder is made, as a test's first recording into tests/cassettes/ needs.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = CassetteWriter(
            open(self.partial_path, "w", encoding="utf-8"),  # noqa: SIM115 (closed by close())
            user_id=user_id,
            token=redact_jwt(access_token) if access_token.count(".") == 2 else "",
            refresh_token=has_refresh_token,
            edge_url=edge_url,
            supabase_url=supabase_url,
            # A replay runs with them (its polls and retries are the recorded ones);
            # JSON has no infinity: an endless one is null.
            settings={
                name: None if value == math.inf else value
                for name, value in (settings or {}).items()
            },
        )
        self._sent = 0
        #: The requests for new tokens whose answers are still to come (see response()).
        self._grants: set[int] = set()

    def learn(self, secrets: Iterable[str]) -> None:
        self.scrubber.learn(secrets)

    def name(self, operation: Operation[Any]) -> str:
        """The name the values ``operation`` draws are recorded under."""
        return self._names.name(operation)

    def value(self, kind: str, value: Any, operation: str) -> None:
        """A clock reading, wall time, id or jitter the named operation drew."""
        self._writer.record(kind, op=operation, value=value)

    def request(self, request: Request, operation: str) -> int:
        """Record a request the named operation sends ("" for a shared stream)."""
        self.scrubber.learn(url_secrets(request.url), passing=True)  # its answer may quote them
        self._sent += 1
        if request.grants_tokens:
            self._grants.add(self._sent)
        self._writer.record(
            "request", n=self._sent, op=operation, **request_record(request, self.scrubber)
        )
        return self._sent

    def response(self, n: int, response: Response) -> None:
        # First: it learns the credentials it holds. A token grant's answer that is no
        # JSON may hold new tokens anywhere: kept whole, that it is no JSON.
        grant = n in self._grants
        self._grants.discard(n)
        body = self.scrubber.body(response.body, opaque_unless_json=grant)
        self._writer.record(
            "response",
            n=n,
            status=response.status,
            headers=self.scrubber.headers(response.headers),
            body=body,
        )

    def error(self, n: int, error: Exception) -> None:
        status = getattr(error, "status_code", None)  # an answer whose body was undecodable
        self._writer.record(
            "error",
            n=n,
            type=type(error).__name__,
            message=self.scrubber.text(str(error)),
            request_sent=bool(getattr(error, "request_sent", True)),
            **({"status": status} if isinstance(status, int) else {}),
            **({"deadline_passed": True} if getattr(error, "deadline_passed", False) else {}),
        )

    def stream(
        self, n: int, status: int, headers: Sequence[tuple[str, str]], body: ByteStream, now: Any
    ) -> ByteStream:
        """Record a stream's opening; return its body, recording as it is read."""
        self._writer.record("stream", n=n, status=status, headers=self.scrubber.headers(headers))
        return _RecordingStream(self, n, body, now)

    def chunk(self, n: int, data: bytes, elapsed: float, *, look: bool = False) -> None:
        stored = self.scrubber.chunk(data)
        self._writer.record(
            "chunk", n=n, t=round(elapsed, 6), after=self._sent, data=stored, **_looked(look)
        )

    def read_timeout(self, n: int) -> None:
        self._writer.record("read_timeout", n=n, after=self._sent)

    def end(
        self,
        n: int,
        reason: str,
        *,
        look: bool = False,
        failure: ConnectionFailedError | None = None,
    ) -> None:
        """Record stream ``n``'s end; a ``failure`` that broke it is recorded by its
        message, and by its fault where its body turned out undecodable (see
        :func:`~flowith_proto.codings.broken_stream`), so a replay raises the same."""
        said: dict[str, str] = {}
        if failure is not None:
            fault = failure.__cause__
            if isinstance(fault, ContentDecodingError):
                said["fault"] = self.scrubber.text(str(fault))
            else:
                said["error"] = self.scrubber.text(str(failure))
        self._writer.record("end", n=n, reason=reason, **said, **_looked(look))

    def close(self, *, complete: bool = True) -> None:
        """End the recording, and make it the cassette if the session was
        ``complete``; if not, it stays at :attr:`partial_path`."""
        self._writer.close()
        if complete and self.partial_path != self.path:
            os.replace(self.partial_path, self.path)


def _looked(look: bool) -> dict[str, bool]:
    """The mark of a record a look took (a read whose deadline had passed, which
    takes only what has already arrived): a replayed look takes such a record,
    and finds nothing where the recorded one found nothing, unrecorded."""
    return {"look": True} if look else {}


class _RecordingStream:
    """A stream body that records every chunk, timeout and ending."""

    def __init__(self, recorder: Recorder, n: int, body: ByteStream, now: Any) -> None:
        self._recorder = recorder
        self._n = n
        self._body = body
        self._now = now
        self._opened = now()
        self._ended = False
        self._held = b""

    async def read(self, deadline: float | None) -> bytes | None:
        look = deadline is not None and deadline <= self._now()
        try:
            data = await self._body.read(deadline)
        except ConnectionFailedError as exc:
            self._finish("broken", look=look, failure=exc)
            raise
        if data is None:
            if not look:  # a look that found nothing changed nothing
                self._recorder.read_timeout(self._n)
        elif not data:
            self._finish("eof", look=look)
        else:
            # The bytes that may begin a secret the next chunk completes are
            # recorded with that chunk, so the scrubber sees the secret whole.
            data_and_held = self._held + data
            keep = self._recorder.scrubber.held_back(data_and_held)
            cut = len(data_and_held) - keep
            self._held = data_and_held[cut:]
            if cut:
                elapsed = self._now() - self._opened
                self._recorder.chunk(self._n, data_and_held[:cut], elapsed, look=look)
        return data

    def _finish(
        self, reason: str, *, look: bool = False, failure: ConnectionFailedError | None = None
    ) -> None:
        if not self._ended:
            self._ended = True
            if self._held:
                self._recorder.chunk(self._n, self._held, self._now() - self._opened, look=look)
                self._held = b""
            self._recorder.end(self._n, reason, look=look, failure=failure)

    async def aclose(self) -> None:
        self._finish("closed")
        await self._body.aclose()

"""The httpx transport under trio in guest mode (``trio.lowlevel.start_guest_run``), as a
Qt or asyncio application hosts trio: the host's asyncio loop runs in the same thread,
and only sniffio tells which library runs the code."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from flowith_httpx import FlowithClient
from flowith_httpx.fake_server import FakeFlowithServer
from flowith_proto.errors import ClientStateError
from flowith_proto.fake import FakeFlowith, chunk, complete, pause

trio = pytest.importorskip("trio")


def run_as_guest(main: Any) -> Any:
    """Run ``main`` in trio as the guest of an asyncio loop; return its result."""

    async def host() -> Any:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        trio.lowlevel.start_guest_run(
            main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done.set_result,
            host_uses_signal_set_wakeup_fd=True,
        )
        return (await done).unwrap()

    return asyncio.run(host())


def test_streams_flow_and_the_loop_is_known_in_trio_guest_mode(tmp_path: Path) -> None:
    """Each stream's pump was started as an asyncio task of the host (asyncio had a
    running loop), where anyio's trio scopes failed: every stream broke ("must be
    called from async context"), a generation's text came only from its row, and a
    call from the host's asyncio raised that bare RuntimeError, not the other-loop error."""

    async def main() -> tuple[list[str], bytes, int, str]:
        fake = FakeFlowith(heartbeat_interval=0.2)
        fake.script(chunk("Hel"), pause(0.2), chunk("lo"), complete())
        async with FakeFlowithServer(fake) as server:
            client = FlowithClient(fake.token, edge_url=server.url, supabase_url=server.url)
            async with client:
                with trio.fail_after(20):
                    deltas = [step.text_delta async for step in client.generate_stream("hi")]
                    url = (await client.upload_file(data=b"x" * 1000, filename="f.bin")).url
                    saved = await client.download(url, tmp_path)
                    listener = client.stream_user_sse(timeout=0.5)
                    async with contextlib.aclosing(listener) as frames:
                        heard = len([frame async for frame in frames])
                    # The host's asyncio calling the client trio's run owns.
                    host_call = asyncio.ensure_future(client.get_credits())
                    while not host_call.done():
                        await trio.sleep(0.01)
                    error = host_call.exception()
        return deltas, saved.read_bytes(), heard, type(error).__name__ + f": {error}"

    deltas, saved, heard, error = run_as_guest(main)
    assert deltas == ["Hel", "lo", ""]  # live, as they came
    assert saved == b"x" * 1000
    assert heard >= 2  # heartbeats every 0.2 s
    assert error.startswith(f"{ClientStateError.__name__}: this client belongs to the event loop")

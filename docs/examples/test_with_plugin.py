"""An example test of an application that uses the client, with the pytest
plugin's fixtures (see docs/testing.md). The project's suite runs this file."""

from __future__ import annotations

import pytest

from flowith_proto.abc import FlowithClientBase
from flowith_proto.fake import FakeFlowith, chunk, complete

pytestmark = pytest.mark.anyio


async def summarize(client: FlowithClientBase, text: str) -> str:
    """The application code under test."""
    reply = await client.generate(f"Summarize: {text}")
    return reply.text.upper()


@pytest.mark.parametrize("flowith_transport", ["httpx", "aiohttp"], indirect=True)
async def test_summarize(flowith_fake: FakeFlowith, flowith_client: FlowithClientBase) -> None:
    flowith_fake.script(chunk("short "), chunk("summary"), complete())
    assert await summarize(flowith_client, "a long text") == "SHORT SUMMARY"
    sent = flowith_fake.requests_to("POST", "/completion/async")[0].json()
    assert sent["messages"][-1]["content"] == "Summarize: a long text"

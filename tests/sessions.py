"""Client sessions shared by the cassette tests and the re-recording script."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowith_httpx import FlowithClient
from flowith_httpx.fake_server import FakeFlowithServer
from flowith_proto.abc import FlowithClientBase
from flowith_proto.fake import FakeFlowith

CASSETTES = Path(__file__).parent / "cassettes"


async def broad_session(client: FlowithClientBase) -> list[Any]:
    """A session touching every kind of call: generations (plain, streamed,
    multi-turn, image), listings, account reads, an upload, canvas, renames."""
    out: list[Any] = []
    out.append(await client.generate("What is the capital of Poland?"))
    out.append([step async for step in client.generate_stream("Tell me a story")])
    conversation = client.start_conversation(model="deepseek-r1")
    out.append(await conversation.send("My name is Alice."))
    out.append([step async for step in conversation.send_stream("What is my name?")])
    assert conversation.conv_id is not None
    out.append(await client.generate_image("a red fox"))
    out.append(await client.list_conversations(limit=5))
    out.append(await client.get_conversation(conversation.conv_id))
    out.append(await client.rename_conversation(conversation.conv_id, "Alice's chat"))
    out.append(await client.get_flow_nodes(conversation.conv_id))
    out.append(await client.get_credits())
    out.append(await client.get_credit_type())
    out.append(await client.list_models())
    out.append(await client.list_templates())
    out.append(await client.get_user_profile())
    out.append(await client.upload_file(data=b"hello cassette", filename="note.txt"))
    out.append(await client.get_daily_rewards_status())
    out.append(await client.get_auth_user())
    out.append(await client.generate_title([{"role": "user", "content": "Trip to Kyoto"}]))
    await conversation.delete()
    return out


async def record(path: Path, fake: FakeFlowith | None = None) -> list[Any]:
    """Run :func:`broad_session` against a fresh fake on loopback, recording it."""
    fake = fake or FakeFlowith()
    async with FakeFlowithServer(fake) as server:
        client = FlowithClient(
            fake.token,
            refresh_token=fake.refresh_token,
            edge_url=server.url,
            supabase_url=server.url,
            poll_interval=0.05,
            record_to=path,
        )
        async with client:
            return await broad_session(client)

"""Client sessions shared by the cassette tests and the re-recording script."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from flowith_httpx import FlowithClient
from flowith_httpx.fake_server import FakeFlowithServer
from flowith_proto.abc import FlowithClientBase
from flowith_proto.fake import KYOTO_TRIP, PRODUCT_LAUNCH, QUARTERLY_REPORT, FakeFlowith

CASSETTES = Path(__file__).parent / "cassettes"


async def broad_session(client: FlowithClientBase) -> list[Any]:
    """A session that calls every public method of the client and of a
    conversation session once (the cassette tests replay it elsewhere)."""
    out: list[Any] = []
    out.append(await client.generate("What is the capital of Poland?"))
    out.append([step async for step in client.generate_stream("Tell me a story")])
    conversation = client.start_conversation(model="deepseek-r1")
    out.append(await conversation.send("My name is Alice."))
    out.append([step async for step in conversation.send_stream("What is my name?")])
    assert conversation.conv_id is not None
    out.append(await conversation.generate_image("a red fox"))
    out.append(await conversation.generate_video("the fox runs"))
    image = await client.generate_image("a blue whale")
    out.append(image)
    video = await client.generate_video("the whale dives")
    out.append(video)
    out.append(await client.generate_title([{"role": "user", "content": "Trip to Kyoto"}]))
    out.append(await client.list_conversations(limit=5))
    out.append([c async for c in client.iter_conversations(page_size=2)])
    out.append(await client.get_conversation(conversation.conv_id))
    out.append(await client.rename_conversation(conversation.conv_id, "Alice's chat"))
    out.append(await client.get_flow_nodes(conversation.conv_id))
    out.append(await client.get_cooperators(KYOTO_TRIP))
    out.append(await client.list_cooperate_rows())
    out.append(await client.get_conv_novel_editor(QUARTERLY_REPORT))
    out.append(await client.list_discuss(PRODUCT_LAUNCH))
    out.append(await client.get_oracle_stream(PRODUCT_LAUNCH))
    out.append(await client.get_credits())
    out.append(await client.get_credit_type())
    out.append(await client.get_auth_user())
    out.append(client.get_oauth_url())
    out.append(await client.get_user_profile())
    out.append(await client.update_user_profile(language="pl"))
    record = await client.upload_file(data=b"hello cassette", filename="note.txt")
    out.append(record)
    out.append(await client.list_user_upload_records())
    out.append(await client.list_subscription_user_own(at_time=1779127457.0))
    out.append(await client.list_public_notices())
    out.append(await client.list_flow_projects())
    out.append(await client.get_migration_info())
    out.append(await client.list_models())
    out.append(await client.list_templates())
    out.append(await client.get_discord_invite())
    out.append(await client.get_featurebase_status())
    out.append(await client.get_daily_rewards_status())
    out.append(await client.claim_daily_reward())
    out.append(await client.check_campaign("kling-video/v2.6/pro/text-to-video"))
    out.append(await client.check_banana_campaign())
    out.append(await client.check_new_version_access())
    out.append(await client.get_enterprise_dashboard())
    out.append(await client.upsert_online_session({"p_session_id": "cassette-session"}))
    out.append(await client.get_online_count())
    out.append(await client.remove_online_session("cassette-session"))
    out.append([e async for e in client.stream_user_stream(timeout=0.3)])
    out.append([e async for e in client.stream_user_sse(timeout=0.3)])
    with tempfile.TemporaryDirectory() as folder:
        assert image.image is not None
        saved = [await image.image.save(folder), await video.save(folder)]
        saved.append(await client.download(record.url, folder))
        out.append([path.read_bytes() for path in saved])
    out.append(await client.refresh_access_token())
    out.append(client.get_refresh_token() != "")
    await conversation.delete()
    await client.delete_conversation(image.conv_id)
    await client.logout()
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

"""Fixes of the old client's defects (protocol.md section 7) that no other test
would notice undone: each test names its defect."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import jwt
import pytest
import respx

from flowith_httpx import FlowithClient, ResponseDecodeError, ValidationError

pytestmark = pytest.mark.anyio

EDGE = "https://edge.test"
SB = "https://sb.test"
USER = "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def client(sub: str = USER) -> FlowithClient:
    token = jwt.encode({"sub": sub, "exp": 4102444800}, "k" * 32, algorithm="HS256")
    return FlowithClient(token, edge_url=EDGE, supabase_url=SB, max_retries=0)


async def test_d13_a_user_id_from_the_token_is_validated_before_any_filter() -> None:
    with respx.mock() as router:  # any request at all would fail as unmatched
        async with client(sub="x,user_id.neq.0") as flowith:
            with pytest.raises(ValidationError, match="user_id"):
                await flowith.list_conversations()
    assert router.calls.call_count == 0


async def test_d21_a_reward_claim_answered_with_no_body_is_an_empty_object() -> None:
    with respx.mock() as router:
        router.post(url__startswith=f"{EDGE}/").respond(204)
        async with client() as flowith:
            assert await flowith.claim_daily_reward() == {}


@pytest.mark.parametrize("body", ['"pro"', "[]", '{"credit_type": 3}', "<html>oops</html>"])
async def test_d22_a_credit_type_answer_of_the_wrong_shape_is_an_error(body: str) -> None:
    with respx.mock() as router:
        router.get(url__startswith=f"{EDGE}/").respond(200, text=body)
        async with client() as flowith:
            with pytest.raises(ResponseDecodeError):
                await flowith.get_credit_type()
            with pytest.raises(ResponseDecodeError):
                await flowith.get_discord_invite()


def test_d25_importing_configures_no_logging_and_no_other_transport() -> None:
    program = textwrap.dedent(
        """
        import logging, sys
        import flowith_proto
        assert "httpx" not in sys.modules and "aiohttp" not in sys.modules, "core imports I/O"
        import flowith_httpx
        assert "aiohttp" not in sys.modules, "the httpx transport imports aiohttp"
        import flowith_aiohttp
        ours = logging.getLogger("flowith")
        assert ours.level == logging.NOTSET, ours.level
        assert all(isinstance(h, logging.NullHandler) for h in ours.handlers), ours.handlers
        assert logging.getLogger().handlers == [], logging.getLogger().handlers
        assert logging.getLogger().level == logging.WARNING
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr

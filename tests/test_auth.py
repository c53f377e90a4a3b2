"""Token claims and credentials (protocol.md 1.3)."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from flowith_proto.auth import Credentials, TokenClaims, read_claims
from flowith_proto.config import DEFAULT_EDGE_URL, EdgeAuth, FlowithConfig
from flowith_proto.errors import ValidationError

USER = "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"


def make_token(**claims: object) -> str:
    return jwt.encode(dict(claims), "a-test-signing-key-that-is-32-bytes-long", algorithm="HS256")


def test_claims_are_read_without_verifying_the_signature() -> None:
    token = make_token(sub=USER, exp=1779130000, role="authenticated")
    assert read_claims(token) == TokenClaims(sub=USER, exp=1779130000)


def test_an_expired_token_still_yields_its_claims() -> None:
    assert read_claims(make_token(sub=USER, exp=1)).sub == USER


@pytest.mark.parametrize("token", ["", "opaque", "a.b", "a.b.c", "x.eyJzdWIiOjF9.y"])
def test_unreadable_tokens_give_empty_claims(token: str) -> None:
    assert read_claims(token) == TokenClaims()


@pytest.mark.parametrize(
    "damage",
    [
        lambda token: token.rsplit(".", 1)[0] + ".!!!",  # a signature that is not base64url
        lambda token: token.rsplit(".", 1)[0] + ".",  # none at all
        lambda token: "eyJhbGciOiJIUzI1NiIsImtpZCI6NH0." + token.split(".", 1)[1],  # kid: 4
    ],
)
def test_the_payload_is_read_whatever_the_header_and_signature(damage: Any) -> None:
    # jwt.decode() read them too, and lost the user: streams and filters then failed.
    token = damage(make_token(sub=USER, exp=1779130000))
    assert read_claims(token) == TokenClaims(sub=USER, exp=1779130000)


@pytest.mark.parametrize("payload", ["WzFd", "bnVsbA", "e30", "!!!!"])  # [1], null, {}, junk
def test_a_payload_that_is_no_claims_gives_empty_claims(payload: str) -> None:
    assert read_claims(f"eyJhbGciOiJIUzI1NiJ9.{payload}.sig") == TokenClaims()


def test_non_string_sub_and_bool_exp_are_ignored() -> None:
    assert read_claims(make_token(sub=42, exp=True)) == TokenClaims()


def test_credentials_take_user_id_and_expiry_from_the_token() -> None:
    creds = Credentials.from_tokens(make_token(sub=USER, exp=2000), refresh_token="r" * 12)
    assert creds.user_id == USER
    assert creds.expires_at == 2000.0


def test_explicit_user_id_wins() -> None:
    other = "00000000-0000-4000-8000-000000000000"
    assert Credentials.from_tokens(make_token(sub=USER), user_id=other).user_id == other


def test_an_explicit_user_id_outlives_a_refresh() -> None:
    """It was replaced by the new token's sub at the first refresh, though the
    docs say the user id is the token's sub unless given."""
    other = "00000000-0000-4000-8000-000000000000"
    given = Credentials.from_tokens(make_token(sub=USER), user_id=other)
    assert given.with_tokens(make_token(sub=USER)).user_id == other
    read = Credentials.from_tokens(make_token(sub=USER))
    assert read.with_tokens(make_token(sub=other)).user_id == other  # read again


def test_needs_refresh_five_minutes_early_and_only_with_a_refresh_token() -> None:
    creds = Credentials.from_tokens(make_token(sub=USER, exp=10_000), refresh_token="rt-0123456")
    assert not creds.needs_refresh(10_000 - 301)
    assert creds.needs_refresh(10_000 - 299)
    assert not Credentials.from_tokens(make_token(sub=USER, exp=10_000)).needs_refresh(10_000)


def test_a_short_lived_token_is_refreshed_a_quarter_of_its_life_early() -> None:
    """A 120-second token was refreshed before every call: five minutes early is
    before it was even issued."""
    short = make_token(sub=USER, exp=10_000, iat=10_000 - 120)
    creds = Credentials.from_tokens(short, refresh_token="rt-0123456")
    assert creds.issued_at == 10_000 - 120
    assert not creds.needs_refresh(10_000 - 120)  # just issued
    assert not creds.needs_refresh(10_000 - 31)
    assert creds.needs_refresh(10_000 - 29)
    # An hour's token keeps the five minutes; one without iat too.
    hour = make_token(sub=USER, exp=10_000, iat=10_000 - 3600)
    assert Credentials.from_tokens(hour, refresh_token="rt-0123456").needs_refresh(10_000 - 299)
    refreshed = creds.with_tokens(make_token(sub=USER, exp=20_000, iat=20_000 - 120))
    assert not refreshed.needs_refresh(20_000 - 31)


def test_with_tokens_rotates_and_rereads_claims() -> None:
    creds = Credentials.from_tokens(make_token(sub=USER, exp=1), refresh_token="old-refresh")
    renewed = creds.with_tokens(make_token(sub=USER, exp=5000), "new-refresh")
    assert (renewed.refresh_token, renewed.expires_at, renewed.user_id) == (
        "new-refresh",
        5000.0,
        USER,
    )


def test_credentials_repr_hides_tokens() -> None:
    token = make_token(sub=USER)
    creds = Credentials.from_tokens(token, refresh_token="refresh-secret-value")
    text = repr(creds)
    assert token not in text
    assert "refresh-secret-value" not in text
    assert USER in text
    assert set(creds.secrets) == {token, "refresh-secret-value"}


def test_config_defaults_and_overrides() -> None:
    config = FlowithConfig()
    assert config.edge_url == DEFAULT_EDGE_URL
    assert config.rest_url == "https://aibdxsebwhalbnugsqel.supabase.co/rest/v1"
    assert config.auth_url == "https://aibdxsebwhalbnugsqel.supabase.co/auth/v1"
    assert config.edge_auth is EdgeAuth.BARE
    custom = FlowithConfig(edge_url="http://127.0.0.1:9000/", edge_auth="bearer")
    assert custom.edge_url == "http://127.0.0.1:9000"
    assert custom.edge_auth is EdgeAuth.BEARER
    assert config.supabase_key not in repr(config)


def test_config_rejects_a_non_url() -> None:
    with pytest.raises(ValidationError, match="edge_url"):
        FlowithConfig(edge_url="edge.flowith.io")


def test_an_unset_refresh_token_is_no_token() -> None:
    """``refresh_token=os.environ.get("FLOWITH_REFRESH_TOKEN")`` crashed when unset."""
    assert Credentials.from_tokens("", refresh_token=None).refresh_token == ""
    assert Credentials(access_token=" tok\n").access_token == "tok"

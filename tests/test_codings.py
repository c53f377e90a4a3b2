"""``flowith_proto.codings``: a body's Content-Encoding undone, chunk by chunk, or a
typed error; never part of a body handed on as if it were all."""

from __future__ import annotations

import gzip
import os
import tracemalloc
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowith_proto.codings import (
    ACCEPT_ENCODING,
    MAX_ANSWER_SIZE,
    MAX_CODINGS,
    PIECE_SIZE,
    ContentDecoder,
    ContentDecodingError,
    WholeAnswer,
    content_decoder,
)
from flowith_proto.errors import ResponseDecodeError

PAYLOAD = os.urandom(3000) + b"text " * 500


def _raw_deflate(data: bytes) -> bytes:
    deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return deflate.compress(data) + deflate.flush()


def _fed(decoder: ContentDecoder | None, data: bytes, size: int) -> bytes:
    """``data`` fed ``size`` bytes at a time, each piece read as soon as it can be."""
    assert decoder is not None
    pieces: list[bytes] = []
    for start in range(0, len(data), size):
        decoder.feed(data[start : start + size])
        pieces += iter(decoder.read, b"")
    decoder.end()
    pieces += iter(decoder.read, b"")
    assert all(0 < len(piece) <= PIECE_SIZE for piece in pieces)
    return b"".join(pieces)


@pytest.mark.parametrize("size", [1, 2, 7, 4096, 1 << 20])
@pytest.mark.parametrize(
    ("header", "encoded"),
    [
        (["gzip"], gzip.compress(PAYLOAD)),
        (["x-gzip"], gzip.compress(PAYLOAD)),
        (["deflate"], zlib.compress(PAYLOAD)),
        (["deflate"], _raw_deflate(PAYLOAD)),  # raw, as some servers send it
        (["gzip, deflate"], zlib.compress(gzip.compress(PAYLOAD))),
        (["gzip", "deflate"], zlib.compress(gzip.compress(PAYLOAD))),  # a line each
        ([" GZIP ", "identity, utf-8"], gzip.compress(PAYLOAD)),
        (["gzip, gzip"], gzip.compress(gzip.compress(PAYLOAD))),
    ],
    ids=["gzip", "x-gzip", "zlib", "raw-deflate", "stacked", "on-lines", "passed-over", "twice"],
)
def test_codings_are_undone_last_applied_first_in_any_chunking(
    header: list[str], encoded: bytes, size: int
) -> None:
    assert _fed(content_decoder(header), encoded, size) == PAYLOAD


@pytest.mark.parametrize("size", [1, 2, 5, 4096])
def test_every_member_of_a_gzip_body_is_decoded(size: int) -> None:
    # httpx kept the first member only: the rest of the body was lost, silently.
    members = gzip.compress(b"first, ") + gzip.compress(b"") + gzip.compress(b"then the rest")
    assert _fed(content_decoder(["gzip"]), members, size) == b"first, then the rest"


@pytest.mark.parametrize("size", [1, 2, 4096])
@pytest.mark.parametrize("after", [b"\x00", b"\x00" * 8, b"\x1f", b"\r\n", b"junk after it"])
def test_bytes_after_the_last_member_are_passed_over(after: bytes, size: int) -> None:
    # aiohttp refused two bytes or more after a gzip stream; httpx and browsers pass
    # over them (zero padding, a stray line break).
    assert _fed(content_decoder(["gzip"]), gzip.compress(PAYLOAD) + after, size) == PAYLOAD
    assert _fed(content_decoder(["deflate"]), zlib.compress(PAYLOAD) + after, size) == PAYLOAD


@given(data=st.data())
def test_a_body_cut_short_is_an_error_never_part_of_a_body(data: st.DataObject) -> None:
    # Both transports handed on what a gzip stream cut short inside a complete
    # framing held, as if it were the whole body.
    coding = data.draw(st.sampled_from(["gzip", "deflate", "raw-deflate"]))
    encode: dict[str, Callable[[bytes], bytes]] = {
        "gzip": gzip.compress,
        "deflate": zlib.compress,
        "raw-deflate": _raw_deflate,
    }
    encoded = encode[coding](PAYLOAD)
    cut = data.draw(st.integers(1, len(encoded) - 1))
    size = data.draw(st.sampled_from([1, 3, 1000, len(encoded)]))
    header = ["deflate" if coding == "raw-deflate" else coding]
    with pytest.raises(ContentDecodingError, match=r"cut short|not (gzip|deflate) data"):
        _fed(content_decoder(header), encoded[:cut], size)


def test_a_body_that_is_not_what_its_coding_says_is_an_error() -> None:
    with pytest.raises(ContentDecodingError, match="it is not gzip data, as its Content-Enc"):
        _fed(content_decoder(["gzip"]), b"this is no gzip stream at all", 4)
    decoder = content_decoder(["deflate"])
    assert decoder is not None
    decoder.feed(b"\x78")
    assert decoder.read() == b""  # half a zlib header: nothing told yet
    decoder.feed(b"\x9c this is no deflate stream")
    with pytest.raises(ContentDecodingError, match="it is not deflate data"):
        decoder.read()
    with pytest.raises(ContentDecodingError, match="cut short"):
        _fed(content_decoder(["deflate"]), b"\x78", 1)  # one byte: never a whole stream


def test_a_second_member_that_is_corrupt_is_an_error() -> None:
    broken = gzip.compress(b"whole") + b"\x1f\x8b this is no member"
    with pytest.raises(ContentDecodingError, match="not gzip data"):
        _fed(content_decoder(["gzip"]), broken, 3)


@pytest.mark.parametrize("header", [["br"], ["zstd"], ["br, gzip"], ["gzip", "compress"]])
def test_a_coding_it_does_not_undo_is_refused_once_a_body_comes(header: list[str]) -> None:
    decoder = content_decoder(header)
    assert decoder is not None
    assert _fed(decoder, b"", 1) == b""  # no body (a 204): nothing to refuse
    with pytest.raises(ContentDecodingError, match="which this client does not decode"):
        decoder.feed(b"x")


def test_a_body_stacking_more_codings_than_the_bound_is_refused_once_it_comes() -> None:
    # Each coding was a layer read by a call of its own: a header naming gzip a
    # thousand times (one 6 KB line) let a bare RecursionError out of every transport.
    body = b"[]"
    for _ in range(MAX_CODINGS):
        body = gzip.compress(body)
    assert _fed(content_decoder(["gzip"] * MAX_CODINGS), body, 5) == b"[]"
    assert _fed(content_decoder(["identity"] * 1000 + ["gzip"]), gzip.compress(b"[]"), 5) == b"[]"
    for count in (MAX_CODINGS + 1, 1000):
        decoder = content_decoder([", ".join(["gzip"] * count)])
        assert decoder is not None
        assert _fed(decoder, b"", 1) == b""
        with pytest.raises(ContentDecodingError) as refused:
            decoder.feed(gzip.compress(body))
        assert str(refused.value) == (
            f"it names {count} codings, more than the 5 this client undoes on one body"
        )


@pytest.mark.parametrize("header", [[], [""], ["identity"], ["utf-8", "none"], [" , "]])
def test_nothing_to_undo_needs_no_decoder(header: list[str]) -> None:
    # Codings nobody knows are passed over, as httpx passes them over.
    assert content_decoder(header) is None


@pytest.mark.parametrize("header", [["gzip"], ["deflate"], ["gzip, deflate"]])
def test_an_empty_body_needs_no_decoding(header: list[str]) -> None:
    assert _fed(content_decoder(header), b"", 1) == b""  # a HEAD, a 204, a 304


def test_what_is_asked_for_is_what_is_undone() -> None:
    asked = [coding.strip() for coding in ACCEPT_ENCODING.split(",")]
    for coding in asked:
        assert content_decoder([coding]) is not None
    encoders: dict[str, Callable[[bytes], bytes]] = {
        "gzip": gzip.compress,
        "deflate": zlib.compress,
    }
    assert all(_fed(content_decoder([c]), encoders[c](b"x"), 1) == b"x" for c in asked)


def test_a_body_that_inflates_hugely_comes_a_piece_at_a_time() -> None:
    # aiohttp's read of the connection, inflated whole: a 512 MiB body of zeros,
    # half a megabyte on the wire, was one chunk in memory.
    squeeze = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    bomb = b"".join(squeeze.compress(bytes(1 << 20)) for _ in range(64)) + squeeze.flush()
    decoder = content_decoder(["gzip"])
    assert decoder is not None
    decoder.feed(bomb)  # all of it at once, as one read of the connection may hold it
    sizes = [len(piece) for piece in iter(decoder.read, b"")]
    decoder.end()
    assert decoder.read() == b""
    assert max(sizes) == PIECE_SIZE
    assert sum(sizes) == 64 << 20


@pytest.mark.parametrize("codings", ["gzip", "deflate", "gzip, gzip"])
def test_what_decodes_before_a_fault_is_read_before_its_error(codings: str) -> None:
    # zlib drops what a call made when it fails: the events before a fault, come in
    # the same read of the connection, were lost.
    events = b"".join(b'data: {"n": %d}\n\n' % n for n in range(2000))
    wbits = zlib.MAX_WBITS | 16 if codings.startswith("gzip") else zlib.MAX_WBITS
    squeeze = zlib.compressobj(6, zlib.DEFLATED, wbits)
    body = squeeze.compress(events) + squeeze.flush(zlib.Z_SYNC_FLUSH) + b"\xff\xff no block"
    if codings == "gzip, gzip":
        body = gzip.compress(body)
    decoder = content_decoder([codings])
    assert decoder is not None
    decoder.feed(body)
    decoded: list[bytes] = []
    with pytest.raises(ContentDecodingError, match=r"not (gzip|deflate) data"):
        decoded += iter(decoder.read, b"")
    assert b"".join(decoded) == events
    with pytest.raises(ContentDecodingError):  # and again, whoever reads on
        decoder.read()


def _gathered(whole: WholeAnswer, body: bytes, size: int) -> bytes:
    for start in range(0, len(body), size):
        whole.feed(body[start : start + size])
    return whole.content()


@pytest.mark.parametrize("size", [1, 1000, 1 << 20])
@pytest.mark.parametrize("header", [[], ["gzip"], ["deflate, gzip"]])
def test_an_answer_read_whole_is_gathered_and_decoded_in_any_chunking(
    header: list[str], size: int
) -> None:
    encoded = PAYLOAD
    for coding in header[0].split(", ") if header else ():
        encoded = gzip.compress(encoded) if coding == "gzip" else zlib.compress(encoded)
    whole = WholeAnswer(content_decoder(header), 200, "GET /user/credits")
    assert _gathered(whole, encoded, size) == PAYLOAD


def test_an_answer_read_whole_that_cannot_be_decoded_names_its_status_and_endpoint() -> None:
    whole = WholeAnswer(content_decoder(["gzip"]), 503, "GET /user/credits")
    with pytest.raises(ResponseDecodeError) as refused:
        _gathered(whole, gzip.compress(PAYLOAD)[:-5], 4096)
    assert str(refused.value).startswith(
        "HTTP 503 from GET /user/credits: its body could not be decoded: it ended inside"
    )
    assert (refused.value.status_code, refused.value.endpoint) == (503, "GET /user/credits")


@pytest.mark.parametrize("header", [[], ["gzip"]], ids=["as-it-came", "decoded"])
def test_an_answer_read_whole_is_held_up_to_its_bound_and_no_further(header: list[str]) -> None:
    body = bytes(1000)
    encoded = gzip.compress(body) if header else body
    at_most = WholeAnswer(content_decoder(header), 200, "GET /x", limit=1000)
    assert _gathered(at_most, encoded, 7) == body
    over = WholeAnswer(content_decoder(header), 200, "GET /x", limit=999)
    with pytest.raises(ResponseDecodeError) as refused:
        _gathered(over, encoded, 7)
    assert str(refused.value) == (
        "HTTP 200 from GET /x: its body could not be decoded: it is larger than the 999 "
        "bytes this client reads of an answer"
    )


def test_an_answer_that_inflates_past_the_bound_is_refused_while_it_inflates() -> None:
    # A gzip bomb: 1 MiB on the wire would inflate to 1 GiB, read whole. It is
    # refused once the bound is passed, holding no more than the bound.
    squeeze = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(1 << 20)
    whole = WholeAnswer(content_decoder(["gzip"]), 200, "GET /x")
    fed = 0

    def feed_a_gibibyte() -> None:
        nonlocal fed
        for _ in range(1024):
            whole.feed(squeeze.compress(zeros))
            fed += 1

    tracemalloc.start()
    try:
        with pytest.raises(ResponseDecodeError, match="larger than the 67,108,864 bytes"):
            feed_a_gibibyte()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert MAX_ANSWER_SIZE == 64 << 20
    assert fed <= 65
    assert peak < MAX_ANSWER_SIZE + (2 << 20)

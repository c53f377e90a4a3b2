"""Download names stay inside the target folder whatever the URL or name (D17)."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowith_proto.config import FlowithConfig
from flowith_proto.errors import ValidationError
from flowith_proto.files import download_request, safe_filename, target_inside


@pytest.mark.parametrize(
    ("url", "filename", "expected"),
    [
        ("https://cdn/f/abc/cat.png", None, "cat.png"),
        ("https://cdn/f/abc/cat.png?sig=1#frag", None, "cat.png"),
        ("https://cdn/f/abc/", None, "image.jpg"),
        ("https://cdn/f/abc/..", None, "image.jpg"),
        ("https://cdn/f/%2E%2E", None, "image.jpg"),
        ("https://cdn/f/a%2F..%2F..%2Fetc%2Fpasswd", None, "passwd"),
        ("https://cdn/f/a%5C..%5Cwin.ini", None, "win.ini"),
        ("https://cdn/f/.hidden", None, "hidden"),
        ("https://cdn/f/x.png", "../../evil.png", "evil.png"),
        ("https://cdn/f/x.png", "/etc/passwd", "passwd"),
        ("https://cdn/f/x.png", "C:\\Windows\\evil.dll", "evil.dll"),
        ("https://cdn/f/x.png", "con.txt", "_con.txt"),
        ("https://cdn/f/x.png", "COM\u00b9.txt", "_COM\u00b9.txt"),
        ("https://cdn/f/x.png", "lpt\u00b3", "_lpt\u00b3"),
        ("https://cdn/f/x.png", "CONIN$", "_CONIN$"),
        ("https://cdn/f/x.png", "conout$.log", "_conout$.log"),
        ("https://cdn/f/x.png", "COM10.txt", "COM10.txt"),  # reserved: COM0-9 only
        ("https://cdn/f/x.png", "my photo.png", "my photo.png"),
        ("https://cdn/f/caf%C3%A9.png", None, "café.png"),
    ],
)
def test_safe_filename(url: str, filename: str | None, expected: str) -> None:
    assert safe_filename(url, filename, "image.jpg") == expected


def test_a_filename_with_nothing_usable_is_refused() -> None:
    with pytest.raises(ValidationError):
        safe_filename("https://cdn/x", "../..", "image.jpg")


def test_long_names_keep_their_extension() -> None:
    name = safe_filename("https://cdn/" + "a" * 500 + ".mp4", None, "video.mp4")
    assert len(name) <= 200
    assert name.endswith(".mp4")


@pytest.mark.parametrize("name", ["報告" * 80 + ".txt", "é" * 150 + ".png", "報" * 300])
def test_long_names_fit_a_file_system_in_bytes(name: str) -> None:
    # Cut at 200 characters, a name of 3-byte characters was 600 bytes: "File name
    # too long" (255 bytes), so an upload with a long Chinese name never came back.
    saved = safe_filename("https://cdn/x", name, "file")
    assert len(saved.encode()) <= 200
    assert len(f".{saved}.0123456789ab.part".encode()) <= 255  # the download's own
    stem, dot, suffix = saved.rpartition(".")
    assert name.startswith(stem if dot else saved)  # whole characters
    assert name.endswith(dot + suffix)


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        ("invoice%E2%80%AEgnp.exe", "invoice_gnp.exe"),  # shown as "invoiceexe.png"
        ("a%C2%85b.png", "a_b.png"),  # a C1 control
        ("a%E2%80%8Bb.png", "a_b.png"),  # a zero-width space
        ("a%E2%80%A8b.png", "a_b.png"),  # a line separator
    ],
)
def test_characters_that_hide_part_of_a_name_are_replaced(segment: str, expected: str) -> None:
    assert safe_filename(f"https://cdn/f/{segment}", None, "image.jpg") == expected


@pytest.mark.parametrize(
    "name",
    [
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.pdf",  # a ZWNJ
        "\U0001f468\u200d\U0001f4bb.png",  # a ZWJ
        "co\u00adop.txt",  # a soft hyphen
    ],
)
def test_joiners_and_soft_hyphens_are_kept(name: str) -> None:
    # Persian spelling needs ZWNJ, emoji sequences ZWJ: they hide nothing.
    assert safe_filename("https://cdn/x", name, "file") == name


@given(st.text(), st.one_of(st.none(), st.text()))
def test_any_input_gives_one_component_inside_the_folder(
    segment: str, filename: str | None
) -> None:
    folder = PurePosixPath("/downloads")
    try:
        name = safe_filename("https://cdn/f/" + segment, filename, "file.bin")
    except ValidationError:
        assert filename is not None
        return
    target = target_inside(folder, name)
    assert target.parent == folder
    assert "/" not in name
    assert "\\" not in name
    assert name not in ("", ".", "..")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b"])
def test_target_inside_refuses_anything_but_a_plain_name(name: str) -> None:
    with pytest.raises(ValidationError):
        target_inside(PurePosixPath("/d"), name)


def test_download_request_never_carries_a_token() -> None:
    request = download_request(FlowithConfig(), "https://r2-bucket.flowith.net/f/a/b.png")
    assert request.method == "GET"
    assert request.stream
    assert request.header("authorization") is None
    assert request.header("apikey") is None


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://x/y", "javascript:alert(1)", "/rel"])
def test_download_request_refuses_non_http_urls(url: str) -> None:
    with pytest.raises(ValidationError):
        download_request(FlowithConfig(), url)


def test_a_download_url_goes_out_in_ascii_with_its_host_in_idna() -> None:
    """Percent-encoding the whole URL sent httpx to the host 'b%c3%bccher.de'."""
    config = FlowithConfig()
    assert download_request(config, "https://Bücher.DE:8443/é%20{1}.png?q=é#f").url == (
        "https://xn--bcher-kva.de:8443/%C3%A9%20%7B1%7D.png?q=%C3%A9#f"
    )
    # In IDNA 2008, as httpx and yarl write a host and NO_PROXY names it: the
    # standard library's IDNA 2003 sent "faß.de" to another domain, fass.de.
    assert download_request(config, "http://faß.de/x").url == "http://xn--fa-hia.de/x"
    # A name IDNA 2008 refuses is written in IDNA 2003, as yarl falls back to it.
    assert download_request(config, "http://cdn_1.bücher.de/x").url == (
        "http://cdn_1.xn--bcher-kva.de/x"
    )
    assert download_request(config, "http://☃.example/x").url == "http://xn--n3h.example/x"
    assert download_request(config, "http://ü@[::1]:8/x").url == "http://%C3%BC@[::1]:8/x"
    assert download_request(config, "https://c.test/100%.png").url == "https://c.test/100%25.png"
    assert download_request(config, "https://c.test/a%20b.png").url == "https://c.test/a%20b.png"

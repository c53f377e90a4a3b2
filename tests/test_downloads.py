"""Downloads on every transport: streamed to disk, never clobbering, never escaping.

``client.download`` and the ``save()`` of media results write through a
temporary ``.part`` file in the target folder and publish it only when the
body is complete; these tests check that against the fake's CDN on loopback:
memory stays flat for a large file, an existing file is never replaced unless
asked, nothing is left behind when a download fails or is cancelled half way,
hostile URLs and names stay inside the folder, and the request goes through
the client's own transport (its proxy) without a token.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import os
import pickle
import posixpath
import threading
import time
import tracemalloc
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import anyio.lowlevel
import pytest

from flowith_httpx.fake_server import FakeFlowithServer
from flowith_proto import abc
from flowith_proto.config import FlowithConfig
from flowith_proto.errors import FlowithError, NotFoundError, ValidationError
from flowith_proto.fake import FakeFlowith, RecordedRequest, Step, Turn, complete
from flowith_proto.files import numbered_name
from flowith_proto.models import GeneratedImage
from tests.conftest import MakeClient
from tests.forward_proxy import ForwardProxy

pytestmark = pytest.mark.anyio

BIG_SIZE = 50 * 1024 * 1024
#: Peak Python memory a download may use, whatever the file's size.
MEMORY_LIMIT = 10 * 1024 * 1024
#: Big enough that a download is still running when a watcher acts on it.
MEDIUM_SIZE = 8 * 1024 * 1024


@cache
def big_file() -> bytes:
    """50 MB of deterministic bytes (made once per session)."""
    return bytes(range(256)) * (BIG_SIZE // 256)


@cache
def big_digest() -> str:
    return hashlib.sha256(big_file()).hexdigest()


@cache
def medium_file() -> bytes:
    return bytes(reversed(range(256))) * (MEDIUM_SIZE // 256)


def file_digest(path: Path) -> str:
    """The SHA-256 of a file, read in pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(1024 * 1024):
            digest.update(piece)
    return digest.hexdigest()


def entries(folder: Path) -> set[str]:
    """Every file and folder under ``folder``, hidden ones included, as relative paths."""
    found: set[str] = set()
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(root, name), folder))
    return found


def leftovers(folder: Path) -> list[str]:
    """Temporary ``.part`` files under ``folder``."""
    return sorted(e for e in entries(folder) if e.endswith(".part"))


def cdn_path(url: str) -> str:
    return unquote(urlsplit(url).path)


def cdn_requests(fake: FakeFlowith, url: str) -> list[RecordedRequest]:
    return fake.requests_to("GET", cdn_path(url))


def stream_media_results(fake: FakeFlowith) -> None:
    """Report media results on ``/stream`` only (the fake's default is ``/sse``):
    the client reads both."""

    def respond(turn: Turn) -> list[Step]:
        return [complete(result=turn.result_url)]

    fake.media_responder = respond


def has_part_file(folder: Path) -> bool:
    return folder.is_dir() and any(name.endswith(".part") for name in os.listdir(folder))


async def wait_for_part_file(folder: Path) -> None:
    """Return as soon as a download's temporary file shows up in ``folder``
    (checked at every turn of the event loop, so the download is still running)."""
    while not has_part_file(folder):
        await anyio.lowlevel.checkpoint()


# -- a large file, streamed ---------------------------------------------------------------


async def test_a_50_mb_download_is_streamed_with_flat_memory(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    url = fake.add_file("/f/big/archive.bin", big_file())
    async with make_client() as client:
        await client.get_discord_invite()  # the connection pool exists before measuring
        tracemalloc.start()
        try:
            path = await client.download(url, tmp_path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert path == tmp_path / "archive.bin"
    assert path.stat().st_size == BIG_SIZE
    assert file_digest(path) == big_digest()
    assert peak < MEMORY_LIMIT, f"peak {peak / 2**20:.1f} MiB while downloading 50 MiB"
    assert entries(tmp_path) == {"archive.bin"}


@pytest.mark.parametrize("what", ["download", "upload"])
async def test_a_call_cancelled_while_its_file_opens_leaves_no_file_open(
    fake: FakeFlowith,
    make_client: MakeClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    what: str,
) -> None:
    # The file is opened in a thread, which a cancellation cannot stop: the handle it
    # returned to nobody was left to the collector (a ResourceWarning, an error under
    # this suite), and a .part file created after the download's cleanup stayed.
    import flowith_proto.abc as core

    opened: list[Any] = []
    opening = threading.Event()
    for name in ("_create_binary", "_open_binary"):
        real = getattr(core, name)

        def slow(path: Any, real: Any = real) -> Any:
            opening.set()
            time.sleep(0.3)  # the caller is cancelled meanwhile
            opened.append(real(path))
            return opened[-1]

        monkeypatch.setattr(core, name, slow)
    source = tmp_path / "source.bin"
    source.write_bytes(b"x" * 1000)
    url = fake.add_file("/f/a/clip.bin", b"the clip")
    folder = tmp_path / "out"
    async with make_client() as client:

        async def call() -> None:
            if what == "download":
                await client.download(url, folder)
            else:
                await client.upload_file(source)

        # Cancelled once the file is being opened, not after a fixed time: a download
        # first makes its folder (in a thread) and opens its stream, which a loaded
        # machine may not do within any fixed time.
        async with anyio.create_task_group() as group:
            group.start_soon(call)
            await anyio.to_thread.run_sync(opening.wait, 5)
            group.cancel_scope.cancel()
        for _ in range(100):  # the thread ends on its own
            if opened:
                break
            await anyio.sleep(0.01)
        await anyio.sleep(0.1)
    assert len(opened) == 1
    assert opened[0].closed
    assert not folder.exists() or os.listdir(folder) == []
    gc.collect()


# -- never overwrite, never leave a .part behind ----------------------------------------


async def test_download_never_replaces_a_file_unless_asked(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    url = fake.add_file("/f/doc/report.pdf", b"%PDF-1.4 the new report", "application/pdf")
    existing = tmp_path / "report.pdf"
    existing.write_bytes(b"precious")
    async with make_client() as client:
        numbered = await client.download(url, tmp_path)
        again = await client.download(url, tmp_path)
        assert existing.read_bytes() == b"precious"
        replaced = await client.download(url, tmp_path, overwrite=True)
        renamed = await client.download(url, tmp_path, filename="copy.pdf")
        with pytest.raises(FileExistsError):
            await client.download(url, tmp_path, filename="copy.pdf")
        assert len(cdn_requests(fake, url)) == 4  # a name given and taken: refused before
    assert (numbered, again) == (tmp_path / "report-1.pdf", tmp_path / "report-2.pdf")
    assert replaced == existing
    assert existing.read_bytes() == b"%PDF-1.4 the new report"
    assert renamed.read_bytes() == b"%PDF-1.4 the new report"
    assert numbered.read_bytes() == b"%PDF-1.4 the new report"
    assert entries(tmp_path) == {"report.pdf", "report-1.pdf", "report-2.pdf", "copy.pdf"}


async def test_a_second_save_of_a_result_takes_a_free_name_and_keeps_the_first(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    """The README's example, ``await image.save("./outputs")``, run twice (or two
    images of one script, which the CDN may name alike) raised FileExistsError."""
    stream_media_results(fake)
    async with make_client() as client:
        image = (await client.generate_image("a lighthouse")).image
        video = await client.generate_video("a lighthouse at night", timeout=30)
        assert image is not None
        first = await image.save(tmp_path)
        first_video = await video.save(tmp_path)
        image_bytes = first.read_bytes()
        first.write_bytes(b"edited by the user")
        second = await image.save(tmp_path)
        second_video = await video.save(tmp_path)
        assert first.read_bytes() == b"edited by the user"
        named = await image.save(tmp_path, "lighthouse.png")
        with pytest.raises(FileExistsError) as refused:
            await image.save(tmp_path, "lighthouse.png")
        # A filename set after the fact made it "[Errno None] None: '...'".
        assert str(refused.value) == (
            f"[Errno 17] the file exists; pass overwrite=True to replace it: '{named}'"
        )
        assert refused.value.filename == str(named)
        again = await image.save(tmp_path, overwrite=True)
    assert (first, first_video, second, second_video, again) == (
        tmp_path / "image.png",
        tmp_path / "video.mp4",
        tmp_path / "image-1.png",
        tmp_path / "video-1.mp4",
        tmp_path / "image.png",
    )
    assert image_bytes == fake.files[cdn_path(image.url)][0]
    assert again.read_bytes() == image_bytes
    assert second.read_bytes() == image_bytes
    assert named.read_bytes() == image_bytes
    assert first_video.read_bytes() == fake.files[cdn_path(video.video_url)][0]
    assert entries(tmp_path) == {
        "image.png", "image-1.png", "video.mp4", "video-1.mp4", "lighthouse.png"
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("image.png", "image-3.png"),
        ("archive.tar.gz", "archive.tar-3.gz"),
        ("README", "README-3"),
        ("_.profile", "_-3.profile"),
        ("trailing.", "trailing-3."),
    ],
)
def test_a_numbered_name_goes_before_the_last_suffix(name: str, expected: str) -> None:
    assert numbered_name(name, 3) == expected


def test_without_hard_links_a_taken_name_still_gives_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some network and FAT file systems refuse hard links: the check-then-rename
    fallback numbers names too, and refuses a name the caller gave."""

    def no_links(_source: object, _target: object) -> None:
        raise PermissionError("operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "a.bin").write_bytes(b"old")
    (tmp_path / "a-1.bin").write_bytes(b"old")
    for content in (b"new", b"named"):
        (tmp_path / "x.part").write_bytes(content)
        if content == b"new":
            placed = abc._publish(tmp_path / "x.part", tmp_path / "a.bin", False, True)
        else:
            with pytest.raises(FileExistsError):
                abc._publish(tmp_path / "x.part", tmp_path / "a.bin", False, False)
    assert placed == tmp_path / "a-2.bin"
    assert placed.read_bytes() == b"new"
    assert (tmp_path / "a.bin").read_bytes() == b"old"


def image_of(result: Any) -> GeneratedImage:
    image = result.image
    assert isinstance(image, GeneratedImage)
    return image


async def test_media_results_pickle_without_their_client_and_deep_copy_with_it(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    # The private downloader held the whole client: pickle and deepcopy failed on
    # its tasks and sockets, and it was the third of GeneratedImage's match args.
    stream_media_results(fake)
    async with make_client() as client:
        result = await client.generate_image("a lighthouse")
        video = await client.generate_video("a lighthouse at night", timeout=30)
        for made in (result, video):
            assert pickle.loads(pickle.dumps(made)) == made
            assert copy.deepcopy(made) == made
        image = pickle.loads(pickle.dumps(result)).image
        assert image is not None
        with pytest.raises(FlowithError, match="not returned by a client"):
            await image.save(tmp_path)
        copied = copy.deepcopy(video)
        assert copied.metadata is not video.metadata
        saved = await copied.save(tmp_path)
        # A shallow copy went through pickling's reduce, which leaves the client out.
        assert await copy.copy(image_of(result)).save(tmp_path, "shallow.png")
    assert saved.read_bytes() == fake.files[cdn_path(video.video_url)][0]
    assert GeneratedImage.__match_args__ == ("url", "model")
    assert len({result, copy.deepcopy(result)}) == 1  # hashable, equal ones alike


async def test_saving_after_the_client_closed_says_how_to_save(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    """The old client's save() had a session of its own; ours goes through the
    client that returned the result, and says so once that client is closed."""
    stream_media_results(fake)
    async with make_client() as client:
        image = (await client.generate_image("a lighthouse")).image
    assert image is not None
    with pytest.raises(FlowithError, match="save before closing it"):
        await image.save(tmp_path)
    assert entries(tmp_path) == set()
    async with make_client() as other:
        saved = await other.download(image.url, tmp_path)
    assert saved.read_bytes() == fake.files[cdn_path(image.url)][0]


async def test_save_takes_the_original_arguments_and_returns_an_absolute_path(
    fake: FakeFlowith,
    make_client: MakeClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``save(path, filename, verbose)`` as in the original client: a relative
    folder still gives an absolute path back, and ``verbose`` prints it."""
    stream_media_results(fake)
    monkeypatch.chdir(tmp_path)
    async with make_client() as client:
        image = (await client.generate_image("a lighthouse")).image
        assert image is not None
        quiet = await image.save("out", "quiet.png")
        loud = await image.save("out", "loud.png", True)
        fetched = await client.download(image.url, "out", filename="direct.png")
    assert quiet == tmp_path / "out" / "quiet.png"
    assert quiet.is_absolute()
    assert fetched == tmp_path / "out" / "direct.png"
    assert capsys.readouterr().out == f"Saved: {loud}\n"


async def test_a_failed_download_leaves_nothing(
    fake: FakeFlowith, server: FakeFlowithServer, make_client: MakeClient, tmp_path: Path
) -> None:
    folder = tmp_path / "downloads"
    async with make_client() as client:
        with pytest.raises(NotFoundError):
            await client.download(f"{server.url}/f/missing/gone.png", folder)
        with pytest.raises(ValidationError):
            await client.download("ftp://example.com/file.bin", folder)
        with pytest.raises(ValidationError):
            await client.download(f"{server.url}/f/x/y.bin", folder, filename="../..")
    (missing,) = fake.requests_to("GET", "/f/missing/gone.png")  # it was really asked
    assert missing.header("authorization") is None
    assert entries(tmp_path) <= {"downloads"}  # at most the (empty) folder itself
    assert not folder.exists() or os.listdir(folder) == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://[::1/a.png", "Invalid IPv6 URL"),
        ("https://cdn.test:abc/a.png", "Port could not be cast"),
        ("https://cdn.test/a\x00.png", "control characters"),
        ("https://cdn.test/a b.png", "spaces"),
        ("https:///a.png", "names no host"),
        ("mailto:a@b.c", r"not http\(s\)"),
    ],
)
async def test_a_url_no_client_can_fetch_is_a_validation_error(
    make_client: MakeClient, tmp_path: Path, url: str, reason: str
) -> None:
    async with make_client() as client:
        with pytest.raises(ValidationError, match=reason):
            await client.download(url, tmp_path)
    assert entries(tmp_path) == set()


# A cancelled download currently leaves closing its ``.part`` handle to the
# garbage collector (a ResourceWarning); this test checks what is on disk.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_a_download_cancelled_half_way_leaves_nothing(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    url = fake.add_file("/f/medium/film.mp4", medium_file(), "video/mp4")
    folder = tmp_path / "downloads"
    finished: list[Path] = []
    async with make_client() as client:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:

                async def download() -> None:
                    finished.append(await client.download(url, folder))

                group.start_soon(download)
                await wait_for_part_file(folder)
                scope.cancel()
        assert scope.cancelled_caught
        # The client goes on working after the abandoned download.
        path = await client.download(url, folder, filename="complete.mp4")
    gc.collect()  # any abandoned handle is finalized here, under this test's filter
    assert finished == []
    assert path.read_bytes() == medium_file()
    assert entries(folder) == {"complete.mp4"}


@pytest.mark.parametrize("cancelled", ["before the move", "after the move"])
async def test_a_download_cancelled_while_it_is_moved_into_place_leaves_no_file(
    fake: FakeFlowith,
    make_client: MakeClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cancelled: str,
) -> None:
    """What the caller is told matches the disk. The move runs in a worker thread:
    on aiohttp it went on after its caller was cancelled, and left the complete
    file in place; on httpx on asyncio the cancellation came at the next step (the
    body's close), and the file stayed all the same. (On trio the download may
    finish first: it then returns the file's path.)"""
    url = fake.add_file("/f/small/report.txt", b"complete", "text/plain")
    moving, go_on, moved = threading.Event(), threading.Event(), threading.Event()
    publish = abc._publish

    def held(*args: Any) -> Path:
        try:
            if cancelled == "after the move":
                made = publish(*args)
                moving.set()
                go_on.wait(5)
                return made
            moving.set()
            go_on.wait(5)
            return publish(*args)
        finally:
            moved.set()

    monkeypatch.setattr(abc, "_publish", held)
    returned: list[Path] = []
    async with make_client() as client:

        async def download() -> None:
            returned.append(await client.download(url, tmp_path))

        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(download)
                await anyio.to_thread.run_sync(moving.wait, 5)
                scope.cancel()
                go_on.set()
        await anyio.to_thread.run_sync(moved.wait, 5)  # aiohttp's worker outlives its caller
        await anyio.sleep(0.05)  # (its last steps after the move)
    if returned:  # it finished before the cancellation reached it
        assert entries(tmp_path) == {"report.txt"}
        assert returned[0].read_bytes() == b"complete"
    else:
        assert scope.cancelled_caught
        assert entries(tmp_path) == set()


async def test_a_file_appearing_during_the_download_is_not_clobbered(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    """The name is taken when the download lands, not when it starts: a file written
    meanwhile keeps the name, the download the next free one; a name the caller gave
    is refused."""
    url = fake.add_file("/f/medium/raced.bin", medium_file())
    target = tmp_path / "raced.bin"
    named = tmp_path / "mine.bin"
    saved: list[Path] = []
    outcome: list[BaseException] = []
    async with make_client() as client:

        async def download(filename: str | None) -> None:
            try:
                saved.append(await client.download(url, tmp_path, filename=filename))
            except FileExistsError as error:
                outcome.append(error)

        for filename, appearing in ((None, target), ("mine.bin", named)):
            async with anyio.create_task_group() as group:
                group.start_soon(download, filename)
                await wait_for_part_file(tmp_path)
                appearing.write_bytes(b"written by someone else meanwhile")
    assert saved == [tmp_path / "raced-1.bin"]
    assert saved[0].read_bytes() == medium_file()
    assert len(outcome) == 1
    assert target.read_bytes() == b"written by someone else meanwhile"
    assert named.read_bytes() == b"written by someone else meanwhile"
    assert leftovers(tmp_path) == []
    assert entries(tmp_path) == {"raced.bin", "raced-1.bin", "mine.bin"}


async def test_an_overwriting_download_replaces_a_file_that_appeared_meanwhile(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    url = fake.add_file("/f/medium/latest.bin", medium_file())
    target = tmp_path / "latest.bin"
    async with make_client() as client, anyio.create_task_group() as group:
        group.start_soon(lambda: client.download(url, tmp_path, overwrite=True))
        await wait_for_part_file(tmp_path)
        target.write_bytes(b"stale")
    assert target.read_bytes() == medium_file()
    assert entries(tmp_path) == {"latest.bin"}


# -- hostile names and URLs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("segment", "filename", "expected"),
    [
        ("..", None, "download"),
        ("%2E%2E", None, "download"),
        ("a%2F..%2F..%2Fevil", None, "evil"),
        ("evil%5C..%5Cx", None, "x"),
        ("safe.bin", "../../evil", "evil"),
        ("safe.bin", "/abs/evil", "evil"),
        ("safe.bin", "C:\\evil", "evil"),
        ("safe.bin", "..\\evil", "evil"),
    ],
)
async def test_hostile_names_stay_inside_the_folder(
    fake: FakeFlowith,
    server: FakeFlowithServer,
    make_client: MakeClient,
    tmp_path: Path,
    segment: str,
    filename: str | None,
    expected: str,
) -> None:
    url = f"{server.url}/f/hostile/{segment}"
    data = b"hostile payload " + segment.encode()
    # Serve it wherever a transport sends the request: as written, or with its
    # dot segments removed (httpx normalises "/f/hostile/.." to "/f").
    decoded = cdn_path(url)
    for path in {decoded, posixpath.normpath(decoded)}:
        fake.add_file(path, data)
    folder = tmp_path / "jail" / "downloads"
    folder.mkdir(parents=True)
    watched = tmp_path.parent
    before = entries(watched)
    # Where an escape would land outside the temporary root: the working
    # directory, or the absolute path a name spelled out.
    names = ("evil", "x", "download", "C:\\evil", "..\\evil")
    escapes = [Path.cwd() / name for name in names] + [Path("/abs/evil")]
    escapes_before = [p.exists() for p in escapes]
    async with make_client() as client:
        path = await client.download(url, folder, filename=filename)
    assert path == folder / expected
    assert path.read_bytes() == data
    created = entries(watched) - before
    target = str((folder / expected).relative_to(watched))
    assert created == {target}  # nothing anywhere else under the tests' temporary root
    assert [p.exists() for p in escapes] == escapes_before
    assert escapes_before[-1] is False
    assert os.listdir(folder) == [expected]


# -- through the client's transport, without a token --------------------------------------


async def test_a_download_goes_through_the_proxy_without_a_token(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    data = b"proxied bytes " * 1000
    url = fake.add_file("/f/proxied/report.txt", data, "text/plain")
    async with ForwardProxy() as proxy, make_client(proxy=proxy.url) as client:
        path = await client.download(url, tmp_path)
    assert path.read_bytes() == data
    assert ("GET", url) in proxy.requests  # absolute form: the proxy forwarded it
    (request,) = cdn_requests(fake, url)
    assert request.header("authorization") is None
    assert request.header("apikey") is None
    config = FlowithConfig()
    assert request.header("user-agent") == config.user_agent
    assert request.header("origin") == config.origin
    assert request.header("referer") == config.referer


async def test_a_saved_image_carries_no_token_either(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    stream_media_results(fake)
    async with make_client() as client:
        result = await client.generate_image("a token-free cat")
        await image_of(result).save(tmp_path)
    (request,) = cdn_requests(fake, image_of(result).url)
    assert request.header("authorization") is None
    assert request.header("apikey") is None
    # Every API request did carry the token: the CDN request is the exception.
    api = [r for r in fake.requests if r is not request]
    assert all(r.header("authorization") for r in api)


async def test_a_url_written_with_raw_characters_goes_out_encoded_on_every_transport(
    fake: FakeFlowith, make_client: MakeClient, tmp_path: Path
) -> None:
    """aiohttp sent non-ASCII bytes and characters like {} raw; httpx encoded them."""
    fake.add_file("/f/raw/café {1}.png", b"\x89PNG fox", "image/png")
    raw_url = fake.file_url("/").rstrip("/") + "/f/raw/café {1}.png".replace(" ", "%20")
    async with make_client() as client:
        saved = await client.download(raw_url, tmp_path)
    assert saved.read_bytes() == b"\x89PNG fox"
    assert saved.name == "café {1}.png"
    (request,) = fake.requests_to("GET", "/f/raw/café {1}.png")
    assert request.target == "/f/raw/caf%C3%A9%20%7B1%7D.png"

"""Video URLs as a server receives them (`media/sources.py`): remote fetching against a local HTTP server
(redirects re-checked hop by hop, private addresses refused, a byte cap, a deadline), and the folder
confinement of file:// URLs. The HTTP paths through the server are in test_serve.py."""

from __future__ import annotations

import http.server
import ipaddress
import threading
from pathlib import Path

import pytest

from dytok_cli.media.sources import (
    MediaError,
    MediaMissing,
    MediaPolicy,
    MediaRefused,
    MediaTooLarge,
    MediaUnreachable,
    global_only,
    local_path,
    open_media,
)

BODY = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64  # 16 KiB that are not read as a video here


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        routes = {
            "/video.mp4": (200, {"Content-Length": str(len(BODY))}, BODY),
            "/to-video": (302, {"Location": "/video.mp4"}, b""),
            "/to-elsewhere": (302, {"Location": f"http://127.0.0.2:{self.server.server_port}/video.mp4"}, b""),
            "/to-file": (307, {"Location": "file:///etc/passwd"}, b""),
            "/loop": (302, {"Location": "/loop"}, b""),
            "/missing": (404, {}, b"no"),
            "/lying-length": (200, {"Content-Length": str(10**12)}, b""),
        }
        if self.path == "/no-length":  # an endless body without Content-Length: only the byte count stops it
            self.send_response(200)
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"x" * 65536)
            except OSError:
                return
        status, headers, body = routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def origin():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def only_127_0_0_1(address) -> bool:
    """Stands in for "public" in these tests: the origin's address is allowed, every other refused."""
    return address == ipaddress.ip_address("127.0.0.1")


REMOTE = MediaPolicy(allow_remote=True, address_allowed=only_127_0_0_1, max_bytes=1 << 20, timeout_s=20)


def test_a_download_arrives_whole_with_its_digest(origin, tmp_path):
    import hashlib

    media = open_media(f"{origin}/to-video", REMOTE, tmp_path)
    assert media.path.read_bytes() == BODY and media.digest == hashlib.sha256(BODY).hexdigest() and media.temporary
    media.discard()
    assert not media.path.exists()


@pytest.mark.parametrize("path, error, fragment", [
    ("/to-elsewhere", MediaRefused, "127.0.0.2"),  # a redirect hop is checked as the first was
    ("/to-file", MediaRefused, "must be an http"),
    ("/loop", MediaUnreachable, "more than 5 redirects"),
    ("/missing", MediaUnreachable, "HTTP 404"),
    ("/lying-length", MediaTooLarge, "limit"),
    ("/no-length", MediaTooLarge, "limit"),
])
def test_a_download_that_goes_wrong_is_refused_and_leaves_nothing(origin, tmp_path, path, error, fragment):
    with pytest.raises(error, match=fragment):
        open_media(f"{origin}{path}", REMOTE, tmp_path)
    assert not list(tmp_path.iterdir())


def test_private_addresses_are_refused_unless_allowed(origin, tmp_path):
    with pytest.raises(MediaRefused, match="private, loopback or link-local"):
        open_media(f"{origin}/video.mp4", MediaPolicy(allow_remote=True), tmp_path)
    allowed = open_media(f"{origin}/video.mp4", MediaPolicy(allow_remote=True, allow_private=True), tmp_path)
    assert allowed.path.read_bytes() == BODY
    with pytest.raises(MediaRefused, match="remote videos are off"):
        open_media(f"{origin}/video.mp4", MediaPolicy(allow_private=True), tmp_path)
    with pytest.raises(MediaRefused, match="credentials"):
        open_media(origin.replace("http://", "http://user:pass@") + "/video.mp4", REMOTE, tmp_path)


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True), ("2606:4700::1111", True), ("10.0.0.1", False), ("172.16.5.4", False), ("192.168.1.1", False),
    ("127.0.0.1", False), ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("::1", False),
    ("fe80::1", False), ("fd00::1", False), ("::ffff:127.0.0.1", False), ("::ffff:169.254.169.254", False),
])
def test_what_counts_as_public(address, public):
    assert global_only(ipaddress.ip_address(address)) is public


def test_file_urls_stay_in_their_folder(tmp_path):
    folder = tmp_path / "media"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "clip.mp4").write_bytes(BODY)
    (tmp_path / "secret.mp4").write_bytes(BODY)
    (folder / "link.mp4").symlink_to(tmp_path / "secret.mp4")
    (folder / "inner.mp4").symlink_to(folder / "sub" / "clip.mp4")
    policy = MediaPolicy(media_dir=folder)
    inside = (folder / "sub" / "clip.mp4").resolve()
    assert local_path(f"file://{folder}/sub/clip.mp4", policy) == inside
    assert local_path("file:sub/clip.mp4", policy) == inside
    assert local_path("file://localhost" + str(folder) + "/sub/%63lip.mp4", policy) == inside
    assert local_path("file:inner.mp4", policy) == inside  # a symlink that stays inside is fine
    for escape in ("file:link.mp4", f"file://{folder}/../secret.mp4", f"file://{folder}/sub/%2E%2E/%2e%2e/secret.mp4",
                   "file:///etc/passwd", "file:../secret.mp4"):
        with pytest.raises(MediaRefused, match="outside the media folder"):
            local_path(escape, policy)
    with pytest.raises(MediaMissing):
        local_path("file:nothing.mp4", policy)
    with pytest.raises(MediaError, match="a path on this machine"):
        local_path("file://host/clip.mp4", policy)
    with pytest.raises(MediaRefused, match="local files are off"):
        local_path(f"file://{folder}/sub/clip.mp4", MediaPolicy())
    assert not Path(folder / "sub" / "%63lip.mp4").exists()

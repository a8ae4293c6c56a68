"""Write files so that a reader never sees a partial one: temp file in the same directory,
fsync, then rename. An interrupted or failed write leaves nothing at the destination."""

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = ".part") -> Iterator[Path]:
    """Yield a temporary path next to `dest`; rename it over `dest` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, dest)
        _fsync_dir(dest.parent)
    except OSError as e:
        if e.filename is not None:
            raise
        # a write's error names no file (a full disk in write()): name the one being written
        raise OSError(e.errno, e.strerror or str(e), str(dest)) from e
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def replace_dir(tmp: Path, dest: Path) -> None:
    """Move a finished directory (built next to `dest`) into place; an older one is removed
    only after the new one is there, so an interruption leaves the old artifact or the new."""
    import shutil

    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        if old.exists():
            shutil.rmtree(old)
        dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(dest)
        _fsync_dir(dest.parent)


def write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text(dest: str | os.PathLike, text: str) -> None:
    write_bytes(dest, text.encode("utf-8"))


def write_json(dest: str | os.PathLike, obj) -> None:
    write_text(dest, json.dumps(obj, indent=2, sort_keys=False) + "\n")


# Cache entries are sealed: once an entry (a file, or a directory renamed into place) is whole,
# its sha256 is written beside it as `<entry>.sha256`. A reader uses the entry only when it is
# `intact` (the seal exists and matches the bytes); anything else -- a damaged file, an entry
# a killed process left unsealed -- is built again, never used.


def seal_path(entry: str | os.PathLike) -> Path:
    entry = Path(entry)
    return entry.with_name(entry.name + ".sha256")


def entry_sha256(entry: str | os.PathLike) -> str:
    """sha256 of a file; of a directory, over its files' sorted `relative-path sha256` lines."""
    import hashlib

    entry = Path(entry)
    if not entry.is_dir():
        return sha256_file(entry)
    h = hashlib.sha256()
    for p in sorted(q for q in entry.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(entry).as_posix()} {sha256_file(p)}\n".encode())
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def seal(entry: str | os.PathLike) -> None:
    """Record the sha256 of the finished cache entry `entry` beside it."""
    write_text(seal_path(entry), entry_sha256(entry) + "\n")


def intact(entry: str | os.PathLike) -> bool:
    """Whether the cache entry exists, is sealed, and its bytes match the seal."""
    entry, mark = Path(entry), seal_path(entry)
    if not (entry.exists() and mark.is_file()):
        return False
    try:
        return mark.read_text().strip() == entry_sha256(entry)
    except OSError:
        return False


def discard(entry: str | os.PathLike) -> None:
    """Remove a cache entry that is not intact (and its seal), so it is built again."""
    import shutil

    entry = Path(entry)
    seal_path(entry).unlink(missing_ok=True)
    if entry.is_dir():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(entry: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on `entry` while it is checked and built: a second edgekit
    process on the same entry waits, then reuses what the first one built. The lock is the
    kernel's (flock), released when the process ends, even killed. Lock files live in the
    cache (`locks/`, named by the entry's absolute path), never beside what the user asked
    for: a failed run leaves nothing in an output directory."""
    import hashlib

    import filelock

    from edgekit.paths import cache_dir

    entry = Path(entry).absolute()
    locks = cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(os.fsencode(entry)).hexdigest()[:24]
    with filelock.FileLock(str(locks / f"{entry.name[:80]}-{key}.lock")):
        entry.parent.mkdir(parents=True, exist_ok=True)
        yield


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

"""Output locations the user names (--out, --store, the cache): checked before any work, and
the operating system's errors of a write turned into one line that names the path.

A full disk, a read-only file system, a path below a regular file or a directory the kernel
will not create (/proc) is the user's situation, not edgekit's bug: it is reported as an
`OutputError` (exit 2), never as "internal error".
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from edgekit.errors import EdgekitError

# errors of a write that the machine, not edgekit, causes: reported as one line, exit 2
USER_ERRNOS = frozenset(
    {
        errno.ENOSPC,  # no space left on device
        errno.EDQUOT,  # disk quota exceeded
        errno.EROFS,  # read-only file system
        errno.EFBIG,  # file too large for the file system
        errno.EACCES,
        errno.EPERM,
        errno.ENOTDIR,  # a path component is a regular file
        errno.EISDIR,
        errno.ENAMETOOLONG,
    }
)


class OutputError(EdgekitError):
    """An output path edgekit cannot write: names the path and the cause."""

    def __init__(self, path: str | os.PathLike, cause: str, what: str = "cannot write"):
        super().__init__(f"{what} {path}: {cause}")
        self.path = str(path)


def from_os_error(e: OSError, what: str = "cannot write") -> OutputError:
    """`e` as one line: the file it names (the operation's target) and the system's reason."""
    path = e.filename if e.filename is not None else "(unnamed file)"
    cause = e.strerror or errno.errorcode.get(e.errno or 0, type(e).__name__)
    return OutputError(path, cause[:1].lower() + cause[1:], what)


def write_cause(e: OSError, path: str | os.PathLike) -> str:
    """Why a write to `path` failed, as the system says it. numpy's tofile reports a full disk
    as "N requested and M written" with no errno: the file system's free space tells."""
    if e.strerror:
        return e.strerror[:1].lower() + e.strerror[1:]
    import shutil

    with contextlib.suppress(OSError):
        if shutil.disk_usage(Path(path).parent).free < 1 << 20:
            return "no space left on device"
    return str(e)


def is_user_os_error(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in USER_ERRNOS


def require_writable_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Check that `path` is, or can be made, a directory edgekit can create files in, before
    any work starts; leaves the file system as it found it (directories it had to create for
    the probe are removed again). Raises OutputError naming `flag`, the path and the cause."""
    p = Path(path).expanduser()
    probe_root = p.absolute()
    first = probe_root
    while not first.exists() and not first.is_symlink():
        if first.parent == first:
            break
        first = first.parent
    if first.exists() and not first.is_dir():
        where = "" if first == probe_root else f" ({first} is a file)"
        raise OutputError(p, f"not a directory{where}", f"{flag}")
    # another edgekit process probing the same new directory may remove it under this one:
    # a vanished directory is probed again
    for attempt in range(3):
        try:
            _probe(probe_root)
            break
        except FileNotFoundError:
            if attempt < 2 and probe_root.parent.is_dir():
                continue
            raise OutputError(p, "cannot create a directory there", flag) from None
        except OSError as e:
            cause = e.strerror or type(e).__name__
            raise OutputError(p, cause[:1].lower() + cause[1:], flag) from None
    return p


def _probe(root: Path) -> None:
    """Create the missing directories down to `root` and a file in it, then remove all of
    that again; an OSError says why `root` cannot be written."""
    created: list[Path] = []
    try:
        for d in reversed([root, *root.parents]):
            if d.exists():
                continue
            try:
                d.mkdir()
            except FileExistsError:  # another edgekit process made it a moment ago
                if d.is_dir():
                    continue
                raise
            created.append(d)
        fd, tmp = tempfile.mkstemp(prefix=".edgekit-probe-", dir=root)
        os.close(fd)
        os.unlink(tmp)
    finally:
        for d in reversed(created):
            with contextlib.suppress(OSError):
                d.rmdir()

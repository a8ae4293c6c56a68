"""A content-addressed cache of quantized tensors, so GGUF builds that give a tensor the same
type (a ladder's Q4_K_S and Q4_K_M, Q5_K_S and Q5_K_M; the embedding across many) quantize
it once.

The key is the sha256 of what decides the bytes ggml writes: the float32 rows exactly as
they are fed to the quantizer (and where each row length or expert starts), the ggml type,
the tensor's importance values (or none), and the build of llama.cpp's kernels (the
llama-cpp-python version and the sha256 of its shared libraries). The value is the quantized
bytes, so a build from the cache writes the same file as one without it.

Entries live in `cache_dir()/tensors/` as `<key>.tensor`: the bytes, then a trailer (magic
and the sha256 of the bytes) that seals them. They are written to a temporary file and
renamed into place (as edgekit.atomic writes), so a reader sees a whole entry or none, and
two processes writing the same key write the same bytes. A reader checks the length and the
seal before using an entry; a damaged one (a flipped byte, a truncated file) is removed and
the tensor is quantized again. Entries are not fsynced: losing one in a crash costs a
rebuild, never a wrong byte, and a build writes hundreds of them.

The area is capped (EDGEKIT_TENSOR_CACHE_MAX: a size such as 8G, or 0 / off to turn the
cache off; by default the smaller of 20 GiB and a tenth of the disk space the cache could
use); when a build goes over the cap the least recently used entries (a hit touches its
entry) are removed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from edgekit import atomic, cache_areas
from edgekit.paths import cache_dir

if TYPE_CHECKING:
    import numpy as np

AREA = "tensors"
ENV_MAX = "EDGEKIT_TENSOR_CACHE_MAX"
DEFAULT_MAX_BYTES = 20 * 1024**3
DEFAULT_DISK_SHARE = 0.10
# the types whose bytes come from ggml's quantizers; F32 / F16 / BF16 are plain conversions,
# cheaper to redo than to look up
UNCACHED = frozenset({"F32", "F16", "BF16"})
# ggml's quantizers that take no importance (quantize_q8_0 ignores its quant_weights): their
# bytes are keyed without one, so a build with an importance matrix reuses them
IMATRIX_IGNORED = frozenset({"Q8_0"})
SUFFIX = ".tensor"
_MAGIC = b"EKTC"
_TRAILER = len(_MAGIC) + 32
KEY_VERSION = b"edgekit tensor cache 1\n"
# while a tensor is hashed its rows are kept, up to this many bytes, so a miss quantizes them
# without reading the tensor again; a larger tensor is read a second time
BUFFER_BYTES = 64 * 1024**2
# after pruning, the area holds at most this share of the cap (a build does not prune at
# every write once it is full)
PRUNE_TO = 0.9
_BLOCK = 1 << 24

Chunks = Iterable[tuple[int, "np.ndarray"]]


@dataclass
class CacheStats:
    hits: int = 0  # tensors copied from the cache
    misses: int = 0  # tensors quantized (and stored)
    damaged: int = 0  # entries found damaged, removed and rebuilt (counted in misses too)
    hit_bytes: int = 0
    stored_bytes: int = 0
    pruned: int = 0  # entries removed to keep the area under its cap
    write_errors: int = 0  # entries that could not be stored (the build goes on without them)

    @property
    def hit_rate(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0

    def to_dict(self) -> dict:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": round(self.hit_rate, 4),
            "hit_bytes": self.hit_bytes,
            "stored_bytes": self.stored_bytes,
            "damaged": self.damaged,
            "pruned": self.pruned,
            "write_errors": self.write_errors,
        }


def area() -> Path:
    return cache_dir() / AREA


def configured_max() -> int | None:
    """The cap in bytes from EDGEKIT_TENSOR_CACHE_MAX; None when the cache is off; the default
    when unset."""
    raw = os.environ.get(ENV_MAX, "").strip()
    if raw.lower() in ("0", "off", "none", "false", "no"):
        return None
    if raw:
        n = cache_areas.parse_size(raw, ENV_MAX)
        return n or None
    return default_max()


def default_max() -> int:
    """The smaller of 20 GiB and a tenth of the space the cache could hold (what is free on its
    disk plus what the area holds already, so the cap does not shrink as the cache fills)."""
    d = cache_dir()
    while not d.exists() and d != d.parent:
        d = d.parent
    try:
        free = shutil.disk_usage(d).free
    except OSError:
        return DEFAULT_MAX_BYTES
    held = cache_areas.summary(AREA).bytes
    return min(DEFAULT_MAX_BYTES, int(DEFAULT_DISK_SHARE * (free + held)))


def open_cache() -> TensorCache | None:
    """The tensor cache as configured, or None when it is off or its area cannot be made."""
    cap = configured_max()
    if cap is None:
        return None
    root = area()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only or full cache: builds go on without it
    return TensorCache(cap)


@functools.cache
def build_identity() -> str:
    """llama-cpp-python's version and the sha256 of its shared libraries (ggml's kernels)."""
    import importlib.metadata
    import importlib.util

    try:
        version = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    spec = importlib.util.find_spec("llama_cpp")
    h = hashlib.sha256()
    if spec is not None and spec.origin:
        libdir = Path(spec.origin).parent / "lib"
        seen: set[tuple[int, int]] = set()
        for f in sorted(libdir.glob("lib*")):
            st = f.stat()
            if (st.st_dev, st.st_ino) in seen or not f.is_file():
                continue  # libggml.so -> libggml.so.0 -> ...: one file, hashed once
            seen.add((st.st_dev, st.st_ino))
            h.update(f"{f.name} {atomic.sha256_file(f)}\n".encode())
    return f"llama-cpp-python {version} libs {h.hexdigest()}"


class TensorCache:
    def __init__(self, max_bytes: int):
        self.root = area()
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._held: int | None = None  # bytes in the area, counted at the first store

    # ---- keys ------------------------------------------------------------------------------

    def key(
        self,
        ty: str,
        imatrix: np.ndarray | None,
        chunks: Chunks,
        again: Callable[[], Chunks],
    ) -> tuple[str, Chunks]:
        """(key, the same rows to quantize on a miss). `chunks` yields (expert, rows) as the
        quantizer takes them; `again` yields them anew when they were too large to keep."""
        import numpy as np

        h = hashlib.sha256(KEY_VERSION)
        h.update(f"{build_identity()}\n{ty}\n".encode())
        if imatrix is None or ty in IMATRIX_IGNORED:
            h.update(b"imatrix none\n")
        else:
            imat = np.ascontiguousarray(imatrix, dtype=np.float32)
            h.update(f"imatrix {imat.shape} {hashlib.sha256(imat.data).hexdigest()}\n".encode())
        kept: list[tuple[int, np.ndarray]] | None = []
        size = 0
        where = None
        for expert, rows in chunks:
            x = np.ascontiguousarray(rows, dtype=np.float32)
            # the bytes do not depend on how the rows are sliced, only on the row length and
            # where an expert (with its own importance) starts
            if (expert, x.shape[-1]) != where:
                where = (expert, x.shape[-1])
                h.update(f"expert {expert} row {x.shape[-1]}\n".encode())
            h.update(x.data.cast("B"))
            if kept is not None:
                size += x.nbytes
                if size <= BUFFER_BYTES:
                    kept.append((expert, x))
                else:
                    kept = None
        return h.hexdigest(), (kept if kept is not None else again())

    def path(self, key: str) -> Path:
        return self.root / f"{key}{SUFFIX}"

    # ---- reading ---------------------------------------------------------------------------

    def copy_to(self, key: str, nbytes: int, fout: BinaryIO) -> bool:
        """Write the cached bytes of `key` to `fout` when the entry is there and intact."""
        p = self.path(key)
        try:
            fh = open(p, "rb")
        except OSError:
            return False
        with fh:
            try:
                ok = self._verify(fh, nbytes)
            except OSError:
                ok = False
            if not ok:
                self.stats.damaged += 1
                with contextlib.suppress(OSError):
                    p.unlink()
                return False
            # the same open file that was checked: a concurrent prune or rewrite cannot swap it
            fh.seek(0)
            left = nbytes
            while left:
                block = fh.read(min(_BLOCK, left))
                if not block:
                    raise RuntimeError(f"{p}: shorter than when it was checked")
                fout.write(block)
                left -= len(block)
        with contextlib.suppress(OSError):
            os.utime(p)  # least recently used: a hit counts as a use
        self.stats.hits += 1
        self.stats.hit_bytes += nbytes
        return True

    @staticmethod
    def _verify(fh: BinaryIO, nbytes: int) -> bool:
        if os.fstat(fh.fileno()).st_size != nbytes + _TRAILER:
            return False
        h = hashlib.sha256()
        left = nbytes
        while left:
            block = fh.read(min(_BLOCK, left))
            if not block:
                return False
            h.update(block)
            left -= len(block)
        trailer = fh.read(_TRAILER)
        return trailer == _MAGIC + h.digest()

    # ---- writing ---------------------------------------------------------------------------

    def store(self, key: str) -> _Store:
        """A context whose value is a sink for the quantized bytes of `key` (arrays, in file
        order). The entry is published when the block ends without an error; an error of the
        block propagates untouched. A failure to write the cache itself (a full or read-only
        disk) drops the entry, never the build."""
        self.stats.misses += 1
        return _Store(self, key)

    def _stored(self, n: int) -> None:
        self.stats.stored_bytes += n - _TRAILER
        if self._held is None:
            self._held = cache_areas.summary(AREA).bytes  # counts the new entry
        else:
            self._held += n
        if self._held > self.max_bytes:
            with contextlib.suppress(OSError):  # an entry it cannot remove stays; the build goes on
                self.prune(int(self.max_bytes * PRUNE_TO))

    def prune(self, max_bytes: int) -> None:
        (done,) = cache_areas.prune([AREA], max_bytes)
        self.stats.pruned += done.removed
        self._held = done.bytes


class _Store:
    """One entry being written: a temporary file next to it (a hidden `.KEY.*.part`, as
    edgekit.atomic names them) with the bytes and their running sha256, then the seal, then
    the rename into place. Not fsynced (see the module's doc)."""

    def __init__(self, cache: TensorCache, key: str):
        self.cache, self.dest = cache, cache.path(key)
        self.fh: BinaryIO | None = None
        self.tmp: Path | None = None
        self.h = hashlib.sha256()
        self.written = 0

    def __enter__(self) -> Callable[[Any], None]:
        try:
            fd, name = tempfile.mkstemp(prefix=f".{self.dest.name}.", suffix=".part", dir=self.dest.parent)
            self.tmp = Path(name)
            self.fh = os.fdopen(fd, "wb")
        except OSError:
            self._fail()
        return self.write

    def write(self, data: Any) -> None:
        if self.fh is None:
            return
        view = memoryview(data).cast("B")
        try:
            self.fh.write(view)
        except OSError:
            self._fail()
            return
        self.h.update(view)
        self.written += view.nbytes

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._drop()
            return  # the build's own error propagates as it was
        if self.fh is None or self.tmp is None:  # failed already (and counted)
            self._drop()
            return
        try:
            self.fh.write(_MAGIC + self.h.digest())
            self.fh.close()
            self.fh = None
            os.replace(self.tmp, self.dest)
            self.tmp = None
        except OSError:
            self._fail()
            self._drop()
            return
        self.cache._stored(self.written + _TRAILER)

    def _fail(self) -> None:
        self.cache.stats.write_errors += 1
        self._close()

    def _close(self) -> None:
        if self.fh is not None:
            with contextlib.suppress(OSError):
                self.fh.close()
            self.fh = None

    def _drop(self) -> None:
        self._close()
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                self.tmp.unlink()
            self.tmp = None

"""Modules other packages register under an edgekit entry-point group (format families,
architectures): imported once, on first use; a broken one is reported, never fatal."""

from __future__ import annotations

import functools
import importlib
import sys
from importlib.metadata import entry_points


@functools.cache
def import_group(group: str, what: str) -> tuple[str, ...]:
    """Import every module named in entry-point `group` (their import registers them); the
    names of those that loaded. `what` names the kind in the warning for one that fails."""
    try:
        eps = list(entry_points(group=group))
    except Exception:  # another distribution's broken metadata must not break edgekit
        return ()
    loaded = []
    for ep in eps:
        try:
            importlib.import_module(ep.value.partition(":")[0].strip())
            loaded.append(ep.name)
        except Exception as e:  # a third party's module may fail in any way; say so, go on
            print(f"edgekit: {what} {ep.name} ({ep.value}) failed to load: {e}", file=sys.stderr)
    return tuple(loaded)

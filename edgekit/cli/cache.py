"""`edgekit cache`: what edgekit's cache holds, and pruning and clearing it."""

from __future__ import annotations

import click

from edgekit import cache_areas
from edgekit.cli import render
from edgekit.errors import EdgekitError
from edgekit.paths import cache_dir
from edgekit.quantize import tensor_cache

_JSON = click.option("--json", "as_json", is_flag=True, help="Exact JSON for programs.")
_AREA_HELP = "An area (repeatable): " + ", ".join(cache_areas.KNOWN) + "."


@click.group("cache")
def cache_cmd() -> None:
    """Show, prune and clear edgekit's cache (EDGEKIT_CACHE_DIR, else ~/.cache/edgekit).

    Every area can be removed without losing anything but time: what is gone is built again
    when next needed, except `bench` (results measured on a device), which is removed only
    when named. The quantized-tensor area is capped by EDGEKIT_TENSOR_CACHE_MAX (a size such
    as 8G; 0 or off turns that cache off; by default the smaller of 20 GiB and a tenth of the
    disk space the cache could use). Do not prune or clear while edgekit runs; the `tensors`
    area alone is safe to prune at any time.
    """


@cache_cmd.command("show")
@_JSON
def show(as_json: bool) -> None:
    """Each cache area: what it holds, its entries and their bytes."""
    areas = cache_areas.show()
    cap = tensor_cache.configured_max()
    entries, nbytes = sum(a.entries for a in areas), sum(a.bytes for a in areas)
    if as_json:
        render.emit_json(
            {
                "cache_dir": str(cache_dir()),
                "areas": [a.to_dict() for a in areas],
                "entries": entries,
                "bytes": nbytes,
                "tensor_cache_max_bytes": cap,
            }
        )
        return
    click.echo(f"cache {cache_dir()}")
    for a in areas:
        click.echo(f"  {a.area:10s} {a.entries:7d} entries {render.size(a.bytes):>11s}  {a.description}")
    click.echo(f"  {'total':10s} {entries:7d} entries {render.size(nbytes):>11s}")
    click.echo(
        "quantized tensors: off (EDGEKIT_TENSOR_CACHE_MAX)"
        if cap is None
        else f"quantized tensors: capped at {render.size(cap)}"
    )


@cache_cmd.command("prune")
@click.option(
    "--max-size",
    metavar="SIZE",
    default=None,
    help="Keep at most SIZE (512M, 20G, 1.5GiB) in the chosen areas together, removing the "
    "least recently used entries [default: the tensor area's cap, for that area].",
)
@click.option("--area", "areas", multiple=True, metavar="AREA", help=_AREA_HELP + " [default: all but bench]")
@_JSON
def prune(max_size: str | None, areas: tuple[str, ...], as_json: bool) -> None:
    """Remove least-recently-used entries, and what killed runs left behind."""
    chosen = [cache_areas.check_area(a) for a in dict.fromkeys(areas)]
    if max_size is None:
        others = [a for a in chosen if a != tensor_cache.AREA]
        if others:
            raise EdgekitError(
                f"the {', '.join(others)} area{'s have' if len(others) > 1 else ' has'} no cap",
                "give --max-size",
            )
        cap = tensor_cache.configured_max()
        limit = cap if cap is not None else 0  # the cache is off: what it held goes
        chosen = [tensor_cache.AREA]
    else:
        limit = cache_areas.parse_size(max_size, "--max-size")
        chosen = chosen or cache_areas.default_areas()
    _report(cache_areas.prune(chosen, limit), limit, as_json)


@cache_cmd.command("clear")
@click.option("--area", "areas", multiple=True, required=True, metavar="AREA", help=_AREA_HELP)
@_JSON
def clear(areas: tuple[str, ...], as_json: bool) -> None:
    """Remove every entry of the named areas."""
    chosen = [cache_areas.check_area(a) for a in dict.fromkeys(areas)]
    _report(cache_areas.clear(chosen), None, as_json)


def _report(done: list[cache_areas.Removed], limit: int | None, as_json: bool) -> None:
    removed, freed = sum(d.removed for d in done), sum(d.freed_bytes for d in done)
    if as_json:
        render.emit_json(
            {
                "max_bytes": limit,
                "areas": [d.to_dict() for d in done],
                "removed": removed,
                "freed_bytes": freed,
            }
        )
        return
    for d in done:
        click.echo(
            f"  {d.area:10s} removed {d.removed:6d} ({render.size(d.freed_bytes)}), "
            f"left {d.entries} entries ({render.size(d.bytes)})"
        )
    click.echo(f"removed {removed} entries, {render.size(freed)}")

"""The bench results store: one JSON file per run, named by run id (which carries the device's
fingerprint), so stores from several machines merge by copying files together
(`edgekit bench import DIR`) and a report can put a laptop, a 4090 and an H100 side by side.

Default location: <edgekit cache>/bench/runs (EDGEKIT_BENCH_STORE overrides it).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from edgekit import atomic
from edgekit.errors import EdgekitError
from edgekit.paths import cache_dir

SCHEMA = "edgekit.bench/1"
_ID = re.compile(r"^[A-Za-z0-9._-]{1,120}$")


def store_dir(store: Path | str | None = None) -> Path:
    if store:
        return Path(store).expanduser()
    if env := os.environ.get("EDGEKIT_BENCH_STORE"):
        return Path(env).expanduser()
    return cache_dir() / "bench" / "runs"


def save_result(result, store: Path | str | None = None) -> Path:
    d = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    return _write(d, store_dir(store))


def _write(d: dict, directory: Path) -> Path:
    rid = d.get("id", "")
    if not _ID.match(rid):
        raise EdgekitError(f"bench result id {rid!r} is not a safe file name")
    dest = directory / f"{rid}.json"
    atomic.write_json(dest, d)
    return dest


def _valid(d) -> bool:
    return (
        isinstance(d, dict)
        and d.get("schema") == SCHEMA
        and isinstance(d.get("id"), str)
        and isinstance(d.get("batches"), list)
        and isinstance(d.get("host"), dict)
    )


def load_runs(store: Path | str | None = None) -> tuple[list[dict], list[str]]:
    """(runs, problems): every readable run in the store, oldest first; unreadable files named."""
    d = store_dir(store)
    runs: list[dict] = []
    problems: list[str] = []
    if not d.is_dir():
        return runs, problems
    for f in sorted(d.glob("*.json")):
        try:
            r = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            problems.append(f"{f.name}: unreadable ({e})")
            continue
        if not _valid(r):
            problems.append(f"{f.name}: not an {SCHEMA} result")
            continue
        runs.append(r)
    runs.sort(key=lambda r: (r.get("created", ""), r["id"]))
    return runs, problems


def import_runs(sources: list[Path | str], store: Path | str | None = None) -> dict:
    """Copy runs from other stores (directories, single run files, or JSON lists of runs) into
    this one. Runs already present (same id) are left alone."""
    dest = store_dir(store)
    have = {f.stem for f in dest.glob("*.json")} if dest.is_dir() else set()
    added, present, problems = 0, 0, []
    for src in sources:
        src = Path(src).expanduser()
        if src.is_dir():
            files = sorted(src.glob("*.json"))
        elif src.is_file():
            files = [src]
        else:
            raise EdgekitError(f"{src}: no such file or directory")
        for f in files:
            try:
                data = json.loads(f.read_text())
            except (OSError, ValueError) as e:
                problems.append(f"{f}: unreadable ({e})")
                continue
            for r in data if isinstance(data, list) else [data]:
                if not _valid(r):
                    problems.append(f"{f}: not an {SCHEMA} result")
                    continue
                if r["id"] in have:
                    present += 1
                    continue
                _write(r, dest)
                have.add(r["id"])
                added += 1
    return {"store": str(dest), "added": added, "already_present": present, "problems": problems}


def _key(r: dict, b: dict) -> tuple:
    s, st = r["subject"], r["settings"]
    return (
        s.get("model") or Path(s.get("path", "?")).name,
        s.get("format"),
        r["runtime"]["name"],
        st.get("prompt_tokens"),
        st.get("gen_tokens"),
        b["batch"],
    )


def device_label(r: dict) -> str:
    h = r["host"]
    gpus = h.get("gpus") or []
    what = gpus[0]["name"] if r.get("device") == "cuda" and gpus else h.get("cpu", {}).get("model", "?")
    return f"{h.get('label', '?')} ({what})"


def compare(runs: list[dict]) -> dict:
    """Side by side: one row per (model, format, runtime, prompt, gen, batch), one column per
    device (host fingerprint + cpu|cuda); the latest run of each pair fills the cell."""
    devices: dict[str, str] = {}
    cells: dict[tuple, dict[str, dict]] = {}
    for r in runs:  # oldest first: later runs overwrite
        dev = f"{r['host'].get('fingerprint', '?')}:{r.get('device', '?')}"
        devices[dev] = device_label(r)
        for b in r["batches"]:
            if not b.get("measured"):
                continue
            roof = b.get("roofline") or {}
            cells.setdefault(_key(r, b), {})[dev] = {
                "run": r["id"],
                "created": r.get("created"),
                "decode_tok_s": (b.get("decode_tok_s") or {}).get("median"),
                "prefill_tok_s": (b.get("prefill_tok_s") or {}).get("median"),
                "ttft_s": (b.get("ttft_s") or {}).get("median"),
                "roofline_fraction": roof.get("fraction"),
                "peak_bytes": r.get("peak_vram_bytes")
                if r.get("device") == "cuda"
                else r.get("peak_rss_bytes"),
                "load_s": r.get("load_s"),
            }
    rows = []
    for key in sorted(cells, key=lambda k: tuple(str(x) for x in k)):
        model, fmt, rt, p, g, b = key
        rows.append(
            {
                "model": model,
                "format": fmt,
                "runtime": rt,
                "prompt_tokens": p,
                "gen_tokens": g,
                "batch": b,
                "devices": cells[key],
            }
        )
    return {"devices": devices, "rows": rows}

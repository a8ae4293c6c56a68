"""Hardware targets as data: built-in TOML files, the user's TOML files, and this CPU.

A target is one kind of device times a count (`8xh100`, `2xrtx4090`) joined by an
interconnect. A user adds one by dropping NAME.toml into `edgekit paths`' targets dir.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edgekit.errors import ConfigError, EdgekitError, UnknownName
from edgekit.paths import user_targets_dir
from edgekit.profiles.cpu import detect_cpu
from edgekit.profiles.device import GIB, Device

__all__ = ["GIB", "Device", "Target", "all_devices", "device_from_toml", "get_target", "list_targets"]


@dataclass(frozen=True)
class Target:
    name: str
    device: Device
    count: int = 1
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def memory_per_device(self) -> int:
        return self.device.memory_bytes

    @property
    def total_memory(self) -> int:
        return self.device.memory_bytes * self.count

    def to_dict(self) -> dict:
        d = self.device
        return {
            "name": self.name,
            "description": d.description,
            "kind": d.kind,
            "count": self.count,
            "memory_bytes_per_device": d.memory_bytes,
            "memory_gib_per_device": round(d.memory_bytes / GIB, 3),
            "bandwidth_gbs_per_device": round(d.bandwidth_bytes_s / 1e9, 2),
            "tflops_per_device": d.tflops,
            "compute_capability": ".".join(map(str, d.compute_capability)) if d.compute_capability else None,
            "isa": list(d.isa),
            "interconnect": d.interconnect if self.count > 1 else None,
            "link_gbs": d.link_gbs if self.count > 1 else None,
            "source": d.source,
            "notes": list(d.notes) + list(self.notes),
        }


_MULTI = re.compile(r"^(\d+)\s*[x×]\s*(.+)$", re.IGNORECASE)


def get_target(spec: str) -> Target:
    """`rtx4090`, `h100`, `cpu`, `8xh100`, `2xrtx4090`, or a user-defined name."""
    spec = spec.strip().lower()
    count = 1
    if m := _MULTI.match(spec):
        count, spec = int(m.group(1)), m.group(2)
        if not 1 <= count <= 4096:
            raise EdgekitError(f"device count {count} is out of range (1-4096)")
    devices = all_devices()
    if spec == "cpu" and "cpu" not in devices:
        device = detect_cpu()
    elif spec in devices:
        device = devices[spec]
    else:
        aliases = _aliases(devices)
        alias = aliases.get(spec)
        if alias is None:
            raise UnknownName("target", spec, sorted(set(devices) | set(aliases) | {"cpu"}))
        device = devices[alias]
    if count > 1 and device.kind == "cpu":
        raise EdgekitError("a CPU target cannot be multiplied", "plan one CPU box at a time")
    name = device.name if count == 1 else f"{count}x{device.name}"
    return Target(name=name, device=device, count=count)


def all_devices() -> dict[str, Device]:
    """Built-in devices, overridden or extended by the user's TOML files."""
    devices = dict(_builtin_devices())
    udir = user_targets_dir()
    if udir.is_dir():
        for path in sorted(udir.glob("*.toml")):
            dev = device_from_toml(path)
            devices[dev.name] = dev
    return devices


def list_targets() -> list[Target]:
    """One entry per known device (the CPU detected lazily), for `edgekit targets`."""
    devs = all_devices()
    out = [Target(d.name, d) for d in devs.values()]
    if "cpu" not in devs:
        out.append(get_target("cpu"))
    return out


@functools.cache
def _builtin_devices() -> dict[str, Device]:
    out = {}
    for f in sorted(resources.files("edgekit.profiles.builtin").iterdir(), key=lambda p: p.name):
        if f.name.endswith(".toml"):
            dev = _device_from_text(f.read_text(encoding="utf-8"), f"builtin:{f.name}")
            out[dev.name] = dev
    return out


def _aliases(devices: dict[str, Device]) -> dict[str, str]:
    return {a: name for name, dev in devices.items() for a in dev.aliases}


def device_from_toml(path: Path) -> Device:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, None, f"cannot read: {e}") from None
    return _device_from_text(text, str(path))


def _device_from_text(text: str, source: str) -> Device:
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, None, f"not valid TOML ({e})") from None

    def need(key, types, positive=False):
        if key not in d:
            raise ConfigError(source, key, "missing")
        v = d[key]
        if isinstance(v, bool) or not isinstance(v, types):
            raise ConfigError(source, key, f"expected {_tname(types)}, got {v!r}")
        if positive and v <= 0:
            raise ConfigError(source, key, f"must be positive, got {v}")
        return v

    name = need("name", str).strip().lower()
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
        raise ConfigError(source, "name", f"'{name}' must be lowercase letters, digits, '.', '_' or '-'")
    kind = need("kind", str)
    if kind not in ("gpu", "cpu"):
        raise ConfigError(source, "kind", f"expected 'gpu' or 'cpu', got {kind!r}")
    mem = need("memory_gib", (int, float), positive=True)
    bw = need("bandwidth_gbs", (int, float), positive=True)
    tflops = d.get("tflops", {})
    if not isinstance(tflops, dict):
        raise ConfigError(source, "tflops", "expected a table of dtype = TFLOPS")
    for k, v in tflops.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
            raise ConfigError(source, f"tflops.{k}", f"expected a positive number, got {v!r}")
    cc = None
    if kind == "gpu":
        raw = need("compute_capability", str)
        m = re.fullmatch(r"(\d+)\.(\d+)", raw.strip())
        if not m:
            raise ConfigError(source, "compute_capability", f"expected MAJOR.MINOR like '8.9', got {raw!r}")
        cc = (int(m.group(1)), int(m.group(2)))
    for key in ("aliases", "formats_unsupported", "isa", "notes"):
        v = d.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ConfigError(source, key, "expected a list of strings")
    link = d.get("link_gbs")
    if link is not None and (isinstance(link, bool) or not isinstance(link, int | float) or link <= 0):
        raise ConfigError(source, "link_gbs", f"expected a positive number, got {link!r}")
    return Device(
        name=name,
        description=str(d.get("description", name)),
        kind=kind,
        memory_bytes=int(mem * GIB),
        bandwidth_bytes_s=float(bw) * 1e9,
        tflops={k: float(v) for k, v in tflops.items()},
        compute_capability=cc,
        isa=tuple(d.get("isa", [])),
        interconnect=d.get("interconnect"),
        link_gbs=float(link) if link is not None else None,
        formats_unsupported=tuple(d.get("formats_unsupported", [])),
        aliases=tuple(a.lower() for a in d.get("aliases", [])),
        source=source if not source.startswith("builtin:") else "builtin",
        notes=tuple(d.get("notes", [])),
    )


def _tname(types) -> str:
    if types is str:
        return "a string"
    return "a number"

"""`gguf:auto@BUDGET`: a measured mixed-precision GGUF under a byte budget.

1. Base mix: the standard llama.cpp mix (Q2_K, Q3_K_M, Q4_K_M, Q5_K_M, Q6_K, Q8_0) nearest the
   budget among those whose one-step-down / one-step-up range holds it.
2. Ladders: each quantizable tensor's standard types, by bits per weight: Q2_K Q3_K Q4_K Q5_K
   Q6_K Q8_0 F16 for rows that are a multiple of 256, else the 32-block Q4_0 Q4_1 Q5_0 Q5_1
   Q8_0 F16 (what llama.cpp falls back to).
3. Sensitivity (edgekit.quantize.sensitivity), one pass per model, importance matrix and
   calibration text, shared by every budget (cached): every tensor's importance-weighted
   quantization error at every type of its allocation ladder (the bytes looked up in and
   stored to the tensor cache), and the KLD of each tensor group (a role over a quarter of the
   layers, the token embedding, the output; MoE expert tensors by role too) moved alone from
   the reference to each of two probe types (Q3_K and Q5_K, or Q4_0 and Q5_0 for rows that
   are not a multiple of 256), on a calibration slice disjoint from the evaluation text.
4. Allocation: each tensor's whole ladder is priced: its weighted error at each type times its
   group's KLD per unit of error (least squares through the reference over the group's probes;
   at least half its role's median). Every tensor starts at its cheapest type; the upgrades
   are made convex per tensor (an upgrade that gains more per byte than the one before it is
   merged with it) and taken greedily by KLD gained per byte while the file fits the budget,
   an upgrade that does not fit skipped for the next ones (the Lagrangian greedy of a
   multiple-choice knapsack: optimal up to the last upgrade that did not fit); bytes left over
   (upgrades priced as no gain) go to the best upgrades by weighted error removed per byte,
   so the file lands at the budget.
5. Build: edgekit's one-pass converter with those types (the tensor cache serves the tensors
   other builds quantized), laid out as llama-quantize lays it out, and the recipe written
   beside it as a --tensor-type-file (edgekit.quantize.gguf_recipe): `llama-quantize
   --tensor-type-file RECIPE --imatrix IMATRIX REFERENCE.gguf OUT.gguf BASE` gives the same
   bytes.

Budgets: `4.9bpw` (bits per weight as the manifest counts them: 8 x tensor bytes / weights) or
a file size (`120MB`, `110MiB`, `5GiB`, `5GB`, bytes). Only standard ggml types are used, so
every GGUF runtime loads the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.gguf_io import ggml_types
from edgekit.models.arch import Arch, Tensor
from edgekit.quantize.gguf_mix import assign_types, is_quantizable

K_LADDER = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "F16")
LEGACY_LADDER = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16")
BASES = ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")
WINDOW, WINDOWS = 256, 2  # the sensitivity slice: 2 windows of 256 calibration tokens, one batch
SPANS = 4  # each role's layers are measured as this many contiguous groups
PROBES_K = ("Q3_K", "Q5_K")  # the probe types of a group: rows that are a multiple of 256
PROBES_LEGACY = ("Q4_0", "Q5_0")  # and the others
_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
# metadata of a GGUF besides its tensors, for a budget given as a file size before the file
# exists (the vocabulary mostly); the build uses the reference file's own figure
HEADER_GUESS = 4 * 1024**2
# what llama-quantize's layout adds to the reference's metadata (quantize.imatrix.* keys, file_type
# moved, the data section's alignment): kept free under a budget given as a file size
HEADER_MARGIN = 4096
METHOD = (
    "every type priced by its importance-weighted error x its group's KLD per unit of error, "
    "measured on the fake-quantized llama.cpp reference with each group (a role over a quarter of "
    "the layers, embedding, output) alone at two probe types"
)


@dataclass(frozen=True)
class Budget:
    spelling: str  # canonical: "4.9bpw", "110mib"
    bpw: float | None = None
    file_bytes: int | None = None

    def describe(self) -> str:
        return f"{self.bpw:g} bits per weight" if self.bpw is not None else _size(self.file_bytes or 0)


def parse_budget(text: str) -> Budget:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(bpw|b|kb|mb|gb|kib|mib|gib)?\s*", text.lower())
    if not m:
        raise EdgekitError(
            f"gguf:auto budget {text!r}: expected bits per weight or a file size",
            "e.g. gguf:auto@4.9bpw, gguf:auto@110MiB, gguf:auto@5GiB",
        )
    value, unit = float(m.group(1)), m.group(2) or "b"
    if value <= 0:
        raise EdgekitError(f"gguf:auto budget {text!r} is not positive")
    if unit == "bpw":
        return Budget(f"{_number(value)}bpw", bpw=value)
    if unit == "b":  # a byte count: whole bytes, spelled without a unit
        if not value.is_integer():
            raise EdgekitError(f"gguf:auto budget {text!r}: a byte count is a whole number")
        return Budget(str(int(value)), file_bytes=int(value))
    return Budget(f"{_number(value)}{unit}", file_bytes=int(value * _UNITS[unit]))


def _number(value: float) -> str:
    """A decimal without an exponent (the spelling parses back to the same budget)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def ladder(t: Tensor) -> list[str]:
    cols = t.shape[0]
    lad = K_LADDER if cols % 256 == 0 else LEGACY_LADDER
    return [ty for ty in lad if cols % ggml_types.get(ty).block == 0]


def quantizable(tensors: Sequence[Tensor]) -> list[Tensor]:
    return [t for t in tensors if is_quantizable(t)]


def _size(n: int | float) -> str:
    return f"{n / 1024**2:.1f} MiB" if n < 1024**3 else f"{n / 1024**3:.2f} GiB"


class Sizes:
    """Bytes of a mix of `tensors`: the quantizable ones by type, the rest F32."""

    def __init__(self, tensors: Sequence[Tensor], header: int = HEADER_GUESS):
        self.tensors = list(tensors)
        self.q = quantizable(self.tensors)
        qnames = {t.name for t in self.q}
        self.fixed = sum(_padded(t.shape, "F32") for t in self.tensors if t.name not in qnames)
        self.fixed_raw = sum(
            ggml_types.tensor_nbytes(t.shape, "F32") for t in self.tensors if t.name not in qnames
        )
        self.params = sum(math.prod(t.shape) for t in self.tensors)
        self.header = header

    def nbytes(self, t: Tensor, ty: str) -> int:
        return ggml_types.tensor_nbytes(t.shape, ty)

    def totals(self, types: Mapping[str, str]) -> tuple[int, int]:
        """(tensor bytes, tensor bytes padded to the file's alignment) of a mix."""
        raw = self.fixed_raw + sum(self.nbytes(t, types[t.name]) for t in self.q)
        padded = self.fixed + sum(_padded(t.shape, types[t.name]) for t in self.q)
        return raw, padded

    def measure(self, types: Mapping[str, str]) -> tuple[int, float]:
        """(file bytes, bits per weight) of a mix."""
        raw, padded = self.totals(types)
        return self.header + padded, 8.0 * raw / self.params

    def fits(self, raw: int, padded: int, budget: Budget) -> bool:
        if budget.bpw is not None:
            return 8.0 * raw / self.params <= budget.bpw + 1e-9
        return self.header + padded <= (budget.file_bytes or 0)

    def within(self, types: Mapping[str, str], budget: Budget) -> bool:
        return self.fits(*self.totals(types), budget)

    def check_reachable(self, budget: Budget, fmt_id: str) -> None:
        lo = self.measure({t.name: ladder(t)[0] for t in self.q})
        hi = self.measure({t.name: "F16" for t in self.q})
        value = budget.bpw if budget.bpw is not None else budget.file_bytes
        k = 1 if budget.bpw is not None else 0
        if value is None or not lo[k] <= value <= hi[k] + 1e-9:
            where = "below what any mix reaches" if value is not None and value < lo[k] else "above F16"
            raise EdgekitError(
                f"{fmt_id}: the budget ({budget.describe()}) is {where}: this model's mixes span "
                f"{lo[1]:.2f}-{hi[1]:.2f} bits per weight ({_size(lo[0])}-{_size(hi[0])})"
            )


def _padded(shape: tuple[int, ...], ty: str) -> int:
    n = ggml_types.tensor_nbytes(shape, ty)
    return (n + 31) // 32 * 32


def choose_base(tensors: Sequence[Tensor], arch: Arch, sizes: Sizes, budget: Budget, imatrix: bool) -> str:
    """The standard mix nearest the budget whose one-step range holds it."""
    best: tuple[float, str] | None = None
    for mix in BASES:
        base = base_types(tensors, arch, mix, imatrix)
        lo, hi = _shift(sizes, base, -1), _shift(sizes, base, +1)
        k = 1 if budget.bpw is not None else 0
        value = budget.bpw if budget.bpw is not None else budget.file_bytes
        assert value is not None
        mid = sizes.measure(base)[k]
        if sizes.measure(lo)[k] <= value <= sizes.measure(hi)[k]:
            d = abs(math.log(value / mid))
            if best is None or d < best[0]:
                best = (d, mix)
    return best[1] if best else ("Q2_K" if _below_all(sizes, budget) else "Q8_0")


def _below_all(sizes: Sizes, budget: Budget) -> bool:
    k = 1 if budget.bpw is not None else 0
    value = budget.bpw if budget.bpw is not None else budget.file_bytes
    return value is not None and value < sizes.measure({t.name: "Q4_K" for t in sizes.q})[k]


def base_types(tensors: Sequence[Tensor], arch: Arch, mix: str, imatrix: bool) -> dict[str, str]:
    """The mix's type of each quantizable tensor, on its ladder (a type off the ladder, such
    as Q6_K's Q8_0 fallback, is already the 32-block one)."""
    all_types = assign_types(tensors, mix, arch, has_imatrix=imatrix)
    out = {}
    for t in quantizable(tensors):
        ty, lad = all_types[t.name], ladder(t)
        if ty not in lad:  # e.g. Q4_0 for a 256-multiple in a legacy mix: the nearest rung by size
            bpw = ggml_types.tensor_nbytes(t.shape, ty)
            ty = min(lad, key=lambda x: abs(ggml_types.tensor_nbytes(t.shape, x) - bpw))
        out[t.name] = ty
    return out


def _shift(sizes: Sizes, base: Mapping[str, str], step: int) -> dict[str, str]:
    out = {}
    for t in sizes.q:
        lad = ladder(t)
        i = min(max(lad.index(base[t.name]) + step, 0), len(lad) - 1)
        out[t.name] = lad[i]
    return out


@dataclass
class Option:
    type: str
    nbytes: int
    kld: float  # predicted KLD change from the base
    err: float = 0.0  # the tensor's weighted quantization error at this type (ties, the fill)


def noise(t: Tensor, sizes: Sizes, ty: str) -> float:
    """The prior: a tensor's quantization error power, its weights times 2^-2(bits per weight)."""
    n = math.prod(t.shape)
    return n * 2.0 ** (-2.0 * 8.0 * sizes.nbytes(t, ty) / n)


def allocate(sizes: Sizes, options: Mapping[str, list[Option]], budget: Budget) -> dict[str, str]:
    """Each tensor's type under the budget (module docstring, step 4). `options[name]`: the
    tensor's whole ladder, cheapest first, with the predicted KLD of each type.

    1. The greedy: every tensor at its cheapest type; the upgrades along each tensor's lower
       convex hull taken by KLD gained per byte while the mix fits the budget (one that does
       not fit is skipped, and the tensor's later upgrades with it).
    2. The fill: bytes left over (upgrades predicted to gain nothing: a measured move within
       the slice's noise) go one step at a time to the upgrade that removes the most weighted
       quantization error (`Option.err`) per byte, while one fits, so the file lands at the budget."""
    chosen: dict[str, str] = {}
    upgrades: list[tuple[float, int, str, str]] = []  # (-gain per byte, order, name, type)
    for name, opts in options.items():
        hull = [opts[0]]
        for o in opts[1:]:
            hull.append(o)
            while len(hull) >= 3 and _ratio(hull[-3], hull[-2]) <= _ratio(hull[-2], hull[-1]):
                del hull[-2]  # the middle one is not on the lower convex hull
        chosen[name] = hull[0].type
        for i in range(1, len(hull)):
            r = _ratio(hull[i - 1], hull[i])
            if r > 0:
                upgrades.append((-r, i, name, hull[i].type))
    raw, padded = sizes.totals(chosen)
    if not sizes.fits(raw, padded, budget):
        raise EdgekitError(f"the budget ({budget.describe()}) is below the cheapest mix of every tensor")
    by_name = {t.name: t for t in sizes.q}

    def move(name: str, ty: str) -> bool:
        """Take `name` to `ty` if the mix still fits."""
        nonlocal raw, padded
        t, old = by_name[name], chosen[name]
        r = raw + sizes.nbytes(t, ty) - sizes.nbytes(t, old)
        p = padded + _padded(t.shape, ty) - _padded(t.shape, old)
        if not sizes.fits(r, p, budget):
            return False
        raw, padded, chosen[name] = r, p, ty
        return True

    upgrades.sort()
    level = dict.fromkeys(chosen, 0)
    for _, i, name, ty in upgrades:
        if level[name] == i - 1 and move(name, ty):
            level[name] = i  # else an earlier upgrade did not fit: the later ones cannot follow
    # the fill: each tensor's next wider type, the prior's best gain per byte first
    nexts: list[tuple[float, str, str]] = []
    for name, opts in options.items():
        if nxt := _next_up(by_name[name], opts, chosen[name], sizes):
            nexts.append(nxt)
    while nexts:
        nexts.sort()
        for k, (_, name, ty) in enumerate(nexts):
            if move(name, ty):
                del nexts[k]
                if nxt := _next_up(by_name[name], options[name], ty, sizes):
                    nexts.append(nxt)
                break
        else:
            break
    return chosen


def _next_up(t: Tensor, opts: Sequence[Option], ty: str, sizes: Sizes) -> tuple[float, str, str] | None:
    """(-prior gain per byte, name, type) of the tensor's next wider type, if any."""
    here = next(o for o in opts if o.type == ty)
    for o in opts:
        if o.nbytes > here.nbytes:
            gain = (here.err - o.err) / (o.nbytes - here.nbytes)
            return (-gain, t.name, o.type)
    return None


def _ratio(a: Option, b: Option) -> float:
    return (a.kld - b.kld) / max(b.nbytes - a.nbytes, 1)


def alloc_ladder(t: Tensor) -> list[str]:
    """Every standard type the tensor's rows take, by size: the k-quants and the 32-blocks
    (a weight that came from a Q4_1 file is all but lossless at Q4_1 and not at Q4_K)."""
    cols = t.shape[0]
    types = {ty for ty in K_LADDER + LEGACY_LADDER if cols % ggml_types.get(ty).block == 0}
    return sorted(types, key=lambda ty: (ggml_types.tensor_nbytes(t.shape, ty), ty))


def probes(t: Tensor) -> list[str]:
    """The two types a tensor's group is measured at."""
    return list(PROBES_K if t.shape[0] % 256 == 0 else PROBES_LEGACY)


def sensitivity_groups(q: Sequence[Tensor], spans: int = SPANS) -> dict[str, list[str]]:
    """The measured groups: each block role over `spans` contiguous ranges of layers (a
    stacked expert tensor is one tensor of its role), each other tensor alone."""
    layers = sorted({_layer(t.name) for t in q if _layer(t.name) >= 0})
    span_of: dict[int, tuple[int, int]] = {}
    n = max(1, min(spans, len(layers)))
    for i in range(n):
        part = layers[len(layers) * i // n : len(layers) * (i + 1) // n]
        for layer in part:
            span_of[layer] = (part[0], part[-1])
    out: dict[str, list[str]] = {}
    for t in q:
        layer = _layer(t.name)
        if layer < 0:
            g = t.name
        else:
            lo, hi = span_of[layer]
            g = f"blk.{lo}-{hi}.{_role(t.name)}"
        out.setdefault(g, []).append(t.name)
    return out


def options_from(sens: Any, sizes: Sizes) -> dict[str, list[Option]]:
    """Each tensor's choices with their predicted KLD: the tensor's weighted quantization
    error at each type (`sens.errors`) times its group's scale, the KLD per unit of that
    error fitted to the group's measured moves (`Sensitivity.scales`); the scale is at least
    half its role's median (a group measured as no loss does not make every narrower type
    free). Options no better than a cheaper one (in KLD, then error) are dropped."""
    group_scale = sens.scales()
    scale = {n: group_scale[g] for g, names in sens.groups.items() for n in names}
    by_role: dict[str, list[float]] = {}
    for name, sc in scale.items():
        by_role.setdefault(_role(name), []).append(sc)
    out: dict[str, list[Option]] = {}
    for t in sizes.q:
        e = sens.errors[t.name]
        sc = max(scale[t.name], 0.5 * statistics.median(by_role[_role(t.name)]))
        opts = sorted(
            (Option(ty, sizes.nbytes(t, ty), sc * err, err) for ty, err in e.items()),
            key=lambda o: (o.nbytes, o.kld, o.err),
        )
        kept = [opts[0]]
        for o in opts[1:]:
            if o.nbytes > kept[-1].nbytes and (o.kld, o.err) < (kept[-1].kld, kept[-1].err):
                kept.append(o)
        out[t.name] = kept
    return out


def _role(name: str) -> str:
    return re.sub(r"^blk\.\d+\.", "", name)


def plan_types(arch: Arch, budget: Budget, fmt_id: str) -> dict[str, str]:
    """A planner's estimate (no measurement): the same allocation with the prior (`noise`)
    as every tensor's cost."""
    tensors = arch.tensors()
    sizes = Sizes(tensors)
    sizes.check_reachable(budget, fmt_id)
    opts = {
        t.name: sorted(
            (Option(ty, sizes.nbytes(t, ty), noise(t, sizes, ty), noise(t, sizes, ty)) for ty in ladder(t)),
            key=lambda o: o.nbytes,
        )
        for t in sizes.q
    }
    types = allocate(sizes, opts, budget)
    return {t.name: types.get(t.name, "F32") for t in tensors}


def build_auto(
    model: Any,
    budget: Budget,
    fmt_id: str,
    out_dir: Path,
    imatrix: str = "auto",
    calibration: str | None = None,
    threads: int | None = None,
    force: bool = False,
    progress: Any = None,
) -> Any:
    from edgekit.artifact import (
        Manifest,
        build_lock,
        current_artifact,
        describe_source,
        publish,
        safe_stem,
        sha256_file,
        staging_path,
        tool_versions,
    )
    from edgekit.atomic import atomic_path
    from edgekit.gguf_io.reader import open_reader
    from edgekit.models.source import open_checkpoint
    from edgekit.progress import Progress
    from edgekit.quantize import gguf_recipe
    from edgekit.quantize.gguf import FILE_TYPE, Recipe, convert
    from edgekit.quantize.gguf_build import importance_matrix
    from edgekit.quantize.unquantized import reference_gguf
    from edgekit.text import default_calibration_text, read_text_file

    progress = progress or Progress()
    ck = open_checkpoint(model) if isinstance(model, str) else model
    arch = ck.entry.arch
    out_dir = Path(out_dir)
    stem = safe_stem(ck.entry.name)
    suffix = "" if imatrix == "none" else "-imat"
    dest = out_dir / f"{stem}-auto-{budget.spelling}{suffix}.gguf"
    recipe_path = dest.with_name(dest.name.removesuffix(".gguf") + gguf_recipe.RECIPE_SUFFIX)
    t0 = time.perf_counter()
    # the budget is checked against the reference's own tensors and metadata before anything
    # is written beside the artifact
    ref = reference_gguf(ck, progress.tensor)
    r = open_reader(ref)
    tensors = [Tensor(t.name, tuple(int(d) for d in t.shape), "", _layer(t.name)) for t in r.tensors]
    data_bytes = sum((int(t.n_bytes) + 31) // 32 * 32 for t in r.tensors)
    header = ref.stat().st_size - data_bytes  # the reference's own metadata
    sizes = Sizes(tensors, header=max(header, 0) + HEADER_MARGIN)
    sizes.check_reachable(budget, fmt_id)
    with build_lock(dest):
        key = {"budget": budget.spelling, "imatrix_mode": imatrix, "calibration": calibration}
        existing = current_artifact(dest, fmt_id, ck.revision, {"auto": key})
        if existing and not force and recipe_path.is_file():
            progress.say(f"up to date: {dest}")
            return existing
        im, im_path = importance_matrix(ck, imatrix, calibration, progress)
        imp = im.importances() if im else None
        base_mix = choose_base(tensors, arch, sizes, budget, im is not None)
        text = read_text_file(calibration, "calibration text") if calibration else default_calibration_text()
        t_sens = time.perf_counter()
        sens, sens_cached = _sensitivity(ref, sizes.q, imp, im_path, text, threads, progress)
        sens_wall = round(time.perf_counter() - t_sens, 1)
        options = options_from(sens, sizes)
        types = allocate(sizes, options, budget)
        progress.say(f"converting {ck.entry.name} to the measured mix (base {base_mix})")
        staging = staging_path(dest)
        raw = dest.with_name(f".{dest.name}.raw")
        try:
            result = convert(
                ck,
                raw,
                Recipe(mix=base_mix, overrides=gguf_recipe.overrides(types), imatrix=imp, threads=threads),
                progress.tensor,
            )
            imatrix_file = None
            extra: list[tuple[str, int | str]] = []
            if im_path is not None:
                imatrix_file = out_dir / f"{stem}.imatrix.gguf"
                if im_path.resolve() != imatrix_file.resolve():
                    with atomic_path(imatrix_file) as tmp:
                        tmp.write_bytes(Path(im_path).read_bytes())
                extra = gguf_recipe.imatrix_kv(imatrix_file, imatrix_file.name)
            gguf_recipe.relayout(raw, staging, FILE_TYPE[base_mix], extra)
        finally:
            raw.unlink(missing_ok=True)
        if budget.file_bytes is not None and (n := staging.stat().st_size) > budget.file_bytes:
            staging.unlink(missing_ok=True)
            raise EdgekitError(
                f"{fmt_id}: the mix came to {n:,} bytes, over the budget "
                f"({budget.file_bytes:,}): its metadata outgrew HEADER_MARGIN"
            )
        gguf_recipe.write_recipe(recipe_path, types)
        predicted = sum(o.kld for t in sizes.q for o in options[t.name] if o.type == types[t.name])
        build_seconds = round(time.perf_counter() - t0, 1)
        command = " ".join(
            ["llama-quantize", "--tensor-type-file", recipe_path.name]
            + (["--imatrix", imatrix_file.name] if imatrix_file else [])
            + [ref.name, dest.name, base_mix]
        )
        counts: dict[str, int] = {}
        for t in result.tensors:
            counts[t.type] = counts.get(t.type, 0) + 1
        manifest = Manifest(
            format=fmt_id,
            file=dest.name,
            layout="gguf",
            size_bytes=staging.stat().st_size,
            sha256=sha256_file(staging),
            bits_per_weight=round(result.bits_per_weight, 4),
            source=describe_source(ck),
            recipe={
                "mix": base_mix,
                "auto": key,
                "tensor_type_file": recipe_path.name,
                "reproduce": command,
                "imatrix": imatrix_file.name if imatrix_file else None,
                "imatrix_summary": im.summary() if im else None,
                "calibration": calibration or ("edgekit:calibration.txt" if im else None),
            },
            tool_versions=tool_versions("llama-cpp-python", "gguf", "numpy", "transformers", "torch"),
            details={
                "n_params": result.n_params,
                "tensor_types": dict(sorted(counts.items())),
                "tensors": [{"name": t.name, "type": t.type, "shape": list(t.shape)} for t in result.tensors],
                "sensitivity": {
                    "base": base_mix,
                    "predicted_kld": round(predicted, 6),
                    "positions": sens.positions,
                    "groups": len(sens.groups),
                    "evaluations": sens.evaluations,
                    # the pass as measured (when it was), and what it cost this build: its wall,
                    # or the cache look-up when another budget measured it already
                    "seconds": sens.seconds,
                    "errors_seconds": sens.errors_seconds,
                    "forward_seconds": sens.forward_seconds,
                    "cached": sens_cached,
                    "wall_seconds": sens_wall,
                    "share_of_build": round(sens_wall / build_seconds, 3) if build_seconds > 0 else None,
                    "tensor_cache": sens.tensor_cache,
                    "method": METHOD,
                },
                "build_seconds": build_seconds,
                "tensor_cache": result.tensor_cache.to_dict() if result.tensor_cache else None,
            },
        )
        return publish(staging, dest, manifest)


def _layer(name: str) -> int:
    m = re.match(r"blk\.(\d+)\.", name)
    return int(m.group(1)) if m else -1


def _sensitivity(ref, q, imp, im_path, text, threads, progress):
    """(the measurement, whether it came from the cache), cached by what decides it: the
    reference, the ladders, groups and probes, the importance matrix and the slice, not the
    budget (every budget of the model shares one pass)."""
    from edgekit import atomic
    from edgekit.paths import cache_dir
    from edgekit.quantize import sensitivity

    ladders = {t.name: alloc_ladder(t) for t in q}
    groups = sensitivity_groups(q)
    probe = {t.name: probes(t) for t in q}
    h = hashlib.sha256(f"sensitivity 2|{ref.name}|{ref.stat().st_size}|{WINDOW}x{WINDOWS}|".encode())
    for part in (ladders, groups, probe):
        h.update(json.dumps(part, sort_keys=True).encode())
    h.update(atomic.sha256_file(im_path).encode() if im_path else b"no imatrix")
    h.update(text.encode())
    path = cache_dir() / "sensitivity" / f"{h.hexdigest()[:20]}.json"
    with atomic.locked(path):
        if atomic.intact(path):
            progress.say(f"sensitivity: cached {path.name}")
            return sensitivity.Sensitivity.from_dict(json.loads(path.read_text())), True
        n = sum(len(v) for v in ladders.values())
        progress.say(
            f"sensitivity: {len(q)} tensors at {n} types; {len(groups)} groups x 2 probes on "
            f"{WINDOWS} calibration windows of {WINDOW}"
        )
        sens = sensitivity.measure(
            ref, ladders, groups, probe, imp, text, WINDOW, WINDOWS, threads, progress.chunk
        )
        atomic.write_json(path, sens.to_dict())
        atomic.seal(path)
        progress.say(
            f"sensitivity: {sens.evaluations} evaluations, {sens.seconds:.0f} s (errors "
            f"{sens.errors_seconds:.0f} s, forward passes {sens.forward_seconds:.0f} s)"
        )
        return sens, False

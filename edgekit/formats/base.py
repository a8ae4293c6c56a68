"""What every format family answers, and the registry that finds them.

A format family is one class (one module under ``edgekit/formats/``) that answers every
question about its formats: which ids it accepts, what each tensor costs, how well a device
runs it, which runtime serves it, whether a checkpoint can be built into it and how, what the
manifest of a built artifact says, and what the CLI prints about one. Nothing outside the
family modules compares family names: code asks ``fmt.impl``.

A family registers itself by its class argument::

    class F16Safetensors(FormatFamily, family="f16st"):
        ...

and a third party registers one from its own package through the entry-point group
``edgekit.formats`` (a module that defines such a class, loaded on first use).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from edgekit.errors import EdgekitError, UnknownName
from edgekit.plugins import import_group

if TYPE_CHECKING:
    from edgekit.artifact import Artifact, Manifest
    from edgekit.models.arch import Arch, Tensor
    from edgekit.models.catalogue import ModelEntry
    from edgekit.profiles.target import Device
    from edgekit.progress import Progress

ENTRY_POINT_GROUP = "edgekit.formats"

# roles whose weights the weight-only producers (GPTQ/AWQ/FP8, ONNX MatMulNBits) quantize;
# everything else (embeddings, lm_head, norms, routers, biases) stays in the wide type
QUANTIZED_ROLES = frozenset({"attn", "ffn", "expert", "shared_expert"})

SUPPORT_LEVELS = ("native", "slow", "no")


@dataclass(frozen=True)
class TensorPlan:
    name: str
    role: str
    shape: tuple[int, ...]
    type: str  # ggml type name for GGUF, a storage label otherwise ("int4-g128", "fp8", "bf16")
    nbytes: int


@dataclass(frozen=True)
class Support:
    level: str  # native | slow | no
    reason: str


@dataclass(frozen=True)
class Format:
    id: str
    family: str  # the registered family's name; ask `impl`, never compare it
    variant: str
    description: str
    runtimes: tuple[str, ...]  # runtimes that load it, preferred first
    compute: str  # matmul dtype on a GPU: fp16 | fp8 | int8
    bits: int = 16
    group: int = 0
    symmetric: bool = True

    @property
    def impl(self) -> FormatFamily:
        return family(self.family)

    @property
    def is_reference(self) -> bool:
        """The unquantized checkpoint itself: what candidates are measured against."""
        return self.impl.is_reference

    def tensor_plan(self, arch: Arch) -> list[TensorPlan]:
        return self.impl.tensor_plan(self, arch)

    def weight_bytes(self, arch: Arch) -> int:
        return sum(t.nbytes for t in self.tensor_plan(arch))

    def bits_per_weight(self, arch: Arch) -> float:
        plan = self.tensor_plan(arch)
        n = sum(math.prod(t.shape) for t in plan)
        return 8.0 * sum(t.nbytes for t in plan) / n

    def runtime_for(self, device_kind: str) -> str:
        """The runtime that serves this format on a device kind ("cpu" | "gpu")."""
        return self.impl.runtime_for(self, device_kind)


@dataclass(frozen=True)
class BuildOptions:
    """What the user may say about a build; each family declares which of these it takes
    (`FormatFamily.options`) and refuses the others with one line."""

    calibration: str | None = None  # a text file; None = edgekit's own calibration text
    imatrix: str = "auto"  # auto | none | an imatrix GGUF file
    tensor_types: tuple[str, ...] = ()  # REGEX=TYPE overrides
    threads: int | None = None
    samples: int | None = None  # calibration windows at most
    force: bool = False

    def given(self) -> set[str]:
        """Names of the options that differ from their defaults."""
        defaults = BuildOptions()
        return {f.name for f in fields(self) if getattr(self, f.name) != getattr(defaults, f.name)}


# what each option is called on the command line, for refusals
OPTION_FLAGS = {
    "calibration": "--calibration",
    "imatrix": "--imatrix",
    "tensor_types": "--tensor-type",
    "threads": "--threads",
    "samples": "--samples",
    "force": "--force",
}


@dataclass
class ArtifactLines:
    """What `edgekit quantize --format` prints about a built artifact, after its path line."""

    lines: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class FormatFamily:
    """One family of formats. Subclass with ``family="name"`` to register it."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # how its artifacts are stored: "file" (one file) or "directory"
    storage: ClassVar[str] = "directory"
    # True for the unquantized checkpoint (the reference), which is never a candidate
    is_reference: ClassVar[bool] = False
    # which BuildOptions fields it takes (force is always taken)
    options: ClassVar[frozenset[str]] = frozenset()
    # where it is listed: built-ins 10..60, everything else after them
    order: ClassVar[int] = 100

    def __init_subclass__(cls, family: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if family:
            cls.name = family
            register(cls())

    # ---- ids -----------------------------------------------------------------------

    def formats(self) -> list[Format]:
        """The formats it offers for planning (`edgekit plan`, `edgekit formats`)."""
        return []

    def parse(self, variant: str, spec: str) -> Format | None:
        """A format of this family that is not in `formats()` (e.g. another group size), or
        None. Raise EdgekitError for an id of this family that is malformed."""
        return None

    def normalise(self, variant: str) -> str:
        """The canonical spelling of a variant (case)."""
        return variant.lower()

    # ---- size, devices, runtimes -----------------------------------------------------

    def tensor_plan(self, fmt: Format, arch: Arch) -> list[TensorPlan]:
        raise NotImplementedError

    def support(self, fmt: Format, device: Device) -> Support:
        return Support("no", f"{self.name} declares no device support")

    def runtime_for(self, fmt: Format, device_kind: str) -> str:
        return fmt.runtimes[0]

    def ladder(self, device: Device) -> list[Format]:
        """Its formats that join the main job's default candidate ladder on this device."""
        return []

    def refuse_on(self, fmt: Format, device: Device, target_name: str) -> None:
        """Raise a one-line error, with what would work instead, when a user names `fmt`
        for a device it does not run on."""
        s = self.support(fmt, device)
        if s.level == "no":
            raise EdgekitError(f"{fmt.id} does not run on {target_name}: {s.reason}")

    # ---- building ------------------------------------------------------------------

    def unbuildable(self, fmt: Format, entry: ModelEntry) -> str:
        """Why `fmt` cannot be made of the model `entry` describes (architecture, shapes, a
        missing producer), or "" when it can. Cheap: asked before anything is downloaded,
        imported or loaded."""
        return f"edgekit has no producer for {self.name} formats"

    def refuse_build(self, fmt: Format, entry: ModelEntry) -> None:
        """Raise the one-line error (with what works instead) when `fmt` cannot be made of
        the model; the same facts as `unbuildable`."""
        why = self.unbuildable(fmt, entry)
        if why:
            raise EdgekitError(f"{fmt.id} cannot be built for {entry.name}: {why}", "see `edgekit formats`")

    def takes_calibration(self, fmt: Format) -> bool:
        return "calibration" in self.options

    def check_options(self, fmt: Format, opts: BuildOptions) -> None:
        bad = sorted(opts.given() - self.options - {"force"})
        if bad:
            flags = ", ".join(OPTION_FLAGS[b] for b in bad)
            takers = [f.name for f in families() if set(bad) <= f.options]
            hint = f"{flags} apply to {', '.join(takers)} formats" if takers else None
            raise EdgekitError(f"{fmt.id}: {flags} do not apply to {self.name} formats", hint)

    def build(
        self,
        checkpoint: Any,
        fmt: Format,
        out_dir: Path,
        opts: BuildOptions,
        progress: Progress | None = None,
    ) -> Artifact:
        raise EdgekitError(f"{fmt.id} is not something edgekit builds")

    # ---- artifacts -----------------------------------------------------------------

    def describe(self, manifest: Manifest) -> ArtifactLines:
        """The lines the CLI prints about a built artifact."""
        return ArtifactLines([("sha256", manifest.sha256), ("format", manifest.format)])

    def detect(self, path: Path) -> str | None:
        """The format id of a file or directory of this family found on disk (with no edgekit
        manifest), or None when it is not one of this family's."""
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.name,
            "description": self.description,
            "storage": self.storage,
            "reference": self.is_reference,
            "build_options": sorted(OPTION_FLAGS[o] for o in self.options),
            "formats": [format_dict(f) for f in self.formats()],
        }


def format_dict(f: Format) -> dict[str, Any]:
    return {
        "id": f.id,
        "family": f.family,
        "variant": f.variant,
        "description": f.description,
        "runtimes": list(f.runtimes),
        "compute": f.compute,
        "bits": f.bits,
        "group": f.group,
        "symmetric": f.symmetric,
    }


# ---- the registry ------------------------------------------------------------------------

_FAMILIES: dict[str, FormatFamily] = {}


def register(impl: FormatFamily) -> FormatFamily:
    """Register a family instance (done by the class argument; call it for an instance made
    otherwise). A later registration of the same name replaces the earlier one."""
    if not impl.name or ":" in impl.name or impl.name != impl.name.lower():
        raise ValueError(f"format family name {impl.name!r}: lower case, no ':'")
    _FAMILIES[impl.name] = impl
    return impl


def unregister(name: str) -> None:
    _FAMILIES.pop(name, None)


def _load_entry_points() -> None:
    import_group(ENTRY_POINT_GROUP, "format family")


def families() -> list[FormatFamily]:
    """Every registered family: built-ins first (by `order`), then in registration order."""
    _load_entry_points()
    ranked = sorted(enumerate(_FAMILIES.values()), key=lambda p: (p[1].order, p[0]))
    return [f for _, f in ranked]


def family(name: str) -> FormatFamily:
    families()
    try:
        return _FAMILIES[name]
    except KeyError:
        raise UnknownName("format family", name, list(_FAMILIES)) from None


def registry() -> dict[str, Format]:
    """Every format offered for planning, by id."""
    return {f.id: f for fam in families() for f in fam.formats()}


def default_formats() -> list[Format]:
    """The formats edgekit plans: every registered family's offered formats."""
    return list(registry().values())


def get_format(spec: str) -> Format:
    """The format named `spec` ("gguf:Q4_K_M", "gptq:w4g64", "bf16"); case-insensitive."""
    s = spec.strip()
    name, sep, variant = s.partition(":")
    name = name.lower()
    fams = {f.name: f for f in families()}
    reg = registry()
    impl = fams.get(name)
    if impl is not None:
        key = f"{name}:{impl.normalise(variant)}" if sep else name
        if key in reg:
            return reg[key]
        if sep:
            found = impl.parse(impl.normalise(variant), spec)
            if found is not None:
                return found
    elif s.lower() in reg:
        return reg[s.lower()]
    raise UnknownName("format", spec, list(reg))


def support(fmt: Format, device: Device) -> Support:
    """How a device runs a format, from its compute capability or CPU features."""
    if fmt.id in device.formats_unsupported or fmt.family in device.formats_unsupported:
        return Support("no", f"{device.name} lists {fmt.id} as unsupported")
    return fmt.impl.support(fmt, device)


def default_ladder(device: Device) -> list[Format]:
    """The main job's candidates on a device: each family's ladder for it."""
    return [f for fam in families() for f in fam.ladder(device)]


def detect_format(path: Path | str) -> str | None:
    """The format id of a checkpoint directory or model file found on disk, from its own files
    (no edgekit manifest needed); None when no family recognises it."""
    p = Path(path)
    for fam in families():
        found = fam.detect(p)
        if found:
            return found
    return None


def build(
    checkpoint: Any,
    fmt: Format,
    out_dir: Path | str,
    opts: BuildOptions | None = None,
    progress: Progress | None = None,
) -> Artifact:
    """Build `fmt` of an opened Checkpoint through its family's producer."""
    opts = opts or BuildOptions()
    impl = fmt.impl
    if impl.is_reference:
        raise EdgekitError(f"{fmt.id} is a reference format, not something to quantize to")
    impl.check_options(fmt, opts)
    impl.refuse_build(fmt, checkpoint.entry)
    return impl.build(checkpoint, fmt, Path(out_dir), opts, progress)


def quantized_matrix(t: Tensor) -> bool:
    """Whether a weight-only producer quantizes this tensor."""
    return t.role in QUANTIZED_ROLES and t.is_matrix

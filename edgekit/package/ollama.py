"""Package a GGUF artifact for Ollama so it behaves like the official model: the family's
template (Qwen3 keeps tools and the thinking toggle), its sampling defaults and stop tokens,
and the license. Then create it — with the `ollama` binary, through a running server, or
straight into a store directory — and verify what a store holds."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.package import templates
from edgekit.package.modelfile import Modelfile, format_value, typed_parameters
from edgekit.package.ollama_store import (
    CONFIG_MEDIA_TYPE,
    MEDIA_TYPES,
    Layer,
    ModelName,
    Store,
    config_blob,
    go_json,
    hash_file,
    verify_layers,
)

_LICENSE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "LICENSE-MODEL", "LICENSE_MODEL")
_SPECIAL_TOKEN = re.compile(r"^<[^<>\s]+>$")


def file_type_name(value: int | None) -> str:
    """general.file_type as Ollama names it; 0 (all F32) and unset read as "unknown" there too."""
    from edgekit.gguf_io.reader import file_type_name as ftype

    return (ftype(value) if value else None) or "unknown"


def human_number(n: int) -> str:
    """A parameter count as Ollama prints it (format.HumanNumber): 8.2B, 134.52M, 2M."""
    for unit, scale, digits in (("B", 1e9, 1), ("M", 1e6, 2)):
        if n >= scale:
            x = n / scale
            return f"{x:.0f}{unit}" if x == int(x) else f"{x:.{digits}f}{unit}"
    return f"{n / 1e3:.0f}K" if n >= 1000 else str(n)


# ---- what the GGUF says ---------------------------------------------------------------------


@dataclass
class GgufFacts:
    path: Path
    architecture: str
    name: str | None
    file_type: str
    parameter_count: int
    chat_template: str | None
    tokens: list[str]
    eos_token: str | None
    license: str | None
    bos_token: str | None = None
    add_bos: bool = False

    @property
    def model_type(self) -> str:
        return human_number(self.parameter_count)

    def has_token(self, text: str) -> bool:
        return text in self._vocab

    def __post_init__(self) -> None:
        self._vocab = set(self.tokens)


def read_gguf_facts(path: Path) -> GgufFacts:
    """Architecture, file type, parameter count, chat template and vocabulary; a file that
    is not a whole GGUF is refused in one line."""
    from edgekit.gguf_io.reader import read_header

    path = Path(path)
    if path.is_dir():
        raise EdgekitError(f"{path}: a directory, not a GGUF file")
    if not path.exists():
        raise EdgekitError(f"{path}: no such file")
    # validates the header and that every tensor lies inside the file; decodes one array
    header = read_header(path, arrays={"tokenizer.ggml.tokens"})
    meta = header.metadata
    arch = meta.get("general.architecture")
    if not arch:
        raise EdgekitError(f"{path}: the GGUF has no general.architecture")
    tokens = meta.get("tokenizer.ggml.tokens") or []
    eos_id = meta.get("tokenizer.ggml.eos_token_id")
    eos = tokens[eos_id] if isinstance(eos_id, int) and 0 <= eos_id < len(tokens) else None
    bos_id = meta.get("tokenizer.ggml.bos_token_id")
    bos = tokens[bos_id] if isinstance(bos_id, int) and 0 <= bos_id < len(tokens) else None
    n_params = 0
    for _name, dims, _type, _offset, _nbytes in header.tensors:
        count = 1
        for d in dims:
            count *= int(d)
        n_params += count
    ft = meta.get("general.file_type")
    return GgufFacts(
        path=path,
        architecture=str(arch),
        name=meta.get("general.name"),
        file_type=file_type_name(ft if isinstance(ft, int) else None),
        parameter_count=n_params,
        chat_template=meta.get("tokenizer.chat_template"),
        tokens=tokens,
        eos_token=eos,
        license=meta.get("general.license"),
        bos_token=bos,
        add_bos=meta.get("tokenizer.ggml.add_bos_token") is True,
    )


# ---- license --------------------------------------------------------------------------------


@dataclass
class LicenseInfo:
    name: str
    tier: str
    url: str
    conditions: list[str]
    text: str
    text_source: str
    warnings: list[str] = field(default_factory=list)
    # what the license asks every copy to carry besides its text: its attribution notice and,
    # where modified files must say so, what edgekit changed ("" when nothing is asked)
    notice: str = ""

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "tier": self.tier,
            "url": self.url or None,
            "conditions": self.conditions,
            "notice": self.notice or None,
            "text_source": self.text_source,
            "text_chars": len(self.text),
            "warnings": self.warnings,
        }


def resolve_license(artifact_manifest: dict | None, facts: GgufFacts) -> LicenseInfo | None:
    """The catalogue entry's license (from the artifact manifest, else the GGUF's
    general.license), with its full text from the checkpoint's LICENSE file or edgekit's copy."""
    from edgekit.models.catalogue import licenses

    source = (artifact_manifest or {}).get("source") or {}
    lic = source.get("license") if isinstance(source.get("license"), dict) else None
    if lic is None and facts.license:
        key = facts.license.strip().lower()
        for known in licenses().values():
            if (
                key in {known.key, known.spdx.lower(), known.name.lower()}
                or key.replace(".", "_") == known.key
            ):
                lic = known.to_dict()
                break
        else:
            lic = {"name": facts.license, "tier": "conditional", "url": "", "conditions": []}
    if lic is None or str(lic.get("name") or "unknown").lower().startswith("unknown"):
        return None
    if "notice" not in lic:  # a manifest written before licenses stated their notice
        same = [k for k in licenses().values() if k.name == lic.get("name")]
        lic = {**lic, **({"notice": same[0].notice, "marks_changes": same[0].marks_changes} if same else {})}
    name, spdx = str(lic.get("name")), lic.get("spdx") or None
    tier, url = str(lic.get("tier") or "conditional"), str(lic.get("url") or "")
    conditions = [str(c) for c in lic.get("conditions") or []]
    warnings: list[str] = []
    text, text_source = None, ""
    checkpoint = Path(source["path"]) if source.get("path") else None
    candidates = [checkpoint / f for f in _LICENSE_FILES] if checkpoint and checkpoint.is_dir() else []
    for f in candidates:
        if f.is_file() and f.stat().st_size < 1 << 20:
            text, text_source = f.read_text(encoding="utf-8", errors="replace"), str(f)
            break
    if text is None and spdx:
        text = _shipped_license(spdx)
        text_source = f"edgekit's copy of {spdx}" if text else ""
    if text is None:
        text = _license_notice(name, url, conditions)
        text_source = "notice (edgekit has no full text of this license)"
        warnings.append(
            f"the full text of '{name}' was not found; "
            f"the LICENSE names it and links to {url or 'its source'}"
        )
    if tier != "permissive":
        warnings.append(
            f"'{name}' is a {tier} license" + (": " + "; ".join(conditions) if conditions else "")
        )
    notice = _required_notice(lic, artifact_manifest)
    return LicenseInfo(name, tier, url, conditions, text, text_source, warnings, notice)


def _required_notice(lic: dict, artifact_manifest: dict | None) -> str:
    """The license's attribution notice and, when it asks modified files to say so, the
    statement that this file is a modified (quantized) copy."""
    parts = [str(lic["notice"])] if lic.get("notice") else []
    if lic.get("marks_changes"):
        manifest = artifact_manifest or {}
        source = manifest.get("source") or {}
        what = source.get("hub_id") or source.get("name") or "the original model"
        fmt = manifest.get("format")
        parts.append(
            f"Modified: these weights were converted from {what}"
            + (f" and quantized to {fmt}" if fmt else "")
            + " by edgekit; they differ from the original weights."
        )
    return "\n\n".join(parts) + "\n" if parts else ""


def _shipped_license(spdx: str) -> str | None:
    from importlib import resources

    f = resources.files("edgekit.data").joinpath("licenses", f"{spdx}.txt")
    return f.read_text(encoding="utf-8") if f.is_file() else None


def _license_notice(name: str, url: str, conditions: list[str]) -> str:
    lines = [f"This model is distributed under the {name}.", ""]
    if url:
        lines += [f"The full license text: {url}", ""]
    if conditions:
        lines += ["Conditions a deployer must act on:"] + [f"- {c}" for c in conditions]
    return "\n".join(lines).rstrip() + "\n"


# ---- the package ----------------------------------------------------------------------------


def parse_param_options(options: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """`--param k=v` options as (name, value) pairs, checked against Ollama's option names."""
    pairs = []
    for opt in options:
        key, sep, value = opt.partition("=")
        key = key.strip()
        if not sep or not key:
            raise EdgekitError(f"--param {opt!r}: expected NAME=VALUE", "e.g. --param num_ctx=8192")
        pairs.append((key, value))
    typed_parameters(pairs)  # unknown names and malformed values fail here, in one line
    return pairs


@dataclass
class PackagePlan:
    artifact: Path
    name: ModelName
    facts: GgufFacts
    family: templates.Family
    modelfile: Modelfile
    license: LicenseInfo | None
    artifact_manifest: dict | None
    warnings: list[str]

    @property
    def modelfile_path(self) -> Path:
        return self.artifact.with_name(self.artifact.stem + ".Modelfile")

    @property
    def command(self) -> str:
        import shlex

        return f"ollama create {self.name.short} -f {shlex.quote(str(self.modelfile_path))}"

    def modelfile_text(self) -> str:
        from edgekit import __version__

        fmt = (self.artifact_manifest or {}).get("format") or f"gguf:{self.facts.file_type}"
        header = (
            f"Modelfile for {self.name.short}, written by edgekit {__version__} "
            f"from {self.artifact.name} ({fmt})\n"
            f"template: {self.family.name}: {self.family.reason}\n"
            f"create it with: {self.command}"
        )
        return self.modelfile.render(header)

    def to_dict(self) -> dict:
        mf = self.modelfile
        return {
            "artifact": str(self.artifact),
            "name": self.name.short,
            "full_name": self.name.full,
            "architecture": self.facts.architecture,
            "model_type": self.facts.model_type,
            "file_type": self.facts.file_type,
            "family": self.family.to_dict(),
            "template": mf.template,
            "system": mf.system,
            "parameters": mf.parameters_json(),
            "license": self.license.to_dict() if self.license else None,
            "warnings": self.warnings,
            "modelfile": str(self.modelfile_path),
            "command": self.command,
        }


def plan_package(
    artifact: Path | str, name: str, system: str | None = None, params: list[str] | tuple[str, ...] = ()
) -> PackagePlan:
    """Everything the package will hold, checked before anything is written."""
    from edgekit.artifact import manifest_path

    artifact = Path(artifact).expanduser().absolute()
    model_name = ModelName.parse(name)
    user_params = parse_param_options(params)
    facts = read_gguf_facts(artifact)
    artifact_manifest = None
    if manifest_path(artifact).is_file():
        try:
            artifact_manifest = json.loads(manifest_path(artifact).read_text())
        except ValueError:
            artifact_manifest = None
    family = templates.choose_family(
        facts.architecture, facts.has_token, facts.chat_template, facts.eos_token
    )
    warnings: list[str] = []
    if family.template is not None:
        from edgekit.package import gotemplate

        gotemplate.parse(family.template)  # ours must parse; a syntax error would only show in Ollama
        tools = check_tool_calls(family, family.template)
        if not tools.ok:
            raise EdgekitError(f"template check failed: {tools.detail}")
    if system is None and family.template is not None:
        system = templates.default_system(facts.chat_template)
    params_out = _merge_parameters(family, user_params)
    for stop in (v for k, v in params_out if k == "stop"):
        if _SPECIAL_TOKEN.match(stop) and not facts.has_token(stop):
            raise EdgekitError(
                f"stop token {stop!r} is not in the tokenizer's vocabulary",
                "Ollama would never see it as one token; drop it or fix the GGUF",
            )
    if family.template is not None:
        gate = conformance_gate(
            facts, family, family.template, [v for k, v in params_out if k == "stop"], system or None
        )
        if not gate.ok:
            raise EdgekitError(f"conformance gate failed: {gate.detail}")
    else:
        warnings.append(
            f"no TEMPLATE: Ollama >= {GGUF_TEMPLATE_MIN_OLLAMA} renders the GGUF's own chat template; "
            "older Ollama would prompt the model with bare text"
        )
    lic = resolve_license(artifact_manifest, facts)
    if lic is None:
        warnings.append("the license of this model is unknown: no LICENSE is packaged; check the model card")
    else:
        warnings += lic.warnings
        for cond in lic.conditions:  # e.g. Llama: "derived model names must begin with 'Llama'"
            prefix = re.search(r"names must begin with '([^']+)'", cond)
            if prefix and not model_name.model.lower().startswith(prefix.group(1).lower()):
                warnings.append(
                    f"the {lic.name} asks that derived model names begin with '{prefix.group(1)}'; "
                    f"'{model_name.model}' does not"
                )
    mf = Modelfile(
        from_=f"./{artifact.name}",
        template=family.template,
        system=system or None,
        parameters=params_out,
        licenses=[t for t in (lic.notice, lic.text) if t] if lic else [],
        requires=GGUF_TEMPLATE_MIN_OLLAMA if family.template is None else None,
    )
    mf.render()  # values a Modelfile cannot quote fail here, before anything is written
    return PackagePlan(artifact, model_name, facts, family, mf, lic, artifact_manifest, warnings)


# Ollama renders a GGUF's own chat template (llama-server's Jinja) from v0.30.0 on; before, a
# model without a TEMPLATE layer got the bare `{{ .Prompt }}` template.
GGUF_TEMPLATE_MIN_OLLAMA = "0.30.0"


def conformance_gate(
    facts: GgufFacts, family: templates.Family, template: str, stops: list[str], system: str | None = None
):
    """The conformance suite for this GGUF: `template` against its own chat template."""
    from edgekit.package import conformance

    return conformance.run_gate(
        family,
        template,
        facts.chat_template,
        facts.has_token,
        stops,
        bos_token=facts.bos_token,
        eos_token=facts.eos_token,
        add_bos=facts.add_bos,
        system=system,
    )


def _merge_parameters(family: templates.Family, user: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Family defaults, overridden by the user's values; the user's stop strings add to the
    family's stop tokens, which the template needs."""
    values = {k: format_value(v) for k, v in family.parameters}
    stops = list(family.stop)
    for key, value in user:
        if key == "stop":
            if value not in stops:
                stops.append(value)
        else:
            values[key] = value
    return list(values.items()) + [("stop", s) for s in stops]


def write_modelfile(plan: PackagePlan) -> Path:
    from edgekit import atomic

    path = plan.modelfile_path
    try:
        atomic.write_text(path, plan.modelfile_text())
    except OSError as e:
        raise EdgekitError(f"cannot write {path}: {e.strerror or e}") from None
    return path


# ---- create ---------------------------------------------------------------------------------


@dataclass
class CreateResult:
    method: str  # binary | server | store
    name: str
    where: str
    modelfile: str | None
    layers: list[dict] = field(default_factory=list)
    manifest: str | None = None
    warnings: list[str] = field(default_factory=list)
    detail: str = ""

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "name": self.name,
            "where": self.where,
            "modelfile": self.modelfile,
            "manifest": self.manifest,
            "layers": self.layers,
            "warnings": self.warnings,
            "detail": self.detail or None,
        }


def choose_method(host: str | None = None, store: Path | str | None = None) -> tuple[str, str, list[str]]:
    """(method, where, notes) for --create: the binary on PATH, else a reachable OLLAMA_HOST,
    else the store."""
    from edgekit.package.ollama_http import OllamaClient, env_host, normalize_host

    if host:
        url = normalize_host(host)
        if OllamaClient(url).version() is None:
            raise EdgekitError(
                f"no Ollama server answers at {url}", "start it with `ollama serve`, or use --store"
            )
        return "server", url, []
    if store is not None:
        return "store", str(Path(store).expanduser()), []
    binary = shutil.which("ollama")
    if binary:
        return "binary", binary, []
    env_url = env_host()
    if env_url and OllamaClient(env_url).version() is not None:
        return "server", env_url, []
    notes = [
        "no ollama binary on PATH"
        + (f" and no server answers at OLLAMA_HOST={env_url}" if env_url else ", OLLAMA_HOST unset")
        + ": the model was written into the store directly"
    ]
    return "store", str(Store().root), notes


def create(
    plan: PackagePlan, method: str, where: str, link: bool = True, notes: list[str] | None = None
) -> CreateResult:
    if method == "store":
        Store(where).check_writable()  # before the Modelfile, so a refused store leaves nothing behind
    warnings = list(plan.warnings) + list(notes or [])
    try:
        modelfile = str(write_modelfile(plan))
    except EdgekitError as e:
        if method == "binary":
            raise
        modelfile = None
        warnings.append(e.one_line())
    if method == "binary":
        result = _create_with_binary(plan, where)
    elif method == "server":
        result = _create_on_server(plan, where)
    elif method == "store":
        result = _create_in_store(plan, Store(where), link)
    else:
        raise EdgekitError(f"unknown create method {method!r}")
    result.modelfile = modelfile
    result.warnings = warnings + result.warnings
    return result


def _create_with_binary(plan: PackagePlan, binary: str) -> CreateResult:
    import subprocess

    cmd = [binary, "create", plan.name.short, "-f", str(plan.modelfile_path)]
    proc = subprocess.run(cmd, cwd=plan.artifact.parent, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        raise EdgekitError(
            f"`ollama create {plan.name.short}` failed: {lines[-1] if lines else f'exit {proc.returncode}'}"
        )
    return CreateResult("binary", plan.name.short, binary, None, detail=" ".join(proc.stdout.split())[-200:])


def create_payload(plan: PackagePlan, digest: str) -> dict:
    """The /api/create body: the uploaded GGUF by file name and digest, plus what the Modelfile says."""
    mf = plan.modelfile
    payload: dict = {"model": plan.name.short, "files": {plan.artifact.name: digest}}
    if mf.template:
        payload["template"] = mf.template
    if mf.system:
        payload["system"] = mf.system
    params = mf.parameters_json()
    if params:
        payload["parameters"] = params
    if mf.licenses:
        payload["license"] = list(mf.licenses)
    return payload


def _create_on_server(plan: PackagePlan, url: str) -> CreateResult:
    from edgekit.package.ollama_http import OllamaClient

    client = OllamaClient(url)
    digest, size = hash_file(plan.artifact)
    reused = client.has_blob(digest)
    if not reused:
        client.push_blob(plan.artifact, digest, size)
    answer = client.create(create_payload(plan, digest))
    layer = {"kind": "model", "digest": digest, "size": size, "reused": reused}
    return CreateResult("server", plan.name.short, url, None, [layer], detail=str(answer.get("status", "")))


def _create_in_store(plan: PackagePlan, store: Store, link: bool) -> CreateResult:
    mf = plan.modelfile
    name = store.existing_name(plan.name)
    digest, size = hash_file(plan.artifact)
    writer = store.writer()
    try:
        layers = [writer.add_file(plan.artifact, MEDIA_TYPES["model"], digest, size, link=link)]
        if mf.template:
            layers.append(writer.add_bytes(mf.template.encode("utf-8"), MEDIA_TYPES["template"]))
        if mf.system:
            layers.append(writer.add_bytes(mf.system.encode("utf-8"), MEDIA_TYPES["system"]))
        for text in mf.licenses:
            layers.append(writer.add_bytes(text.encode("utf-8"), MEDIA_TYPES["license"]))
        params = mf.parameters_json()
        if params:
            layers.append(writer.add_bytes(go_json(params, sort_keys=True), MEDIA_TYPES["params"]))
        config = writer.add_bytes(
            config_blob(plan.facts.architecture, plan.facts.model_type, plan.facts.file_type, layers),
            CONFIG_MEDIA_TYPE,
        )
        manifest = writer.write_manifest(name, config, layers)
    except OSError as e:
        writer.rollback()
        raise EdgekitError(
            f"cannot write the Ollama store {store.root}: {e.strerror or e}"
            + (f" ({e.filename})" if getattr(e, "filename", None) else "")
        ) from None
    except BaseException:
        writer.rollback()
        raise
    rows = [
        {"kind": x.kind, "digest": x.digest, "size": x.size, "reused": x.digest in writer.reused}
        for x in [*layers, config]
    ]
    return CreateResult("store", name.short, str(store.root), None, rows, str(manifest))


# ---- verify ---------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class VerifyResult:
    name: str
    store: str
    manifest: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "store": self.store,
            "manifest": self.manifest,
            "ok": self.ok,
            "problems": [f"{c.name}: {c.detail}" for c in self.problems],
            "checks": [c.to_dict() for c in self.checks],
        }


def verify(name: str, store: Path | str | None = None) -> VerifyResult:
    """Re-read a model from a store: manifest shape, media types, every blob's size and
    digest; the config against the GGUF; the think tags of a thinking model's template; the
    stop tokens against the tokenizer."""
    st = Store(store)
    manifest = st.read_manifest(ModelName.parse(name))
    results, good = verify_layers(st, manifest)
    checks = [Check(*c) for c in results]

    def blob(layer: Layer) -> bytes | None:
        # only blobs whose digest verified are read: the other checks already failed
        return st.blob_path(layer.digest).read_bytes() if layer.digest in good else None

    models = manifest.layers_of("model")
    facts = None
    if len(models) == 1 and models[0].digest in good:
        try:
            facts = read_gguf_facts(st.blob_path(models[0].digest))
            checks.append(
                Check("gguf", True, f"{facts.architecture}, {facts.model_type} parameters, {facts.file_type}")
            )
        except EdgekitError as e:
            checks.append(Check("gguf", False, f"the model blob is not a readable GGUF: {e.one_line()}"))
    if facts is None:
        return VerifyResult(manifest.name.short, str(st.root), str(manifest.path), checks)
    if manifest.config is not None and (raw := blob(manifest.config)) is not None:
        checks += _check_config(raw, facts, manifest.layers)
    texts = {
        kind: [b.decode("utf-8", "replace") for x in manifest.layers_of(kind) if (b := blob(x)) is not None]
        for kind in ("template", "params")
    }
    template = texts["template"][0] if texts["template"] else None
    checks.append(_check_thinking(facts, template, bool(manifest.layers_of("template"))))
    family = _family_of(facts)
    if family is not None and template is not None:
        checks.append(check_tool_calls(family, template))
    params_text = texts["params"][0] if texts["params"] else None
    checks += _check_stops(facts, template, params_text, bool(manifest.layers_of("params")))
    if family is not None and template is not None:
        stops: list = []
        if params_text is not None:
            try:
                stops = strict_params(params_text).get("stop") or []
            except ValueError:
                stops = []
        systems = [
            b.decode("utf-8", "replace") for x in manifest.layers_of("system") if (b := blob(x)) is not None
        ]
        gate = conformance_gate(
            facts, family, template, [s for s in stops if isinstance(s, str)], systems[0] if systems else None
        )
        checks.append(Check("conformance", gate.ok, gate.detail))
    elif template is None:
        checks.append(
            Check(
                "conformance",
                True,
                f"no TEMPLATE: needs Ollama >= {GGUF_TEMPLATE_MIN_OLLAMA}, "
                "which renders the GGUF's chat template",
            )
        )
    lic = manifest.layers_of("license")
    checks.append(Check("license", True, f"{len(lic)} license layer(s)" if lic else "no license layer"))
    return VerifyResult(manifest.name.short, str(st.root), str(manifest.path), checks)


def _check_config(raw: bytes, facts: GgufFacts, layers: list[Layer]) -> list[Check]:
    try:
        cfg = json.loads(raw)
    except ValueError:
        return [Check("config content", False, "the config blob is not JSON")]
    want = {"model_format": "gguf", "model_family": facts.architecture, "file_type": facts.file_type}
    wrong = [f"{k} {cfg.get(k)!r} (GGUF says {v!r})" for k, v in want.items() if cfg.get(k) != v]
    rootfs = cfg.get("rootfs")
    if isinstance(rootfs, dict) and rootfs.get("diff_ids") != [x.digest for x in layers]:
        wrong.append("rootfs.diff_ids do not list the manifest's layers")
    if wrong:
        return [Check("config content", False, "; ".join(wrong))]
    return [
        Check(
            "config content",
            True,
            f"{cfg.get('model_family')} {cfg.get('model_type')} {cfg.get('file_type')}",
        )
    ]


def _family_of(facts: GgufFacts) -> templates.Family | None:
    try:
        return templates.choose_family(
            facts.architecture, facts.has_token, facts.chat_template, facts.eos_token
        )
    except EdgekitError:
        return None


def check_tool_calls(family: templates.Family, template: str) -> Check:
    """A template that offers tools must let Ollama find the family's tool calls: the tag Ollama
    derives from it is the family's own, and the family's native call output parses to one call."""
    from edgekit.package import gotemplate, toolcalls

    try:
        tpl = gotemplate.parse(template)
    except gotemplate.TemplateError as e:
        return Check("tool calls", False, f"does not parse as a Go template: {e.one_line()}")
    if "tools" not in tpl.identifiers():
        return Check("tool calls", True, "the template offers no tools")
    tag = tpl.tool_call_tag()
    if family.tool_tag is None or family.tool_call_sample is None:
        return Check("tool calls", True, f"Ollama looks for tool calls after {tag!r}")
    if tag != family.tool_tag:
        return Check(
            "tool calls",
            False,
            f"{family.name}: Ollama would look for tool calls after {tag!r}, but the model writes "
            f"{family.tool_tag!r}: its calls would come back as text",
        )
    calls, _ = toolcalls.parse_tool_calls(family.tool_call_sample, tag, ["get_weather"])
    if len(calls) != 1:
        return Check("tool calls", False, f"{family.name}: a native tool call parses to {len(calls)} calls")
    return Check("tool calls", True, f"{tag} found; a native {family.name} tool call parses to one call")


def _thinking_model(facts: GgufFacts) -> bool:
    ct = facts.chat_template or ""
    return facts.architecture in templates.QWEN3_ARCHS or "<think>" in ct or "enable_thinking" in ct


def _check_thinking(facts: GgufFacts, template: str | None, has_layer: bool) -> Check:
    from edgekit.package import gotemplate

    if has_layer and template is None:
        return Check("template", False, "the template blob could not be read")
    if template is None:
        if not _thinking_model(facts):
            return Check("template", True, "none: Ollama uses the GGUF's chat template")
        if "<think>" in (facts.chat_template or ""):
            return Check("think tags", True, "no TEMPLATE; the GGUF's chat template keeps <think>")
        return Check(
            "think tags", False, f"a thinking model ({facts.architecture}) with no template that has <think>"
        )
    try:
        tpl = gotemplate.parse(template)
    except gotemplate.TemplateError as e:
        return Check("template", False, f"does not parse as a Go template: {e.one_line()}")
    if not _thinking_model(facts):
        return Check("template", True, "parses as a Go template")
    tags = tpl.thinking_tags()
    if tags != ("<think>", "</think>"):
        return Check(
            "think tags",
            False,
            f"Ollama would infer thinking tags {tags!r} from the template, not "
            "('<think>', '</think>'): thinking would be lost",
        )
    if not {"isthinkset", "think"} & tpl.identifiers():
        return Check(
            "think tags", False, "the template never reads .Think/.IsThinkSet: the thinking toggle is lost"
        )
    user = {"Role": "user", "Content": "hi", "Thinking": "", "ToolCalls": []}
    data = {"System": "", "Tools": [], "Messages": [user]}
    try:
        off = tpl.render({**data, "Think": False, "IsThinkSet": True})
        on = tpl.render({**data, "Think": True, "IsThinkSet": True})
    except gotemplate.TemplateError as e:
        return Check("think tags", False, f"cannot render the template to check the toggle: {e.one_line()}")
    closed = re.compile(r"<think>\s*</think>\s*$")
    if not closed.search(off) or closed.search(on):
        return Check(
            "think tags",
            False,
            "with think off the prompt does not end in an empty <think></think> "
            "block (or it does with think on)",
        )
    return Check(
        "think tags", True, "<think>…</think> kept; think=false opens the answer with an empty think block"
    )


def strict_params(text: str) -> dict:
    from edgekit.package.conformance import strict_params as strict

    return strict(text)


def _ill_typed(params: dict) -> str:
    """The first parameter whose JSON value is not the type Ollama stores it as ("" if none)."""
    from edgekit.package.modelfile import PARAMETER_TYPES

    for name, value in params.items():
        kind = PARAMETER_TYPES.get(name)
        if kind is None:
            return f"unknown Ollama parameter {name!r} in the params blob"
        ok = {
            bool: isinstance(value, bool),
            int: isinstance(value, int) and not isinstance(value, bool),
            float: isinstance(value, int | float) and not isinstance(value, bool),
            list: isinstance(value, list),
        }[kind]
        if not ok:
            return f"parameter {name}: {value!r} in the params blob is not a {kind.__name__}"
    return ""


def _check_stops(
    facts: GgufFacts, template: str | None, params_text: str | None, has_layer: bool
) -> list[Check]:
    if has_layer and params_text is None:
        return [Check("stop tokens", False, "the params blob could not be read")]
    stops: list = []
    if params_text is not None:
        try:
            params = strict_params(params_text)
        except ValueError as e:
            return [Check("stop tokens", False, f"the params blob is not strict JSON: {e}")]
        stops = params.get("stop") or []
        wrong = _ill_typed(params)
        if wrong:
            return [Check("params", False, wrong)]
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        return [Check("stop tokens", False, f"stop is {stops!r}, not a list of strings")]
    problems = [
        f"{s!r} is not a token of the tokenizer"
        for s in stops
        if _SPECIAL_TOKEN.match(s) and not facts.has_token(s)
    ]
    for marker in templates.END_OF_TURN:
        if template and marker in template and facts.has_token(marker) and marker not in stops:
            problems.append(f"the template ends turns with {marker} but it is not a stop token")
    if problems:
        return [Check("stop tokens", False, "; ".join(problems))]
    return [
        Check("stop tokens", True, ", ".join(stops) + " (all in the vocabulary)" if stops else "none set")
    ]

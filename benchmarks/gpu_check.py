"""GPU figures in one call (issue 19): build llama.cpp with CUDA from the travelling source tree,
point llama-cpp-python's pure-Python package at it, write random-weight GGUFs with Qwen3-8B's
exact shapes (Q4_K_M, Q8_0) and a Qwen3-30B-A3B-shaped MoE with fewer layers, and measure each
with `edgekit bench` and `llama-bench` (prefill / decode tok/s, TTFT, peak VRAM through NVML, the
ratio, the share of the bandwidth roofline decode reaches, planned against measured memory).
One JSON and one log under --out; every step is time-boxed against one deadline, a failing step
records its error and the rest goes on, and whatever is skipped is said.

    benchmarks/gpu_check.sh --out "$OUT"            # on a bare CUDA machine (docs/gpu.md)
    benchmarks/gpu_check.sh --cpu --out /tmp/gc     # here: tiny shapes, the installed CPU build

This file runs under the machine's own Python with the standard library only; what needs
edgekit runs in child processes (`gpu_check.py _write|_llama_bench ...`) with the environment
the `site` step made. Measured figures go to docs/results.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAVEL = ROOT / ".gpu-travel"
SCHEMA = "edgekit.gpu_check/1"

# what each file is: (key, catalogue model, mix, layers, shape overrides)
GPU_FILES = [
    ("qwen3-8b-Q4_K_M", "qwen3-8b", "Q4_K_M", None, None),
    ("qwen3-8b-Q8_0", "qwen3-8b", "Q8_0", None, None),
    ("qwen3-30b-a3b-12l-Q4_K_M", "qwen3-30b-a3b", "Q4_K_M", 12, None),
]
_TINY = {"hidden": 256, "n_heads": 4, "n_kv_heads": 2, "head_dim": 64}
CPU_FILES = [
    ("tiny-qwen3-Q4_K_M", "qwen3-8b", "Q4_K_M", 2, {**_TINY, "ffn": 768, "vocab": 49152}),
    ("tiny-qwen3-Q8_0", "qwen3-8b", "Q8_0", 2, {**_TINY, "ffn": 768, "vocab": 49152}),
    (
        "tiny-qwen3-moe-Q4_K_M",
        "qwen3-30b-a3b",
        "Q4_K_M",
        2,
        {**_TINY, "vocab": 49152, "n_experts": 4, "experts_per_token": 2, "expert_ffn": 256},
    ),
]
# modules the bench path imports (edgekit's runtime deps, llama-cpp-python's, NVML) -> the
# distribution whose wheel provides each; only those the machine lacks are unpacked
NEEDED = {
    "click": "click",
    "rich": "rich",
    "markdown_it": "markdown-it-py",
    "mdurl": "mdurl",
    "pygments": "Pygments",
    "gguf": "gguf",
    "filelock": "filelock",
    "numpy": "numpy",
    "yaml": "PyYAML",
    "tqdm": "tqdm",
    "safetensors": "safetensors",
    "huggingface_hub": "huggingface-hub",
    "jinja2": "Jinja2",
    "markupsafe": "MarkupSafe",
    "diskcache": "diskcache",
    "typing_extensions": "typing-extensions",
    "pynvml": "nvidia-ml-py",
}


class Run:
    """The steps, the deadline and the record."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.budget
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(args.work).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = open(self.out / "gpu_check.log", "a", encoding="utf-8")
        self.steps: list[dict] = []
        self.env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
        self.python = sys.executable
        self.llama_bench: Path | None = None
        self.result: dict = {
            "schema": SCHEMA,
            "mode": "cpu" if args.cpu else "gpu",
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "budget_s": args.budget,
            "steps": self.steps,
            "files": {},
            "skipped": [],
        }

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f}s] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def skip(self, name: str, why: str) -> None:
        self.steps.append({"name": name, "status": "skipped", "reason": why})
        self.result["skipped"].append(f"{name}: {why}")
        self.say(f"SKIPPED {name}: {why}")

    def cmd(self, name: str, argv: list[str], box: float, need: float = 5.0, cwd: Path | None = None):
        """Run argv within min(box, time left - reserve); the step's record, with stdout in 'stdout'."""
        limit = min(box, self.left() - self.args.reserve)
        if limit < need:
            self.skip(name, f"{max(0.0, self.left()):.0f} s left of the budget")
            return None
        self.say(f"{name}: {' '.join(map(str, argv))} (time box {limit:.0f} s)")
        t = time.monotonic()
        step: dict = {"name": name, "argv": [str(a) for a in argv]}
        try:
            p = subprocess.run(
                [str(a) for a in argv],
                cwd=cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=limit,
            )
            step |= {"status": "ok" if p.returncode == 0 else "failed", "rc": p.returncode}
            out, err = p.stdout, p.stderr
        except subprocess.TimeoutExpired as e:
            step |= {"status": "timeout", "error": f"ran past its time box of {limit:.0f} s"}
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        except OSError as e:
            step |= {"status": "failed", "error": str(e)}
            out = err = ""
        step["seconds"] = round(time.monotonic() - t, 2)
        self.log.write(f"--- {name} stdout\n{out[-20000:]}\n--- {name} stderr\n{err[-20000:]}\n")
        self.log.flush()
        if step["status"] != "ok" and "error" not in step:
            tail = [ln for ln in err.splitlines() if ln.strip()][-3:]
            step["error"] = " | ".join(tail)[-600:] or f"exit status {step.get('rc')}"
        self.say(
            f"{name}: {step['status']} in {step['seconds']} s"
            + (f" ({step['error']})" if "error" in step else "")
        )
        self.steps.append(step)
        step["stdout"] = out
        return step

    def write_json(self) -> Path:
        self.result["wall_s"] = round(time.monotonic() - self.t0, 1)
        steps = [{k: v for k, v in s.items() if k != "stdout"} for s in self.steps]
        path = self.out / "gpu_check.json"
        tmp = path.with_suffix(".json.part")
        tmp.write_text(json.dumps({**self.result, "steps": steps}, indent=2))
        os.replace(tmp, path)
        return path


# ---- environment ------------------------------------------------------------------------------


def step_env(run: Run) -> None:
    from importlib.metadata import PackageNotFoundError, version

    info: dict = {"python": platform.python_version(), "cpus": os.cpu_count(), "host": platform.node()}
    for pkg in ("torch", "transformers", "llama-cpp-python", "numpy", "gguf"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = None
    for tool, flag in (("nvcc", "--version"), ("cmake", "--version"), ("ninja", "--version")):
        exe = shutil.which(tool)
        info[tool] = None
        if exe:
            p = subprocess.run([exe, flag], capture_output=True, text=True)
            info[tool] = (p.stdout.strip().splitlines() or [""])[-1][:120]
    if shutil.which("nvidia-smi"):
        p = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        info["gpus"] = [ln.strip() for ln in p.stdout.splitlines() if ln.strip()]
    info["disk_free_gib"] = round(shutil.disk_usage(run.work).free / 2**30, 1)
    run.result["env"] = info
    run.say(f"env: {json.dumps(info)}")


def step_site(run: Run, travel: Path) -> bool:
    """PYTHONPATH for the bench path: the repository, edgekit's entry points (a dist-info made from
    pyproject.toml), the wheels of modules this Python lacks, llama-cpp-python's package."""
    t = time.monotonic()
    site = run.work / "site"
    step: dict = {"name": "site"}
    try:
        if site.exists():
            shutil.rmtree(site)
        site.mkdir(parents=True)
        missing = [m for m in NEEDED if not _importable(m)]
        wheels = sorted((travel / "wheels").glob("*.whl"))
        unpacked = []
        for mod in missing:
            dist = NEEDED[mod].lower().replace("-", "_")
            tag = sysconfig.get_platform().replace("-", "_").replace(".", "_")
            cands = [w for w in wheels if w.name.lower().startswith(dist + "-")]
            # a pure wheel, or one built for this interpreter
            cp = f"cp{sys.version_info[0]}{sys.version_info[1]}"
            cands = [w for w in cands if "-none-any" in w.name or f"-{cp}-" in w.name or "-abi3-" in w.name]
            if not cands:
                raise RuntimeError(f"module {mod} is missing and no wheel of {NEEDED[mod]} travels ({tag})")
            with zipfile.ZipFile(cands[0]) as z:
                z.extractall(site)
            unpacked.append(cands[0].name)
        _edgekit_dist_info(site)
        pkg = travel / "llama_cpp"
        if pkg.is_dir():
            shutil.copytree(pkg, site / "llama_cpp", ignore=shutil.ignore_patterns("lib", "__pycache__"))
        elif not _importable("llama_cpp"):
            raise RuntimeError(f"{pkg}: no llama_cpp package travels and this Python has none")
        run.env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(site), run.env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        step |= {"status": "ok", "missing_modules": missing, "unpacked": unpacked}
    except Exception as e:  # the record says why; nothing else runs without it
        step |= {"status": "failed", "error": str(e)[:600]}
    step["seconds"] = round(time.monotonic() - t, 2)
    run.steps.append(step)
    run.say(f"site: {step['status']} {step.get('error') or step.get('missing_modules')}")
    return step["status"] == "ok"


def _importable(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def _edgekit_dist_info(site: Path) -> None:
    """edgekit-<version>.dist-info with the entry points of pyproject.toml (the runtime registry
    reads them through importlib.metadata)."""
    import tomllib

    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    d = site / f"edgekit-{proj['version']}.dist-info"
    d.mkdir()
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: edgekit\nVersion: {proj['version']}\n")
    lines = []
    for group, eps in proj.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines += [f"{k} = {v}" for k, v in eps.items()]
    lines.append("[console_scripts]")
    lines += [f"{k} = {v}" for k, v in proj.get("scripts", {}).items()]
    (d / "entry_points.txt").write_text("\n".join(lines) + "\n")
    (d / "top_level.txt").write_text("edgekit\n")


# ---- llama.cpp ------------------------------------------------------------------------------------


def cmake_args(src: Path, build: Path, fa: bool) -> list[str]:
    """Options of the travelling llama.cpp (its CMakeLists and ggml/CMakeLists): CUDA for sm_90
    only (SASS, no PTX), shared libraries, no curl / OpenSSL / tests / examples / server, flash
    attention kernels only with --fa (they are a large share of the build)."""
    return [
        "cmake",
        "-S",
        str(src),
        "-B",
        str(build),
        "-G",
        "Ninja",
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=ON",
        "-DGGML_CUDA=ON",
        "-DCMAKE_CUDA_ARCHITECTURES=90-real",
        "-DGGML_NATIVE=ON",
        "-DGGML_BACKEND_DL=OFF",
        f"-DGGML_CUDA_FA={'ON' if fa else 'OFF'}",
        "-DGGML_CUDA_NCCL=OFF",
        "-DLLAMA_BUILD_COMMON=ON",
        "-DLLAMA_BUILD_TOOLS=ON",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=OFF",
        "-DLLAMA_BUILD_APP=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_TOOLS_INSTALL=OFF",
    ]


def cublas_hints(nvcc: Path, python: str) -> tuple[list[str], str]:
    """CMake cache entries that give FindCUDAToolkit cuBLAS when the toolkit beside nvcc lacks it
    (an nvcc-only install): the headers and the versioned libraries of the nvidia-cublas wheel
    torch's CUDA build depends on, looked for under this Python's site-packages."""
    root = nvcc.resolve().parent.parent
    for inc in (root / "include", root / "targets" / "x86_64-linux" / "include"):
        if (inc / "cublas_v2.h").is_file():
            return [], f"the toolkit's ({inc})"
    p = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
    )
    base = Path(p.stdout.strip() or "/nonexistent") / "nvidia"
    headers = sorted(base.rglob("cublas_v2.h")) if base.is_dir() else []
    if not headers:
        return [], "not found beside nvcc nor in an nvidia-cublas wheel (the configure step will say)"
    inc = headers[0].parent
    libs = {}
    for name in ("cublas", "cublasLt"):
        found = sorted(inc.parent.rglob(f"lib{name}.so*")) or sorted(base.rglob(f"lib{name}.so*"))
        if found:
            libs[name] = found[0]
    if len(libs) < 2:
        return [], f"headers in {inc} but no libcublas / libcublasLt beside them"
    flags = [
        f"-DCUDA_cublas_LIBRARY={libs['cublas']}",
        f"-DCUDA_cublasLt_LIBRARY={libs['cublasLt']}",
        f"-DCMAKE_CUDA_FLAGS=-I{inc}",
        f"-DCMAKE_CXX_FLAGS=-I{inc}",
    ]
    return flags, f"the nvidia-cublas wheel ({inc}, {libs['cublas'].name})"


def driver_hints(nvcc: Path) -> tuple[list[str], str]:
    """ggml-cuda links libcuda (CUDA::cuda_driver, for its VMM pool): the toolkit's stub when there
    is one, else the driver's own libcuda.so.1; with neither, the VMM pool is left out
    (GGML_CUDA_NO_VMM: cudaMalloc pools, which llama.cpp also uses where VMM is missing)."""
    root = nvcc.resolve().parent.parent
    for d in (
        root / "lib64" / "stubs",
        root / "lib" / "stubs",
        root / "targets" / "x86_64-linux" / "lib" / "stubs",
    ):
        if (d / "libcuda.so").is_file():
            return [], f"the toolkit's stub ({d})"
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/local/nvidia/lib64", "/usr/lib/wsl/lib"):
        for name in ("libcuda.so", "libcuda.so.1"):
            if (Path(d) / name).exists():
                return [f"-DCUDA_cuda_driver_LIBRARY={Path(d) / name}"], f"the driver's {Path(d) / name}"
    return ["-DGGML_CUDA_NO_VMM=ON"], "none found: built without the VMM pool (GGML_CUDA_NO_VMM)"


def start_build(run: Run, src: Path, build: Path) -> subprocess.Popen | None:
    """Configure (in the foreground: seconds) then start ninja in the background."""
    if not (src / "CMakeLists.txt").is_file():
        run.skip("build", f"{src}: no llama.cpp source tree (run benchmarks/gpu_prepare.py here first)")
        return None
    for tool in ("cmake", "ninja", "nvcc"):
        if shutil.which(tool) is None:
            run.skip("build", f"{tool} is not on PATH")
            return None
    cudacxx = shutil.which("nvcc")
    run.env.setdefault("CUDACXX", str(cudacxx))
    extra, where = cublas_hints(Path(str(cudacxx)), run.python)
    drv, drv_where = driver_hints(Path(str(cudacxx)))
    extra += drv
    run.result["cublas"], run.result["cuda_driver_lib"] = where, drv_where
    run.say(f"cuBLAS: {where}; libcuda: {drv_where}")
    step = run.cmd("configure", cmake_args(src, build, run.args.fa) + extra, box=120, need=20)
    if step is None or step["status"] != "ok":
        return None
    argv = ["ninja", "-C", str(build), f"-j{os.cpu_count() or 4}", "llama", "llama-bench"]
    run.say(f"build: {' '.join(argv)} (in the background; GGUF files are written meanwhile)")
    log = open(run.work / "build.log", "w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=run.env)
    proc._edgekit_t0 = time.monotonic()  # type: ignore[attr-defined]
    proc._edgekit_log = log  # type: ignore[attr-defined]
    return proc


def finish_build(run: Run, proc: subprocess.Popen, build: Path) -> bool:
    box = min(run.args.build_box, run.left() - run.args.reserve - 60)
    waited = time.monotonic() - proc._edgekit_t0  # type: ignore[attr-defined]
    step: dict = {"name": "build", "argv": proc.args}
    try:
        proc.wait(timeout=max(1.0, box - waited))
        step["status"] = "ok" if proc.returncode == 0 else "failed"
        step["rc"] = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        step |= {"status": "timeout", "error": f"ninja ran past {box:.0f} s"}
    proc._edgekit_log.close()  # type: ignore[attr-defined]
    step["seconds"] = round(time.monotonic() - proc._edgekit_t0, 1)  # type: ignore[attr-defined]
    text = (run.work / "build.log").read_text(errors="replace")
    run.log.write(f"--- build log (tail)\n{text[-30000:]}\n")
    if step["status"] == "failed":
        errs = [ln for ln in text.splitlines() if "error" in ln.lower()][:3]
        step["error"] = " | ".join(errs)[-600:] or text.strip().splitlines()[-1][-300:]
    done = [ln for ln in text.splitlines() if ln.startswith("[")][-1:]
    step["progress"] = done[0][:40] if done else None
    run.steps.append(step)
    run.say(f"build: {step['status']} in {step['seconds']} s {step.get('error', '')}")
    if step["status"] != "ok":
        return False
    bindir = build / "bin"
    site_lib = run.work / "site" / "llama_cpp" / "lib"
    if (run.work / "site" / "llama_cpp").is_dir():
        if site_lib.exists() or site_lib.is_symlink():
            site_lib.unlink() if site_lib.is_symlink() else shutil.rmtree(site_lib)
        site_lib.symlink_to(bindir, target_is_directory=True)
    run.env["LLAMA_CPP_LIB_PATH"] = str(bindir)
    run.env["LD_LIBRARY_PATH"] = os.pathsep.join([str(bindir), run.env.get("LD_LIBRARY_PATH", "")]).rstrip(
        os.pathsep
    )
    run.llama_bench = bindir / "llama-bench"
    return True


def installed_tools(run: Run) -> bool:
    """--cpu / --no-build: the llama-cpp-python this Python has and its llama-bench (the CPU build
    of scripts/setup.sh installs it in site-packages/bin with its libraries in site-packages/lib)."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    given = run.args.llama_bench
    exe = Path(given) if given else purelib / "bin" / "llama-bench"
    if not exe.is_file() and shutil.which("llama-bench"):
        exe = Path(shutil.which("llama-bench") or "")
    if not exe.is_file():
        run.skip("llama-bench", "no llama-bench found (--llama-bench PATH)")
        run.llama_bench = None
        return False
    libdir = exe.parent.parent / "lib"
    if libdir.is_dir():
        run.env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [str(libdir), run.env.get("LD_LIBRARY_PATH", "")]
        ).rstrip(os.pathsep)
    run.llama_bench = exe
    return True


# ---- measuring ------------------------------------------------------------------------------------


def child(run: Run, name: str, argv: list[str], box: float, need: float = 5.0):
    return run.cmd(name, [run.python, str(Path(__file__).resolve()), *argv], box, need)


def edgekit_cmd(run: Run, name: str, argv: list[str], box: float, need: float = 5.0):
    return run.cmd(name, [run.python, "-c", "from edgekit.cli.main import main; main()", *argv], box, need)


def measure_file(run: Run, key: str, path: Path, device: str, decode_bw: float | None) -> None:
    rec = run.result["files"].setdefault(key, {"path": str(path)})
    a = run.args
    store = run.out / "bench-store"
    eb = edgekit_cmd(
        run,
        f"edgekit bench {key}",
        [
            "bench",
            str(path),
            "--device",
            device,
            "--prompt-tokens",
            str(a.prompt),
            "--gen-tokens",
            str(a.gen),
            "--repeat",
            str(a.repeat),
            "--warmup",
            "1",
            "--store",
            str(store),
            "--label",
            a.label or platform.node() or "gpu-check",
            "--json",
            *(["--threads", str(a.threads)] if a.threads else []),
        ],
        box=a.bench_box,
        need=15 if not a.cpu else 3,
    )
    if eb is not None and eb["status"] == "ok":
        try:
            rec["edgekit"] = edgekit_figures(json.loads(eb["stdout"]))
        except (ValueError, KeyError, IndexError, TypeError) as e:
            rec["edgekit"] = {"error": f"unreadable edgekit bench JSON ({e})"}
    elif eb is not None:
        rec["edgekit"] = {"error": eb.get("error")}
    if run.llama_bench is None:
        rec["llama_bench"] = {"error": "no llama-bench"}
        return
    lb_argv = [
        str(run.llama_bench),
        "-m",
        str(path),
        "-p",
        str(a.prompt),
        "-n",
        str(a.gen),
        "-d",
        f"0,{a.prompt}",
        "-r",
        str(a.repeat),
        "-fa",
        "on" if a.fa else "off",
        "-ngl",
        "0" if device == "cpu" else "99",
        "-o",
        "json",
        *(["-t", str(a.threads)] if a.threads else []),
    ]
    lb = child(
        run, f"llama-bench {key}", ["_llama_bench", *lb_argv], box=a.bench_box, need=15 if not a.cpu else 3
    )
    if lb is not None and lb["status"] == "ok":
        try:
            rec["llama_bench"] = llama_bench_figures(json.loads(lb["stdout"]), a.prompt, a.gen)
        except (ValueError, KeyError, IndexError, TypeError) as e:
            rec["llama_bench"] = {"error": f"unreadable llama-bench JSON ({e})"}
    elif lb is not None:
        rec["llama_bench"] = {"error": lb.get("error")}
    compare(rec)


def edgekit_figures(d: dict) -> dict:
    b = d["batches"][0]
    roof = b.get("roofline") or {}
    p = d.get("planner") or {}
    med = lambda s: (s or {}).get("median")  # noqa: E731
    out = {
        "device": d["device"],
        "load_s": d["load_s"],
        "ttft_s": med(b.get("ttft_s")),
        "prefill_tok_s": med(b.get("prefill_tok_s")),
        "decode_tok_s": med(b.get("decode_tok_s")),
        "peak_vram_bytes": d.get("peak_vram_bytes"),
        "peak_rss_bytes": d.get("peak_rss_bytes"),
        "vram_method": (d.get("vram") or {}).get("method"),
        "roofline_bound_tok_s": roof.get("bound_tok_s"),
        "bytes_per_token": roof.get("bytes_per_token"),
        "bandwidth_gbs": roof.get("bandwidth_gbs"),
        "roofline_share": roof.get("fraction"),
        "roofline_note": roof.get("reason"),
        "planned_peak_bytes": p.get("predicted_peak_bytes"),
        "measured_peak_bytes": p.get("measured_peak_bytes"),
        "measured_what": p.get("measured_what"),
        "planned_over_measured": p.get("predicted_over_measured"),
        "planner_target": p.get("target"),
        "planner_note": p.get("reason") or p.get("target_note"),
        "runtime_version": d["runtime"]["version"],
        "result_id": d["id"],
    }
    return out


def llama_bench_figures(rows: list[dict], prompt: int, gen: int) -> dict:
    def pick(n_prompt: int, n_gen: int, depth: int) -> dict | None:
        return next(
            (
                r
                for r in rows
                if r["n_prompt"] == n_prompt and r["n_gen"] == n_gen and r.get("n_depth", 0) == depth
            ),
            None,
        )

    pp, tg, tg0 = pick(prompt, 0, 0), pick(0, gen, prompt), pick(0, gen, 0)
    wrapper = next((r for r in rows if "_wrapper" in r), {}).get("_wrapper", {})
    first = rows[0]
    out = {
        "prefill_tok_s": pp["avg_ts"] if pp else None,
        "prefill_stddev": pp["stddev_ts"] if pp else None,
        "decode_tok_s": tg["avg_ts"] if tg else None,  # at depth = prompt, as edgekit's decode
        "decode_stddev": tg["stddev_ts"] if tg else None,
        "decode_tok_s_depth0": tg0["avg_ts"] if tg0 else None,
        # llama-bench reports no TTFT: the prompt's time at its prefill rate
        "ttft_est_s": round(prompt / pp["avg_ts"], 4) if pp and pp["avg_ts"] else None,
        "backends": first.get("backends"),
        "gpu_info": first.get("gpu_info"),
        "build_commit": first.get("build_commit"),
        "flash_attn": first.get("flash_attn"),
        "n_gpu_layers": first.get("n_gpu_layers"),
        "peak_vram_bytes": wrapper.get("peak_vram_bytes"),
        "peak_rss_bytes": wrapper.get("peak_rss_bytes"),
        "vram_method": wrapper.get("method"),
    }
    return out


def compare(rec: dict) -> None:
    e, lb = rec.get("edgekit") or {}, rec.get("llama_bench") or {}

    def ratio(k: str):
        a, b = e.get(k), lb.get(k)
        return round(a / b, 3) if isinstance(a, int | float) and isinstance(b, int | float) and b else None

    rec["ratio_edgekit_over_llama_bench"] = {
        "prefill": ratio("prefill_tok_s"),
        "decode": ratio("decode_tok_s"),
    }
    bpt, bw = e.get("bytes_per_token"), e.get("bandwidth_gbs")
    if bpt and bw and lb.get("decode_tok_s"):
        lb["roofline_share"] = round(lb["decode_tok_s"] * bpt / (bw * 1e9), 4)


# ---- child commands -------------------------------------------------------------------------------


def child_write(argv: list[str]) -> None:
    """_write OUT_DIR TOKENIZER KEY MODEL MIX LAYERS SHAPE_JSON: one random GGUF; prints its record."""
    out_dir, tok, key, model, mix, layers, shape = argv
    from edgekit.quantize.gguf_random import random_gguf

    t = time.perf_counter()
    art = random_gguf(
        model,
        Path(out_dir),
        mix,
        Path(tok),
        layers=int(layers) if layers != "-" else None,
        shape=json.loads(shape) or None,
        name=key.rsplit("-", 1)[0] if key.endswith(mix) else key,
    )
    m = art.manifest
    print(
        json.dumps(
            {
                "path": str(art.path),
                "size_bytes": m.size_bytes,
                "n_params": m.details["n_params"],
                "tensor_types": m.details["tensor_types"],
                "bits_per_weight": m.bits_per_weight,
                "write_s": round(time.perf_counter() - t, 2),
            }
        )
    )


def child_llama_bench(argv: list[str]) -> None:
    """_llama_bench ARGV...: run llama-bench, sample its GPU memory through NVML (edgekit's
    sampler), print its JSON rows with a `_wrapper` row holding the peaks."""
    from edgekit.bench.memory import MemorySampler

    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=sys.stderr, stdin=subprocess.DEVNULL)
    sampler = MemorySampler(proc.pid, tree=True, interval=0.1)
    if sampler.ok:
        sampler.start()
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if sampler.ok:
        sampler.stop()
    if proc.returncode != 0:
        sys.exit(f"llama-bench exit status {proc.returncode}")
    rows = json.loads(out.decode())
    rows.append(
        {
            "_wrapper": {
                "peak_vram_bytes": sampler.peak if sampler.samples else None,
                "peak_rss_bytes": usage.ru_maxrss * 1024,
                "method": "NVML per-process GPU memory of llama-bench, sampled every 0.1 s "
                "(edgekit.bench.memory); "
                "RSS: ru_maxrss of the child (wait4)"
                if sampler.samples
                else f"RSS: ru_maxrss of the child (wait4); no VRAM ({sampler.why or 'no GPU'})",
            }
        }
    )
    print(json.dumps(rows))


# ---- the run ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_write":
        child_write(argv[1:])
        return 0
    if argv and argv[0] == "_llama_bench":
        child_llama_bench(argv[1:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="tiny shapes on the CPU with the installed build")
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu-check-out", help="JSON and log [$OUT]")
    ap.add_argument("--work", default=None, help="build tree and GGUF files (never under --out)")
    ap.add_argument("--travel", default=str(TRAVEL), help="the travelling folder (benchmarks/gpu_prepare.py)")
    ap.add_argument("--budget", type=float, default=None, help="seconds for everything [540; --cpu 120]")
    ap.add_argument("--reserve", type=float, default=10.0, help="seconds kept for writing the JSON")
    ap.add_argument("--build-box", type=float, default=390.0, help="seconds the CUDA build may take")
    ap.add_argument("--bench-box", type=float, default=None, help="seconds per benchmark [100; --cpu 40]")
    ap.add_argument(
        "--no-build", action="store_true", help="use the installed llama-cpp-python and llama-bench"
    )
    ap.add_argument("--llama-bench", default=None, help="llama-bench to use with --no-build")
    ap.add_argument("--fa", action="store_true", help="build and run with flash attention (longer build)")
    ap.add_argument("--only", default=None, help="comma-separated file keys to measure")
    ap.add_argument("--tokenizer", default=None, help="tokenizer directory [travelling folder's / SmolLM2's]")
    ap.add_argument("--prompt", type=int, default=None, help="prompt tokens [512; --cpu 64]")
    ap.add_argument("--gen", type=int, default=None, help="generated tokens [128; --cpu 16]")
    ap.add_argument("--repeat", type=int, default=None, help="measured repeats [3; --cpu 1]")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads [all; --cpu 2]")
    ap.add_argument("--label", default=None, help="device label in the bench store")
    a = ap.parse_args(argv)
    cpu = a.cpu
    a.budget = a.budget or (120.0 if cpu else 540.0)
    a.bench_box = a.bench_box or (40.0 if cpu else 100.0)
    a.prompt = a.prompt or (64 if cpu else 512)
    a.gen = a.gen or (16 if cpu else 128)
    a.repeat = a.repeat or (1 if cpu else 3)
    a.threads = a.threads or (2 if cpu else None)
    a.work = a.work or str(
        Path(os.environ.get("TMPDIR", "/tmp")) / f"edgekit-gpu-check-{'cpu' if cpu else 'gpu'}"
    )
    if Path(a.work).resolve().is_relative_to(Path(a.out).resolve()):
        print("--work must not lie under --out (the GGUF files would travel back)", file=sys.stderr)
        return 2
    run = Run(a)
    travel = Path(a.travel)
    device = "cpu" if cpu else "cuda"
    run.say(f"gpu_check ({run.result['mode']} mode): budget {a.budget:.0f} s, out {run.out}, work {run.work}")
    try:
        step_env(run)
        if not cpu and not a.no_build:
            if not step_site(run, travel):
                return finish(run)
        build_proc = None
        if cpu or a.no_build:
            run.skip("build", "--cpu: the installed CPU build" if cpu else "--no-build: the installed build")
            installed_tools(run)
        else:
            build_proc = start_build(run, travel / "llama.cpp", run.work / "build")
        files = write_files(run, travel, CPU_FILES if cpu else GPU_FILES)
        if build_proc is not None:
            if not finish_build(run, build_proc, run.work / "build"):
                run.skip("measurements", "no CUDA build of llama.cpp")
                return finish(run)
        check = run.cmd(
            "llama_cpp",
            [
                run.python,
                "-c",
                "import json, llama_cpp; print(json.dumps({'version': llama_cpp.__version__, "
                "'gpu_offload': bool(llama_cpp.llama_supports_gpu_offload())}))",
            ],
            box=60,
        )
        if check is None or check["status"] != "ok":
            run.skip("measurements", "llama_cpp does not import with this build")
            return finish(run)
        run.result["llama_cpp"] = json.loads(check["stdout"].strip().splitlines()[-1])
        if not cpu and not run.result["llama_cpp"]["gpu_offload"]:
            run.skip("measurements", "llama_cpp loaded a library without GPU offload")
            return finish(run)
        for key, path in files:
            measure_file(run, key, path, device, None)
        run.skip("transformers", "BF16 vs FP8 through transformers is not part of this script yet")
    except KeyboardInterrupt:
        run.skip("rest", "interrupted")
    return finish(run)


def write_files(run: Run, travel: Path, specs) -> list[tuple[str, Path]]:
    tok = Path(run.args.tokenizer) if run.args.tokenizer else travel / "tokenizer"
    if not (tok / "tokenizer.json").is_file() and run.args.tokenizer is None:
        try:
            tok = _smollm2_tokenizer(run)
        except RuntimeError as e:
            run.skip("write", str(e))
            return []
    only = set(run.args.only.split(",")) if run.args.only else None
    files = []
    for key, model, mix, layers, shape in specs:
        if only is not None and key not in only:
            run.skip(f"write {key}", "not in --only")
            continue
        step = child(
            run,
            f"write {key}",
            [
                "_write",
                str(run.work / "gguf"),
                str(tok),
                key,
                model,
                mix,
                str(layers or "-"),
                json.dumps(shape or {}),
            ],
            box=150,
            need=10 if not run.args.cpu else 2,
        )
        if step is not None and step["status"] == "ok":
            info = json.loads(step["stdout"].strip().splitlines()[-1])
            run.result["files"][key] = {
                "model_shape": model,
                "mix": mix,
                "layers": layers,
                "shape": shape,
                **info,
            }
            files.append((key, Path(info["path"])))
    return files


def _smollm2_tokenizer(run: Run) -> Path:
    code = "from edgekit.models.source import open_checkpoint; print(open_checkpoint('smollm2-135m').path)"
    p = subprocess.run([run.python, "-c", code], capture_output=True, text=True, env=run.env)
    if p.returncode != 0:
        raise RuntimeError(
            "no tokenizer: none travels and the embedded SmolLM2 is not installed (--tokenizer)"
        )
    return Path(p.stdout.strip().splitlines()[-1])


def finish(run: Run) -> int:
    path = run.write_json()
    run.say(f"wrote {path}; skipped: {len(run.result['skipped'])}")
    for line in run.result["skipped"]:
        run.say(f"  skipped {line}")
    for key, rec in run.result["files"].items():
        e, lb = rec.get("edgekit") or {}, rec.get("llama_bench") or {}
        run.say(
            f"  {key}: edgekit prefill {e.get('prefill_tok_s')} decode {e.get('decode_tok_s')} tok/s, "
            f"llama-bench prefill {lb.get('prefill_tok_s')} decode {lb.get('decode_tok_s')}, "
            f"ratio {rec.get('ratio_edgekit_over_llama_bench')}, roofline {e.get('roofline_share')}, "
            f"planned/measured {e.get('planned_over_measured')}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

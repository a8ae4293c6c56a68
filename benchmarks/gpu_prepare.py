"""Assemble the folder that travels to a bare GPU machine for benchmarks/gpu_check.sh (issue 19):

    .gpu-travel/
      llama.cpp/   the llama.cpp of the pinned llama-cpp-python (its source release), trimmed to
                   what libllama, ggml (CPU + CUDA) and llama-bench need; tools/CMakeLists.txt
                   is replaced by one that adds llama-bench only
      llama_cpp/   llama-cpp-python's pure-Python package (no library: the CUDA build is used)
      wheels/      wheels of the modules the bench path imports (gpu_check.py NEEDED), at this
                   environment's versions, pure or built for the target Python (3.12 by default)
      tokenizer/   SmolLM2's tokenizer.json and tokenizer_config.json (padded into the GGUFs)

It checks that the folder plus the working tree that travels with it stay under 64 MiB, and
prints the `run` invocation. Uses this environment's package registry (pip download) for the
source release and the wheels; nothing else.

    .venv/bin/python benchmarks/gpu_prepare.py                  # build .gpu-travel/
    .venv/bin/python benchmarks/gpu_prepare.py --check DIR      # only the size check (exit 1 if over)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from gpu_check import NEEDED, TRAVEL  # noqa: E402

LIMIT_MIB = 64.0
# what of the llama.cpp tree the build reads (root CMakeLists, ggml, src, include, common, vendor)
KEEP = ("CMakeLists.txt", "LICENSE", "cmake", "include", "src", "common", "vendor", "licenses", "ggml")
GGML_BACKENDS_KEPT = ("ggml-cpu", "ggml-cuda")
# binary wheels need the target interpreter's tag
BINARY = {"numpy", "PyYAML", "MarkupSafe", "safetensors"}
TOOLS_CMAKE = """# edgekit's trimmed tree (benchmarks/gpu_prepare.py): only llama-bench
find_package(Threads REQUIRED)
llama_add_compile_flags()
add_subdirectory(llama-bench)
"""


def tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def working_tree_bytes() -> int:
    """Bytes of what the run tool copies besides the carried paths: tracked files and untracked
    files git does not ignore."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    total = 0
    for name in filter(None, out.split(b"\0")):
        p = ROOT / name.decode()
        if p.is_file():
            total += p.stat().st_size
    return total


def check_size(travel: Path, limit_mib: float = LIMIT_MIB, with_tree: bool = True) -> tuple[bool, str]:
    t = tree_bytes(travel)
    w = working_tree_bytes() if with_tree else 0
    total = (t + w) / 2**20
    ok = total < limit_mib
    msg = (
        f"{travel}: {t / 2**20:.1f} MiB + working tree {w / 2**20:.1f} MiB = {total:.1f} MiB "
        f"({'under' if ok else 'OVER'} the {limit_mib:g} MiB limit)"
    )
    return ok, msg


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def llama_source(dest: Path, sdist: Path | None, tmp: Path) -> str:
    pin = version("llama-cpp-python")
    if sdist is None:
        pip("download", "-q", "--no-deps", "--no-binary", ":all:", "-d", str(tmp), f"llama-cpp-python=={pin}")
        sdist = next(tmp.glob("llama_cpp_python-*.tar.gz"))
    top = sdist.name[: -len(".tar.gz")]
    with tarfile.open(sdist) as tf:
        members = [
            m
            for m in tf.getmembers()
            if m.name.startswith(f"{top}/vendor/llama.cpp/") or m.name.startswith(f"{top}/llama_cpp/")
        ]
        tf.extractall(tmp, members=members, filter="data")
    src = tmp / top / "vendor" / "llama.cpp"
    out = dest / "llama.cpp"
    out.mkdir(parents=True)
    for name in KEEP:
        p = src / name
        if p.is_dir():
            shutil.copytree(p, out / name)
        elif p.is_file():
            shutil.copy2(p, out / name)
    for d in (out / "ggml" / "src").iterdir():
        if d.is_dir() and d.name.startswith("ggml-") and d.name not in GGML_BACKENDS_KEPT:
            shutil.rmtree(d)
    (out / "tools").mkdir()
    shutil.copytree(src / "tools" / "llama-bench", out / "tools" / "llama-bench")
    (out / "tools" / "CMakeLists.txt").write_text(TOOLS_CMAKE)
    shutil.copytree(
        tmp / top / "llama_cpp",
        dest / "llama_cpp",
        ignore=shutil.ignore_patterns("lib", "__pycache__", "server"),
    )
    (dest / "llama_cpp" / "lib").mkdir(exist_ok=True)
    return pin


def wheels(dest: Path, python_version: str) -> list[str]:
    wd = dest / "wheels"
    wd.mkdir()
    got, failed = [], []
    for dist in sorted(set(NEEDED.values())):
        try:
            v = version(dist)
        except PackageNotFoundError:
            failed.append(f"{dist} (not installed here)")
            continue
        args = ["download", "-q", "--no-deps", "--only-binary", ":all:", "-d", str(wd), f"{dist}=={v}"]
        if dist in BINARY:
            args += ["--python-version", python_version, "--implementation", "cp"]
            for plat in ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64"):
                args += ["--platform", plat]
        try:
            pip(*args)
            got.append(f"{dist}=={v}")
        except subprocess.CalledProcessError:
            failed.append(f"{dist}=={v}")
    if failed:
        print(
            f"gpu_prepare: no wheel for {', '.join(failed)} (gpu_check unpacks only what the machine lacks)"
        )
    return got


def tokenizer(dest: Path, given: Path | None) -> None:
    if given is None:
        from edgekit.models.source import open_checkpoint

        given = open_checkpoint("smollm2-135m").path
    (dest / "tokenizer").mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(given / name, dest / "tokenizer" / name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", default=str(TRAVEL), help="the travelling folder [.gpu-travel]")
    ap.add_argument("--sdist", default=None, help="llama-cpp-python's source release (else pip download)")
    ap.add_argument("--tokenizer", default=None, help="a tokenizer directory [SmolLM2's]")
    ap.add_argument("--python-version", default="3.12", help="the target machine's Python [3.12]")
    ap.add_argument("--check", default=None, metavar="DIR", help="only check DIR's size")
    ap.add_argument("--limit-mib", type=float, default=LIMIT_MIB)
    ap.add_argument("--no-tree", action="store_true", help="size check without the working tree")
    a = ap.parse_args()
    if a.check:
        if not Path(a.check).exists():
            print(f"gpu_prepare: {a.check}: no such file or directory", file=sys.stderr)
            return 2
        ok, msg = check_size(Path(a.check), a.limit_mib, not a.no_tree)
        print(msg)
        return 0 if ok else 1
    dest = Path(a.dest).resolve()
    stage = dest.with_name(dest.name + ".partial")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        with tempfile.TemporaryDirectory(prefix="edgekit-gpu-prepare-") as td:
            pin = llama_source(stage, Path(a.sdist) if a.sdist else None, Path(td))
        got = wheels(stage, a.python_version)
        tokenizer(stage, Path(a.tokenizer) if a.tokenizer else None)
        (stage / "MANIFEST.json").write_text(
            json.dumps({"llama-cpp-python": pin, "wheels": got, "python": a.python_version}, indent=2)
        )
        ok, msg = check_size(stage, a.limit_mib, not a.no_tree)
        msg = msg.replace(str(stage), str(dest))
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    print(msg)
    if not ok:
        shutil.rmtree(stage, ignore_errors=True)
        return 1
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(stage, dest)
    rel = dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest
    print("run it on the GPU machine (one call, about 9 minutes):")
    print(
        json.dumps(
            {"command": "bash benchmarks/gpu_check.sh --out $OUT", "carry": [str(rel)], "timeout_s": 590},
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`edgekit sweep` serially against the same sweep on a local Ray cluster, on this machine.

    python benchmarks/sweep.py [--workers 2] [--cpus-per-worker 1] [--windows 2]
                               [--formats gguf:Q4_K_M,gguf:Q6_K,gguf:Q8_0] [--out DIR]

The sweep: the default model against `cpu` and a user TOML target ("box"), bars kld<=0.01 and
kld<=0.1, the given GGUF candidates, the first `--windows` 512-token windows of the evaluation
text, no importance matrix, no speed runs. The model's reference store is built first, outside
both timings (it is the serial part either way). Then, each in a fresh output directory (so
every artifact is built and every candidate scored again; the quantized-tensor cache is warm
for both), the serial sweep and the Ray sweep on a cluster of a head (no CPUs) and `--workers`
worker nodes, started inside a network namespace with only loopback up (Ray binds the
machine's non-loopback address otherwise; needs root and iproute2). The cluster's start is
timed apart. Prints one JSON object: both walls, the per-job walls, where each job ran, and
whether the picks agree. Every Ray process is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PORT = 6379
BOX = 'name = "box"\nkind = "cpu"\ndescription = "a small CPU box"\nmemory_gib = 4\nbandwidth_gbs = 20\n'


def _pids(ns: str) -> list[int]:
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(x) for x in r.stdout.split()]


def _wait_log(log: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if b"Ray runtime started" in log.read_bytes():
            return
        if proc.poll() is not None:
            raise SystemExit(f"ray start failed: {log.read_text(errors='replace')[-1500:]}")
        time.sleep(0.2)
    raise SystemExit(f"ray start timed out: {log}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cpus-per-worker", type=int, default=1)
    ap.add_argument("--windows", type=int, default=2)
    ap.add_argument("--formats", default="gguf:Q4_K_M,gguf:Q6_K,gguf:Q8_0")
    ap.add_argument("--out", default=None, help="working directory [default: a temporary one]")
    args = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("ip"):
        raise SystemExit("needs root and iproute2 (ip netns) for the loopback-only Ray cluster")
    from edgekit.bench.sweep import load_sweep, prepare_model
    from edgekit.text import default_evaluation_text

    work = Path(args.out or tempfile.mkdtemp(prefix="edgekit-sweep-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    text = default_evaluation_text()
    # windows of ~2,100 characters of this text each (SmolLM2's tokenizer); a little over N
    (work / "eval.txt").write_text(text[: 2100 * args.windows + 900])
    (work / "box.toml").write_text(BOX)
    fmts = ", ".join(f'"{f.strip()}"' for f in args.formats.split(",") if f.strip())
    (work / "bench.toml").write_text(
        'models = ["smollm2-135m"]\ntargets = ["cpu", "box.toml"]\nbars = ["kld<=0.01", "kld<=0.1"]\n'
        f'formats = [{fmts}]\nimatrix = "none"\nspeed = "none"\nevaluation = "eval.txt"\n'
    )
    spec = load_sweep(work / "bench.toml")
    t0 = time.perf_counter()
    prepare_model("smollm2-135m", spec.evaluation, "none", spec.formats, None, {})
    prep_s = time.perf_counter() - t0
    cmd = [sys.executable, "-m", "edgekit.cli.main", "sweep", str(work / "bench.toml"), "--json"]

    t0 = time.perf_counter()
    r = subprocess.run([*cmd, "--out", str(work / "serial")], capture_output=True, text=True)
    serial_s = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    serial = json.loads(r.stdout)

    ns = f"edgekit-sweep-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs: list[subprocess.Popen] = []
    tmp = tempfile.mkdtemp(prefix="ekray-")
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        ray = str(Path(sys.executable).with_name("ray"))
        t0 = time.perf_counter()
        nodes = [
            ["--head", f"--port={PORT}", "--num-cpus=0", f"--temp-dir={tmp}", "--include-dashboard=false"]
        ]
        nodes += [[f"--address=127.0.0.1:{PORT}", f"--num-cpus={args.cpus_per_worker}"]] * args.workers
        for i, node in enumerate(nodes):
            log = Path(tmp) / f"node{i}.log"
            with open(log, "wb") as f:
                procs.append(
                    subprocess.Popen(
                        ["timeout", "1800", "ip", "netns", "exec", ns, ray, "start", "--block"]
                        + ["--disable-usage-stats", *node],
                        stdout=f,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            _wait_log(log, procs[-1])
        start_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = subprocess.run(
            ["ip", "netns", "exec", ns, *cmd, "--out", str(work / "ray"), "--ray", f"127.0.0.1:{PORT}"],
            capture_output=True,
            text=True,
        )
        ray_s = time.perf_counter() - t0
        if r.returncode:
            raise SystemExit(r.stderr[-3000:])
        on_ray = json.loads(r.stdout)
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in _pids(ns) + [p.pid for p in procs if p.poll() is None]:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            time.sleep(2)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        json.dumps(
            {
                "cores": os.cpu_count(),
                "load_average_at_end": os.getloadavg(),
                "workers": args.workers,
                "cpus_per_worker": args.cpus_per_worker,
                "formats": spec.formats,
                "windows": args.windows,
                "reference_store_s": round(prep_s, 1),
                "cluster_start_s": round(start_s, 1),
                "serial_wall_s": round(serial_s, 1),
                "ray_wall_s": round(ray_s, 1),
                "speedup": round(serial_s / ray_s, 2),
                "picks_equal": serial["picks"] == on_ray["picks"],
                "picks": on_ray["picks"],
                "serial_jobs_s": {j["target"]: j["wall_s"] for j in serial["jobs"]},
                "ray_jobs_s": {j["target"]: j["wall_s"] for j in on_ray["jobs"]},
                "ray_nodes": {j["target"]: j["ran_on"]["node_id"][:8] for j in on_ray["jobs"]},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

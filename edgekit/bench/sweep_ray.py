"""The sweep on Ray: each (model, target) job is a Ray task, after its model's reference task.

Ray is an optional extra (`pip install "edgekit[ray]"`), imported only here, inside functions.
edgekit schedules nothing itself: it declares each task's resources and lets Ray place,
run and retry them.

- One task per model first (`_prepare_task`): the reference store and, with imatrix = "auto",
  the importance matrix, into the cache directory. This part is serial per model: every job of
  the model needs the store, and it is one llama.cpp pass that does not split.
- One task per (model, target) (`_pair_task`): every bar through the main job in one run
  directory. It takes its model's reference task as an argument, so Ray starts it once the
  store is there. Resources: `num_cpus` from the sweep file's [ray] table, `memory` from the
  planner (the largest fitting candidate's weights + KV cache + runtime overhead on the
  target), and for a GPU target whose speed is measured, the custom resource
  `edgekit-<device>` (count = the target's devices): only a node started with
  `ray start --resources '{"edgekit-rtx4090": 1}'` runs it, and the speed comes from there.
- A task whose worker dies is retried (`max_retries`, Ray's own); the caches (artifacts with
  manifests, sealed complete and partial scores, file locks released by the kernel) make the
  retry resume the job instead of redoing it, and the picks are the same.
- Results travel back as plain dicts (`JobResult`), with the node and worker that ran each job.

The jobs and the driver share files through the output and cache directories: on several
machines those must be one shared file system (or each node builds its own caches and keeps
its artifacts; the reports still come back through Ray).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.bench.sweep import (
    JobResult,
    PairJob,
    SweepReport,
    SweepSpec,
    forwarded_environment,
    here,
    installed_targets,
    prepare_model,
    run_pair,
    write_summary,
)
from edgekit.errors import EdgekitError, MissingDependency, first_line

CONNECT_TIMEOUT_S = 5.0


def _ray():
    try:
        import ray
    except ImportError:
        raise MissingDependency("ray (needed by --ray)", "ray") from None
    return ray


def connect(address: str) -> dict:
    """Connect this process to the Ray cluster at `address` (HOST:PORT or 'auto'), or fail in
    one line naming the address before any work starts. Returns what the cluster offers."""
    ray = _ray()
    address = address.strip()
    if address != "auto":
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise EdgekitError(f"--ray {address!r}: expected HOST:PORT (the head's GCS port) or 'auto'")
        try:
            with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
                pass
        except OSError as e:
            raise EdgekitError(
                f"--ray {address}: no Ray cluster answers there ({e.strerror or type(e).__name__})",
                "start one with `ray start --head`, or drop --ray to run serially",
            ) from None
    try:
        if ray.is_initialized():
            ray.shutdown()
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except Exception as e:  # ConnectionError, version mismatches, a GCS that is not Ray's
        raise EdgekitError(f"--ray {address}: cannot join the cluster: {first_line(e)}") from None
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {
        "address": address,
        "ray_version": ray.__version__,
        "nodes": [
            {
                "node_id": n["NodeID"],
                "host": n.get("NodeManagerHostname"),
                "resources": n.get("Resources", {}),
            }
            for n in nodes
        ],
    }


def disconnect() -> None:
    ray = _ray()
    if ray.is_initialized():
        ray.shutdown()


def _placement() -> dict:
    import ray

    ctx = ray.get_runtime_context()
    return here("ray", node_id=ctx.get_node_id(), worker_id=ctx.get_worker_id())


def _prepare_task(model, evaluation, imatrix, formats, calibration, env) -> dict:
    try:
        seconds = prepare_model(model, evaluation, imatrix, formats, calibration, env)
    except EdgekitError as e:
        return {"seconds": 0.0, "error": e.one_line(), "ran_on": _placement()}
    return {"seconds": seconds, "error": None, "ran_on": _placement()}


def _pair_task(prep: dict, job: PairJob, env: dict, tomls: dict) -> dict:
    where = _placement()
    if prep.get("error"):
        return JobResult(job.model, job.target, None, where, 0.0, error=prep["error"]).to_dict()
    return run_pair(job, env, tomls, where)


def task_resources(spec: SweepSpec, job: PairJob) -> dict[str, Any]:
    """What a job asks Ray for: CPUs, the planner's memory, a device resource for a GPU
    target whose speed is measured."""
    from edgekit.formats import get_format
    from edgekit.models.source import peek_entry
    from edgekit.plan import plan
    from edgekit.profiles.target import get_target

    opts: dict[str, Any] = {"num_cpus": spec.num_cpus, "max_retries": spec.max_retries}
    with installed_targets(spec.target_tomls()):
        target = get_target(job.target)
        entry = peek_entry(job.model)
        if entry is not None:
            o = spec.options
            fmts = [get_format(f) for f in o.formats] if o.formats else None
            try:
                p = plan(entry, target, ctx=o.ctx, formats=fmts)
                totals = [r.per_device.total for r in p.rows if r.fits]
            except EdgekitError:
                totals = []
            if totals:
                opts["memory"] = max(totals)
    if target.device.kind == "gpu" and spec.options.speed != "none":
        opts["resources"] = {device_resource(target.device.name): target.count}
    return opts


def device_resource(device: str) -> str:
    return f"edgekit-{device}"


def check_placement(spec: SweepSpec, out: Path, cluster: dict) -> None:
    """Every job has a node that can run it (else Ray would wait forever): one line naming
    the target and what to start."""
    nodes = [n["resources"] for n in cluster["nodes"]]
    for job in spec.jobs(out):
        opts = task_resources(spec, job)
        need = {"CPU": opts["num_cpus"], **opts.get("resources", {})}
        if not any(all(r.get(k, 0) >= v for k, v in need.items()) for r in nodes):
            wants = ", ".join(f"{k}={v:g}" for k, v in need.items())
            raise EdgekitError(
                f"--ray {cluster['address']}: no node offers {wants} for target {job.target}",
                "start a worker with `ray start --address HEAD --num-cpus N"
                + (
                    f" --resources '{{\"{next(iter(opts['resources']))}\": N}}'`"
                    if opts.get("resources")
                    else "`"
                )
                + " or lower [ray] num_cpus",
            )


def run_ray(
    spec: SweepSpec,
    out: Path,
    cluster: dict,
    on_job: Callable[[JobResult], None] | None = None,
) -> SweepReport:
    """The sweep's jobs as Ray tasks on the connected cluster; the summary written as serially."""
    ray = _ray()
    t0 = time.perf_counter()
    env = forwarded_environment()
    tomls = spec.target_tomls()
    prepare = ray.remote(_prepare_task)
    pair = ray.remote(_pair_task)
    preps = {}
    o = spec.options
    for m in dict.fromkeys(spec.models):
        preps[m] = prepare.options(num_cpus=spec.num_cpus, max_retries=spec.max_retries).remote(
            m, o.evaluation, o.imatrix, o.formats, o.calibration, env
        )
    jobs = spec.jobs(out)
    refs = {pair.options(**task_resources(spec, j)).remote(preps[j.model], j, env, tomls): j for j in jobs}
    done: dict[int, JobResult] = {}
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            j = refs[ref]
            try:
                r = JobResult.from_dict(ray.get(ref))
            except Exception as e:  # retries exhausted (the worker died every time), a bug
                r = JobResult(j.model, j.target, None, {}, 0.0, error=f"{type(e).__name__}: {first_line(e)}")
            done[j.index] = r
            if on_job:
                on_job(r)
    prep_s = {}
    for m, ref in preps.items():
        try:
            prep_s[m] = float(ray.get(ref)["seconds"])
        except Exception:
            prep_s[m] = 0.0
    report = SweepReport(
        spec, out, "ray", [done[j.index] for j in jobs], time.perf_counter() - t0, prep_s, cluster=cluster
    )
    write_summary(report)
    return report

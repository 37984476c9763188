"""Where the jobs of `--all` run: `--executor local` (default) or `--executor ray`.

Both executors take the same list of `training.jobs.JobSpec`s and return one `EntryOutcome` per
job, in the order given; every job writes its files into its own run directory, so the results are
the same files whichever executor ran them, and resume and the failure rules
(`training.jobs.run_job`) hold unchanged.

- local: `--jobs N` runs N jobs at a time, each in its own worker subprocess. On a machine with
  GPUs each parallel slot owns `--devices` GPUs (default 1), handed to its jobs through
  CUDA_VISIBLE_DEVICES; without GPUs the cores are divided among the slots (thread counts).
- ray: each job is a Ray task asking for `--devices` GPUs (or `--cpus-per-job` CPUs on a cluster
  without GPUs), so the cluster spreads the grid over its machines. Without `--ray-address` a
  local Ray instance is started on 127.0.0.1. The run directory must be on storage every node
  sees at the same path (a task on a node that does not see it fails with that message).
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from core import defaults
from core.errors import BenchmarkError
from training.jobs import EntryOutcome, JobSpec, run_job
from training.worker_process import EventHandler

logger = logging.getLogger(__name__)

EXECUTORS: tuple[str, ...] = ("local", "ray")
# Thread-count variables honoured by TensorFlow, XLA/JAX's Eigen pools and OpenMP/BLAS.
THREAD_VARIABLES: tuple[str, ...] = ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS",
                                     "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
RAY_EXTRA_HINT = "pip install 'dermbench[ray]'"
LOCAL_ONLY_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class ExecutorError(BenchmarkError, ValueError):
    """Executor options that cannot be honoured (the message says how to fix them)."""


def visible_gpus(environ: dict[str, str] | None = None) -> list[str]:
    """The GPU ids this machine offers: $CUDA_VISIBLE_DEVICES when set, else `nvidia-smi -L`.

    Args:
        environ: the environment to read (default os.environ).

    Returns:
        GPU ids as strings ([] on a machine without NVIDIA GPUs).
    """
    environ = os.environ if environ is None else environ
    declared = environ.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        return [d.strip() for d in declared.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listing.splitlines() if line.strip()]


def slot_environments(jobs: int, devices: int | None, gpus: Sequence[str],
                      cpus: int | None = None, cpus_per_job: int | None = None
                      ) -> list[dict[str, str]]:
    """The environment of each parallel slot of the local executor.

    Args:
        jobs: slots (--jobs).
        devices: GPUs per job (--devices, default 1).
        gpus: the GPU ids available (`visible_gpus`).
        cpus: cores of this machine (default os.cpu_count()).
        cpus_per_job: --cpus-per-job; default: the cores divided among the slots.

    Returns:
        One dict per slot: CUDA_VISIBLE_DEVICES for its own GPUs when the machine has GPUs; on a
        CPU-only machine with several slots, thread counts that divide the cores among them; {}
        for a single slot without GPUs (the worker uses the whole machine).

    Raises:
        ExecutorError: more GPUs asked for (jobs x devices) than the machine has.
    """
    per_job = devices or 1
    if gpus:
        needed = jobs * per_job
        if needed > len(gpus):
            raise ExecutorError(
                f"--jobs {jobs} x --devices {per_job} needs {needed} GPUs, but this machine "
                f"shows {len(gpus)} ({','.join(gpus)}); lower --jobs or --devices"
            )
        return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[i * per_job:(i + 1) * per_job])}
                for i in range(jobs)]
    if devices is not None and devices > 1:
        raise ExecutorError(f"--devices {devices} needs {devices} GPUs per job, but this machine "
                            "shows none; drop --devices to train on the CPU")
    if jobs == 1 and cpus_per_job is None:
        return [{}]
    threads = cpus_per_job or max(1, (cpus or os.cpu_count() or 1) // jobs)
    return [thread_environment(threads) for _ in range(jobs)]


def thread_environment(threads: int) -> dict[str, str]:
    """Environment variables that cap a worker's CPU threads at `threads`."""
    env = {name: str(threads) for name in THREAD_VARIABLES}
    env["TF_NUM_INTEROP_THREADS"] = "1" if threads < 4 else "2"
    env["XLA_FLAGS"] = " ".join(filter(None, (
        os.environ.get("XLA_FLAGS", ""),
        f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}",
        f"intra_op_parallelism_threads={threads}")))
    return env


Reporter = Callable[[int, int, EntryOutcome], None]


def run_local(specs: Sequence[JobSpec], jobs: int = 1, devices: int | None = None,
              cpus_per_job: int | None = None, console: TextIO | None = None,
              on_start: Callable[[int, JobSpec], None] | None = None,
              on_done: Reporter | None = None,
              on_event: EventHandler | None = None) -> list[EntryOutcome]:
    """Run the jobs on this machine, `jobs` at a time.

    With one slot the worker's progress events go to `on_event` and its output lines are echoed
    to `console` (when given); with several, the workers' output goes only to the log files, and
    `on_start` and `on_done` report each job.

    Args:
        specs: the jobs, in the order they are started.
        jobs: parallel slots (--jobs).
        devices: GPUs per job (--devices).
        cpus_per_job: --cpus-per-job.
        console: stream the output lines of a single slot's worker are echoed to, or None.
        on_start: called as on_start(index, spec) when a job starts (index from 1).
        on_done: called as on_done(finished_count, total, outcome) after each job.
        on_event: called with the progress events of a single slot's worker, or None.

    Returns:
        One outcome per spec, in the order of `specs`.

    Raises:
        ExecutorError: not enough GPUs for the slots.
    """
    environments = slot_environments(jobs, devices, visible_gpus(), cpus_per_job=cpus_per_job)
    total = len(specs)
    if jobs == 1:
        outcomes = []
        for index, spec in enumerate(specs, start=1):
            if on_start is not None:
                on_start(index, spec)
            outcome = run_job(_with_env(spec, environments[0]), console, on_event)
            outcomes.append(outcome)
            if on_done is not None:
                on_done(index, total, outcome)
        return outcomes

    free: queue.Queue[dict[str, str]] = queue.Queue()
    for environment in environments:
        free.put(environment)
    lock = threading.Lock()
    finished = [0]
    position = {id(spec): index for index, spec in enumerate(specs, start=1)}

    def work(spec: JobSpec) -> EntryOutcome:
        environment = free.get()
        if on_start is not None:
            with lock:
                on_start(position[id(spec)], spec)
        try:
            outcome = run_job(_with_env(spec, environment), None)
        finally:
            free.put(environment)
        with lock:
            finished[0] += 1
            if on_done is not None:
                on_done(finished[0], total, outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="job") as pool:
        return list(pool.map(work, specs))


def _with_env(spec: JobSpec, environment: dict[str, str]) -> JobSpec:
    return replace(spec, env={**spec.env, **environment})


# ---------------------------------------------------------------------------------------------
# Ray


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ExecutorError(f"--executor ray needs Ray, which is not installed: {RAY_EXTRA_HINT}"
                            ) from None
    return ray


def ray_job(spec: JobSpec) -> EntryOutcome:
    """The body of one Ray task: run the job on the node the task landed on.

    Raises:
        ExecutorError: the run directory is not visible on this node (not on shared storage).
    """
    import socket

    if not Path(spec.run_root, "run.json").is_file():
        raise ExecutorError(
            f"{spec.run_root} is not visible on node {socket.gethostname()}: with a Ray cluster "
            "the run directory (--out) must be on storage shared by every node, at the same path"
        )
    env = dict(spec.env)
    cpus = env.pop("DERMBENCH_TASK_CPUS", None)
    if cpus and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        env.update(thread_environment(int(cpus)))
    # Ray sets CUDA_VISIBLE_DEVICES for a task that asked for GPUs; the worker inherits it.
    return run_job(replace(spec, env=env), None)


def run_ray(specs: Sequence[JobSpec], address: str | None = None, devices: int | None = None,
            cpus_per_job: int | None = None, on_done: Reporter | None = None,
            local_cpus: int | None = None) -> list[EntryOutcome]:
    """Run every job as a Ray task and wait for all of them.

    A Ray instance that is already initialised in this process is used as it is; otherwise
    `address` is joined, or without it a local instance is started on 127.0.0.1 (and shut
    down at the end). A task whose Ray worker process dies is retried by Ray (the job resumes
    from its saved state); a task that fails otherwise becomes a failed outcome.

    Args:
        specs: the jobs.
        address: --ray-address (e.g. "auto", "ray://head:10001"), or None.
        devices: GPUs per task on a cluster with GPUs (default 1).
        cpus_per_job: CPUs per task (default 1 with GPUs; on a CPU-only cluster the default is 1
            as well, so every core runs a job).
        on_done: called as on_done(finished_count, total, outcome) after each job.
        local_cpus: CPUs of a local instance (default: all cores).

    Returns:
        One outcome per spec, in the order of `specs`.

    Raises:
        ExecutorError: Ray is not installed, or the cluster cannot be reached.
    """
    if not address:
        # A local instance listens on the loopback interface only (Ray's single-machine mode,
        # read when Ray is imported); a cluster's nodes must reach each other instead.
        os.environ.setdefault(LOCAL_ONLY_VARIABLE, "0")
    ray = _import_ray()
    started_here = False
    if not ray.is_initialized():
        _init_ray(ray, address, local_cpus)
        started_here = True
    try:
        return _run_tasks(ray, specs, devices, cpus_per_job, on_done)
    finally:
        if started_here:
            ray.shutdown()


def _init_ray(ray: Any, address: str | None, local_cpus: int | None) -> None:
    project_root = os.fspath(Path(__file__).resolve().parents[1])
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(
        p for p in (project_root, os.environ.get("PYTHONPATH")) if p)}}
    try:
        if address:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        else:
            ray.init(num_cpus=local_cpus or os.cpu_count() or 1, include_dashboard=False,
                     runtime_env=runtime_env, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - Ray raises many types; all mean "no cluster"
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ExecutorError(f"cannot start or join {where}: {type(exc).__name__}: {exc}; check "
                            "--ray-address (e.g. auto on a cluster node) and that the head is "
                            "running (`ray status`)") from None


def _run_tasks(ray: Any, specs: Sequence[JobSpec], devices: int | None,
               cpus_per_job: int | None, on_done: Reporter | None) -> list[EntryOutcome]:
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    cpus = cpus_per_job or 1
    options: dict[str, Any] = {"num_cpus": cpus, "max_retries": 2, "retry_exceptions": False}
    if has_gpus:
        options["num_gpus"] = devices or 1
    elif devices is not None and devices > 1:
        raise ExecutorError(f"--devices {devices} needs GPUs, but the Ray cluster has none; drop "
                            "--devices to train on its CPUs")
    task = ray.remote(ray_job).options(**options)
    pending = {}
    for index, spec in enumerate(specs):
        env = dict(spec.env)
        if not has_gpus:
            env["DERMBENCH_TASK_CPUS"] = str(cpus)
        pending[task.remote(replace(spec, env=env))] = index
    outcomes: list[EntryOutcome | None] = [None] * len(specs)
    finished = 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            index = pending.pop(ref)
            outcomes[index] = _task_outcome(ray, ref, specs[index])
            finished += 1
            if on_done is not None:
                on_done(finished, len(specs), outcomes[index])
    return [o for o in outcomes if o is not None]


def _task_outcome(ray: Any, ref: Any, spec: JobSpec) -> EntryOutcome:
    try:
        return ray.get(ref)
    except Exception as exc:  # noqa: BLE001 - a task error is that job's failure, not the run's
        cause = getattr(exc, "cause", None) or exc
        message = " ".join(f"{type(cause).__name__}: {cause}".split())[:500]
        logger.error("%s: the Ray task failed: %s", spec.name, message)
        return EntryOutcome(name=spec.name, status="failed", error=f"Ray task failed: {message}")


def check_options(executor: str | None, jobs: int | None, ray_address: str | None) -> None:
    """Refuse executor options that do not belong together.

    Raises:
        ExecutorError: --jobs with --executor ray, or --ray-address without it.
    """
    executor = executor or defaults.EXECUTOR
    if executor not in EXECUTORS:
        raise ExecutorError(f"unknown --executor {executor!r}; choose {' or '.join(EXECUTORS)}")
    if executor == "ray" and jobs is not None:
        raise ExecutorError("--jobs is for --executor local; with --executor ray the cluster "
                            "runs as many jobs at a time as it has GPUs (or CPUs) for")
    if executor == "local" and ray_address:
        raise ExecutorError("--ray-address needs --executor ray")

"""Executor policies (device slots, thread caps, option checks) and the local executor's scheduling,
with the job itself replaced (no training here)."""

from __future__ import annotations

import threading
import time

import pytest

from training import executors
from training.executors import (
    ExecutorError,
    check_options,
    run_local,
    slot_environments,
    thread_environment,
    visible_gpus,
)
from training.jobs import EntryOutcome, JobSpec
from training.settings import RunConfig


def test_visible_gpus_reads_cuda_visible_devices_first():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 5"}) == ["2", "5"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_visible_gpus_without_nvidia_smi_is_empty(monkeypatch):
    monkeypatch.setattr(executors.shutil, "which", lambda name: None)
    assert visible_gpus({}) == []


def test_each_slot_gets_its_own_gpus():
    assert slot_environments(2, None, ["0", "1", "2"]) == [
        {"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    assert slot_environments(2, 2, ["0", "1", "2", "3"]) == [
        {"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]


def test_more_gpus_than_the_machine_has_is_refused_with_the_count():
    with pytest.raises(ExecutorError, match=r"--jobs 3 x --devices 2 needs 6 GPUs.*shows 4"):
        slot_environments(3, 2, ["0", "1", "2", "3"])
    with pytest.raises(ExecutorError, match="shows none"):
        slot_environments(1, 2, [])


def test_cpu_slots_divide_the_cores():
    assert slot_environments(1, None, [], cpus=8) == [{}]
    slots = slot_environments(2, None, [], cpus=8)
    assert len(slots) == 2 and all(s["TF_NUM_INTRAOP_THREADS"] == "4" for s in slots)
    assert slot_environments(3, None, [], cpus=2)[0]["OMP_NUM_THREADS"] == "1"
    assert slot_environments(1, None, [], cpus=8, cpus_per_job=3)[0]["OMP_NUM_THREADS"] == "3"


def test_thread_environment_caps_xla_too(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    env = thread_environment(1)
    assert env["XLA_FLAGS"] == ("--xla_cpu_multi_thread_eigen=false "
                                "intra_op_parallelism_threads=1")
    assert env["TF_NUM_INTEROP_THREADS"] == "1"


@pytest.mark.parametrize(("executor", "jobs", "address", "message"), [
    ("ray", 2, None, "--jobs is for --executor local"),
    ("local", None, "auto", "--ray-address needs --executor ray"),
    ("dask", None, None, "unknown --executor 'dask'"),
])
def test_executor_options_that_do_not_belong_together_are_refused(executor, jobs, address,
                                                                 message):
    with pytest.raises(ExecutorError, match=message):
        check_options(executor, jobs, address)


def test_valid_executor_options_pass():
    check_options(None, None, None)
    check_options("local", 4, None)
    check_options("ray", None, "auto")


def _specs(n: int) -> list[JobSpec]:
    return [JobSpec(run_root="/nowhere", entry=f"e{i}", config=RunConfig(), label=f"job{i}")
            for i in range(n)]


def test_local_executor_runs_jobs_in_parallel_and_keeps_their_order(monkeypatch):
    monkeypatch.setattr(executors, "visible_gpus", lambda: ["0", "1"])
    running, peak, lock, seen_env = [0], [0], threading.Lock(), []

    def fake_job(spec, console, on_event=None):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            seen_env.append(spec.env["CUDA_VISIBLE_DEVICES"])
        time.sleep(0.05 if spec.entry != "e0" else 0.6)  # the first finishes last
        with lock:
            running[0] -= 1
        return EntryOutcome(name=spec.name, status="ok")

    monkeypatch.setattr(executors, "run_job", fake_job)
    done = []
    outcomes = run_local(_specs(5), jobs=2, on_done=lambda i, n, o: done.append((i, n, o.name)))
    assert [o.name for o in outcomes] == [f"job{i}" for i in range(5)]
    assert peak[0] == 2
    assert set(seen_env) == {"0", "1"}
    assert [d[0] for d in done] == [1, 2, 3, 4, 5] and done[-1][2] == "job0"


def test_local_executor_serial_echoes_to_the_console_and_reports_each_start(monkeypatch):
    monkeypatch.setattr(executors, "visible_gpus", lambda: [])
    consoles, started = [], []

    def fake_job(spec, console, on_event=None):
        consoles.append(console)
        return EntryOutcome(name=spec.name, status="ok")

    monkeypatch.setattr(executors, "run_job", fake_job)
    sentinel = object()
    run_local(_specs(2), jobs=1, console=sentinel,
              on_start=lambda i, spec: started.append((i, spec.name)))
    assert consoles == [sentinel, sentinel]
    assert started == [(1, "job0"), (2, "job1")]


def test_ray_executor_without_ray_says_how_to_install_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ExecutorError, match=r"pip install 'dermbench\[ray\]'"):
        executors.run_ray(_specs(1))


def test_a_ray_task_on_a_node_without_the_run_directory_says_shared_storage(tmp_path):
    spec = JobSpec(run_root=str(tmp_path / "not-here"), entry="paper_cnn", config=RunConfig())
    with pytest.raises(ExecutorError, match="shared by every node"):
        executors.ray_job(spec)

"""tools/gpu_benchmark.py on CPU: tiny runs of paper_cnn under the current backend (in-process)
and under JAX (child processes, never importing TensorFlow), the JSON fields and the 3x rule,
the usage errors, the OOM handling and the GPU-hours arithmetic."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import zoo

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "gpu_benchmark.py"
QUICK = ["--steps", "2", "--warmup", "1", "--batch-size", "4", "--precision", "float32"]
ROW_FIELDS = {
    "backbone", "status", "message", "backend", "backend_version", "keras_version", "device",
    "precision", "jit_compile", "optimizer", "augment", "image_size", "batch_size", "steps",
    "warmup", "compile_and_warmup_s", "seconds", "step_ms", "images_per_s", "forward_flops",
    "forward_gflops", "train_tflops", "params_total", "params_trainable", "peak_memory_bytes",
    "peak_memory_gib", "peak_memory_scope", "final_loss", "modules_imported",
}


@pytest.fixture(scope="module")
def gb():
    """The script, imported as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def in_process_run(gb, tmp_path_factory):
    """One in-process run: xception made to run out of memory, then paper_cnn measured."""
    out = tmp_path_factory.mktemp("gpu_benchmark") / "result.json"
    os.environ[gb.SIMULATE_OOM_ENV] = "xception"
    try:
        code = gb.main(["--in-process", "--backbones", "xception", "paper_cnn",
                        "--image-size", "75", *QUICK, "--json", str(out)])
    finally:
        del os.environ[gb.SIMULATE_OOM_ENV]
    return code, json.loads(out.read_text())


@pytest.mark.slow
def test_oom_is_recorded_and_the_next_backbone_still_runs(in_process_run):
    code, result = in_process_run
    oom, ok = result["results"]
    assert code == 1
    assert oom["backbone"] == "xception" and oom["status"] == "oom"
    assert "out of memory at batch 4" in oom["message"] and oom["images_per_s"] is None
    assert ok["backbone"] == "paper_cnn" and ok["status"] == "ok"
    assert result["estimate"]["missing"][0] == "inception_v3"
    assert "paper_cnn" in result["estimate"]["entries"]


@pytest.mark.slow
def test_json_fields_and_the_3x_rule(in_process_run):
    _, result = in_process_run
    row = result["results"][1]
    assert ROW_FIELDS <= set(row)
    assert (row["image_size"], row["batch_size"], row["steps"], row["precision"]) == (
        75, 4, 2, "float32")
    assert row["forward_flops"] == zoo.count_flops("paper_cnn", 75)
    assert row["forward_gflops"] == pytest.approx(row["forward_flops"] / 1e9)
    assert row["images_per_s"] == pytest.approx(4 * 2 / row["seconds"])
    assert row["step_ms"] == pytest.approx(1000 * row["seconds"] / 2)
    assert row["train_tflops"] == pytest.approx(
        3 * row["forward_flops"] * row["images_per_s"] / 1e12, rel=1e-12)
    assert row["params_trainable"] == row["params_total"]  # the whole network trains
    assert math.isfinite(row["final_loss"]) and row["compile_and_warmup_s"] > 0
    assert result["train_flops_factor"] == 3 and "3 x forward FLOPs" in result["flops_rule"]


def test_unknown_backbone_exits_2_with_one_line():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--backbones", "paper_cnn", "no_such_net"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "unknown backbone 'no_such_net'" in proc.stderr and "paper_cnn" in proc.stderr


def test_image_size_below_minimum_exits_2(gb, capsys):
    assert gb.main(["--backbones", "inception_v3", "--image-size", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "minimum of inception_v3 (75 px)" in err


def test_out_of_memory_detection(gb):
    assert gb.is_out_of_memory(MemoryError())
    assert gb.is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying"))
    assert gb.is_out_of_memory(type("ResourceExhaustedError", (Exception,), {})("OOM"))
    assert not gb.is_out_of_memory(ValueError("zoom factor must be positive"))


def test_markdown_table_without_tabulate(gb, monkeypatch):
    monkeypatch.setitem(sys.modules, "tabulate", None)  # `import tabulate` now fails
    rows = [{"backbone": "paper_cnn", "image_size": 224, "batch_size": 32,
             "images_per_s": 1234.5, "step_ms": 25.9, "forward_gflops": 1.5,
             "train_tflops": 5.55, "peak_memory_gib": None, "compile_and_warmup_s": 3.2,
             "status": "ok"}]
    lines = gb.markdown_table(rows).splitlines()
    assert len(lines) == 3 and len({len(line) for line in lines}) == 1
    cells = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert lines[0].startswith("| backbone") and lines[2].startswith("| paper_cnn ")
    assert cells[3] == "1234.5" and cells[7] == "-" and cells[9] == "ok"


def test_native_run_estimate_arithmetic(gb):
    names = zoo.list_backbones()  # the study's six and the seven modern ones: --models all
    rows = [{"backbone": n, "status": "ok", "images_per_s": 100.0,
             "compile_and_warmup_s": 10.0} for n in names]
    estimate = gb.estimate_native_run(rows, gb.parse_args([]))
    assert estimate["missing"] == [] and len(estimate["entries"]) == 14
    n_train, n_val, n_test = 8012, 1002, 1001
    backbone = n_train * (30 + 5 / 3) / 100 + (n_val * 35 + n_val + n_test) / 300 + 2 * 10
    scratch = n_train * 60 / 100 + (n_val * 60 + n_val + n_test) / 300 + 10
    svm = 10_015 / 300
    entries = estimate["entries"]
    assert entries["inception_v3"]["seconds"] == pytest.approx(backbone)
    assert entries["paper_cnn"]["seconds"] == pytest.approx(scratch)
    assert entries["inception_resnet_v2+svm"]["seconds"] == pytest.approx(svm)
    assert entries["convnext_small"]["seconds"] == pytest.approx(backbone)
    assert estimate["hours"] == pytest.approx((12 * backbone + scratch + svm) / 3600)
    assert not any("batch" in c and "measured at" in c for c in estimate["caveats"])


@pytest.mark.slow
def test_jax_run_never_imports_tensorflow(tmp_path):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (pip install 'jax[cpu]') so the JAX backend cannot run")
    out = tmp_path / "jax.json"
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--backbones", "paper_cnn", "--image-size", "64",
         *QUICK, "--json", str(out)],
        capture_output=True, text=True, timeout=180, cwd=REPO, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    row = result["results"][0]
    assert row["backend"] == "jax" and row["status"] == "ok" and row["jit_compile"] is True
    # sys.modules of the parent and of the child that trained: TensorFlow was never imported.
    assert "tensorflow" not in result["modules_imported"]
    assert "tensorflow" not in row["modules_imported"]
    assert row["train_tflops"] == pytest.approx(
        3 * row["forward_flops"] * row["images_per_s"] / 1e12, rel=1e-12)
    assert "| paper_cnn" in proc.stdout and "GPU-hours" in proc.stdout

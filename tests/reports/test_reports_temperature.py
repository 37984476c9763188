"""The report's calibration section before and after temperature scaling, the reliability diagram
after scaling, and (slow) `--ensemble all --calibrated` / `--all --calibrated` on a copy of the
shared smoke run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

import benchmark
from core.atomic import read_json
from core.predictions import make_predictions, read_predictions, write_predictions
from core.rundir import RunDir
from core.temperature import TEMPERATURE_KEY, apply_temperature
from reports.build import build_report
from reports.calibration_figures import SCALED_RELIABILITY
from reports.markdown_stats import calibration_section
from reports.results import Entry

SMALL = {"backbones": {"inception_resnet_v2": 2.0, "xception": 1.5},
         "baselines": {"paper_cnn": 0.8}, "ensembles": ("soft_voting", "hard_voting"),
         "n_test": 150, "n_val": 150, "histories": False}


def _section(text: str) -> str:
    return text[text.index("### Calibration"): text.index("### Melanoma")]


def _row(section: str, name: str) -> list[str]:
    line = next(x for x in section.splitlines() if x.startswith(f"| {name} "))
    return [cell.strip() for cell in line.strip("|").split("|")]


def _arrow(before: float, after: float) -> str:
    return f"{before:.3f} → {after:.3f}"


@pytest.fixture(scope="module")
def reported(tmp_path_factory, synthetic_run):
    """A small generated run and its report, figures drawn."""
    run = synthetic_run(tmp_path_factory.mktemp("temperature") / "run", **SMALL)
    build_report(run.root, n_resamples=50, seed=0, processes=1)
    return run


def test_section_shows_before_and_after_scaling(reported):
    section = _section(reported.report_md.read_text(encoding="utf-8"))
    assert "**Temperature scaling.**" in section and "fitted on its validation" in section
    assert re.search(r"\| Entry +\| T \(fit on validation\) +\| Validation log loss +\| Log loss",
                     section)
    for name in ("inception_resnet_v2", "xception", "paper_cnn", "soft_voting"):
        folder = (reported.ensemble_dir(name) if name == "soft_voting"
                  else reported.model_dir(name))
        metrics = read_json(folder / "metrics.json")
        temp, test = metrics[TEMPERATURE_KEY], metrics["test"]
        assert temp["val_log_loss_after"] <= temp["val_log_loss_before"]
        assert _row(section, name) == [
            name, f"{temp['value']:.3f}" + (" (at the search bound)" if temp["at_bound"] else ""),
            _arrow(temp["val_log_loss_before"], temp["val_log_loss_after"]),
            *(_arrow(test[k], temp["test_after"][k]) for k in ("log_loss", "brier", "ece"))]
    assert _row(section, "hard_voting")[1:] == ["n/a (no probabilities)", "n/a", "n/a", "n/a",
                                                "n/a"]


def test_reliability_diagram_after_scaling(reported):
    figure = reported.figures_dir / SCALED_RELIABILITY
    assert figure.is_file() and figure.stat().st_size > 0
    assert (reported.figures_dir / "reliability.png").is_file()  # the one before scaling stays
    section = _section(reported.report_md.read_text(encoding="utf-8"))
    assert f"](figures/{SCALED_RELIABILITY})" in section
    assert "Reliability diagrams after temperature scaling" in section


def test_diagram_shown_only_when_drawn_for_the_current_metrics(synthetic_run, tmp_path):
    run = synthetic_run(tmp_path / "run", **{**SMALL, "ensembles": ()})
    build_report(run.root, n_resamples=20, seed=0, figures=False)
    assert SCALED_RELIABILITY not in _section(run.report_md.read_text(encoding="utf-8"))
    # drawn after the metrics (as reports.single draws it): shown
    run.figures_dir.mkdir(exist_ok=True)
    (run.figures_dir / SCALED_RELIABILITY).write_bytes(b"png")
    build_report(run.root, n_resamples=20, seed=0, figures=False)  # metrics.json unchanged
    assert f"](figures/{SCALED_RELIABILITY})" in run.report_md.read_text(encoding="utf-8")
    # xception's validation predictions change: its metrics.json is newer than the diagram
    path = RunDir.predictions_file(run.model_dir("xception"), "val")
    val = read_predictions(path)
    write_predictions(path, make_predictions(val.image_id, val.lesion_id, val.label,
                                             apply_temperature(val.proba, 0.5)))
    build_report(run.root, n_resamples=20, seed=0, figures=False)
    section = _section(run.report_md.read_text(encoding="utf-8"))
    assert SCALED_RELIABILITY not in section
    assert "→" in _row(section, "xception")[3]


def test_section_from_metrics_alone(tmp_path):
    def entry(name, folder, **metrics):
        return Entry(name, tmp_path / folder / name, metrics)

    test = {"log_loss": 0.9, "brier": 0.5, "ece": 0.2}
    ranked = [
        entry("a", "models", kind="backbone", test=test, temperature={
            "value": 1.5, "val_log_loss_before": 0.8, "val_log_loss_after": 0.7,
            "test_after": {"log_loss": 0.85, "brier": 0.48, "ece": 0.1}}),
        entry("b", "models", kind="backbone", test=test),  # no validation predictions
        entry("c", "models", kind="backbone", test=test, temperature={
            "value": 20.0, "at_bound": True, "val_log_loss_before": 1.9,
            "val_log_loss_after": 1.89, "test_after": test}),
        entry("soft_voting", "ensembles", kind="ensemble", calibrated=True, test=test,
              temperature={"value": 1.0, "val_log_loss_before": 0.7, "val_log_loss_after": 0.7,
                           "test_after": test}),
        entry("hard_voting", "ensembles", kind="ensemble", calibrated=True, probabilities=False,
              test={k: None for k in test}),
    ]
    section = calibration_section(ranked)
    assert _row(section, "a") == ["a", "1.500", "0.800 → 0.700", "0.900 → 0.850",
                                  "0.500 → 0.480", "0.200 → 0.100"]
    assert _row(section, "b") == ["b", "n/a (no validation predictions)", "n/a", "0.900",
                                  "0.500", "0.200"]
    assert _row(section, "c")[1] == "20.000 (at the search bound)"
    assert _row(section, "soft_voting")[1:3] == ["1.000", "0.700 → 0.700"]
    assert ("Built from temperature-scaled members (`--calibrated`; each member's T fitted on "
            "its validation predictions, recorded in fit.json): `soft_voting`, `hard_voting`."
            in section)
    assert "![" not in section  # no figure drawn in this folder


# ---------------------------------------------------------------------------------------------
# end to end on a copy of the shared smoke run


def _all_args(run: Path) -> list[str]:
    """The `--all` arguments the run was made with (run.json's command), without --out."""
    words = shlex.split(read_json(run / "run.json")["command"])
    start = next(i for i, w in enumerate(words) if w.endswith("benchmark.py")) + 1
    args = words[start:]
    if "--out" in args:
        i = args.index("--out")
        del args[i: i + 2]
    return args


def _check_calibrated(run: Path) -> None:
    ensembles = sorted(p.name for p in (run / "ensembles").iterdir() if p.is_dir())
    assert ensembles == ["hard_voting", "soft_voting", "stacking", "weighted_voting"]
    for name in ensembles:
        fit = read_json(run / "ensembles" / name / "fit.json")
        assert fit["calibrated"] is True
        assert sorted(fit["temperatures"]) == sorted(fit["members"])
        for member, temp in fit["temperatures"].items():
            assert temp["fit_on"] == "val"
            assert temp["val_log_loss_after"] <= temp["val_log_loss_before"]
            own = read_json(run / "models" / member / "metrics.json")[TEMPERATURE_KEY]
            assert temp["value"] == pytest.approx(own["value"], rel=1e-6)
    section = _section((run / "report.md").read_text(encoding="utf-8"))
    assert "Built from temperature-scaled members" in section
    assert "→" in _row(section, "xception")[3]
    assert f"](figures/{SCALED_RELIABILITY})" in section
    assert (run / "figures" / SCALED_RELIABILITY).is_file()


@pytest.mark.slow
def test_ensemble_all_calibrated_on_the_smoke_run(trained_smoke_run, copy_run, capsys):
    run = copy_run(trained_smoke_run)
    weights = {p: p.stat().st_mtime_ns for p in (run / "models").rglob("*.weights.h5")}
    assert benchmark.main(["--ensemble", "all", "--calibrated", "--out", str(run)]) == 0
    assert "temperature-scaled members" in capsys.readouterr().out
    _check_calibrated(run)
    assert {p: p.stat().st_mtime_ns for p in weights} == weights  # nothing retrained
    # a member's validation predictions change: --report refits the ensembles, calibrated
    path = run / "models" / "xception" / "predictions_val.csv"
    val = read_predictions(path)
    write_predictions(path, make_predictions(val.image_id, val.lesion_id, val.label,
                                             np.asarray(apply_temperature(val.proba, 0.7))))
    assert benchmark.main(["--report", "--out", str(run)]) == 0
    _check_calibrated(run)


@pytest.mark.slow
def test_all_calibrated_rebuilds_the_ensembles_of_a_finished_run(trained_smoke_run, copy_run):
    run = copy_run(trained_smoke_run)
    assert read_json(run / "ensembles" / "soft_voting" / "fit.json").get("calibrated") is not True
    assert benchmark.main([*_all_args(run), "--calibrated", "--out", str(run)]) == 0
    _check_calibrated(run)

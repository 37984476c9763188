"""A report with 22 entries stays readable: the ranking is grouped by kind and by family within
the backbones, the comparison figures show the best entries plus the reference, a second figure
shows them all, and the verdict compares the reference with every other entry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reports import figures as figure_module
from reports.build import build_report
from reports.entry_groups import (
    FIGURE_TOP,
    OTHER_FAMILY,
    entry_family,
    entry_group,
    figure_entries,
    group_ranked,
    kind_counts,
    kind_title,
)
from reports.results import Entry

REFERENCE = "inception_resnet_v2"
# the study's five and the seven modern backbones; the reference mid-field, so that it is not
# among the best eight
BACKBONES = {
    "inception_resnet_v2": 1.2, "inception_v3": 1.3, "resnext101": 1.5, "xception": 1.9,
    "nasnet_large": 1.0, "convnext_tiny": 2.0, "convnext_small": 2.3, "efficientnet_v2_s": 2.1,
    "efficientnet_b3": 1.8, "densenet121": 1.4, "resnet50_v2": 1.6, "mobilenet_v3_large": 1.1,
}
BASELINES = {"paper_cnn": 0.6, "inception_resnet_v2+svm": 0.9}
DERIVED = {"xception+tta8": ("tta", 2.0), "convnext_small+tta8": ("tta", 2.4),
           "inception_resnet_v2+tta8": ("tta", 1.25), "paper_cnn+tta8": ("tta", 0.65)}
# as zoo.catalog registers them; nasnet_large records none (a run from before families)
FAMILIES = {
    "inception_resnet_v2": ("Inception", "paper"), "inception_v3": ("Inception", "paper"),
    "xception": ("Inception", "paper"), "resnext101": ("ResNet", "paper"),
    "convnext_tiny": ("ConvNeXt", "modern"), "convnext_small": ("ConvNeXt", "modern"),
    "efficientnet_v2_s": ("EfficientNet", "modern"), "efficientnet_b3": ("EfficientNet", "modern"),
    "densenet121": ("DenseNet", "modern"), "resnet50_v2": ("ResNet", "modern"),
    "mobilenet_v3_large": ("MobileNet", "modern"), "paper_cnn": ("paper CNN", "paper"),
    "inception_resnet_v2+svm": ("SVM", "paper"),
}
N_ENTRIES = len(BACKBONES) + len(BASELINES) + 4 + len(DERIVED)
DRAWN = ("ranking_chart", "macro_roc_comparison", "macro_roc_panels")
STUBBED = ("roc_per_class", "confusion_matrices", "training_curves", "reliability_grid")


@pytest.fixture(scope="module")
def many(tmp_path_factory, synthetic_run):
    """A 22-entry run and its report: the comparison figures drawn for real (their inputs
    recorded), the per-entry figures stubbed (tested elsewhere; 60 of them would be slow)."""
    assert N_ENTRIES == 22
    run = synthetic_run(tmp_path_factory.mktemp("many") / "run", n_test=150, n_val=150,
                        backbones=BACKBONES, baselines=BASELINES, extra_entries=DERIVED,
                        families=FAMILIES)
    calls: dict[str, list[tuple]] = {name: [] for name in DRAWN}
    patch = pytest.MonkeyPatch()

    def spy(name):
        real = getattr(figure_module, name)

        def record(*args, **kwargs):
            calls[name].append(args)
            return real(*args, **kwargs)
        return record

    def stub(*args, **kwargs):
        path = next(a for a in args if isinstance(a, Path))
        path.write_bytes(b"stub")
        return path

    for name in DRAWN:
        patch.setattr(figure_module, name, spy(name))
    for name in STUBBED:
        patch.setattr(figure_module, name, stub)
    try:
        path = build_report(run.root, n_resamples=50, seed=0, processes=1)
    finally:
        patch.undo()
    return run, path.read_text(encoding="utf-8"), calls


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start): text.index(end)]


def _table_names(block: str) -> list[str]:
    """The Entry column of the markdown table rows in `block` (bold removed)."""
    names = []
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > 1 and cells[0].isdigit():
            names.append(cells[1].strip("*"))
    return names


def test_ranking_is_grouped_by_kind_then_family(many):
    _, text, _ = many
    ranking = _section(text, "## 2. Ranking", "## 3.")
    headings = re.findall(r"^### (2\.\d .*)$", ranking, flags=re.M)
    assert headings == ["2.1 Backbones, by family", "2.2 Baselines", "2.3 Ensembles",
                        "2.4 Test-time augmentation"]
    parts = re.split(r"^### 2\.\d .*$", ranking, flags=re.M)[1:]
    groups = [_table_names(p) for p in parts]
    assert [len(g) for g in groups] == [12, 2, 4, 4]
    assert sorted(n for g in groups for n in g) == sorted(
        [*BACKBONES, *BASELINES, "soft_voting", "hard_voting", "weighted_voting", "stacking",
         *DERIVED])
    # every row keeps its overall rank: 1..22 once each
    ranks = [int(line.split("|")[1]) for line in ranking.splitlines()
             if re.match(r"^\| +\d+ +\|", line)]
    assert sorted(ranks) == list(range(1, N_ENTRIES + 1))
    # the backbones' families are contiguous, a family without a record is "other"
    rows = [line for line in parts[0].splitlines() if re.match(r"^\| +\d+ +\|", line)]
    families = [line.split("|")[3].strip() for line in rows]
    assert families[:2] == ["ConvNeXt", "ConvNeXt"]  # convnext_small ranks first
    seen = [f for i, f in enumerate(families) if i == 0 or families[i - 1] != f]
    assert len(seen) == len(set(seen)) == 7
    assert families[groups[0].index("nasnet_large")] == OTHER_FAMILY
    assert "Models group" in parts[0] and "| modern" in parts[0]
    assert f"**{REFERENCE}**" in parts[0]
    assert "Family `other`: the entry's metrics.json records no family" in ranking
    # the header counts the kinds
    assert "22 with test predictions (12 backbones, 2 baselines, 4 ensembles, 4 TTA entries)" \
        in text


def test_comparison_figures_show_the_best_and_the_reference(many):
    run, text, calls = many
    (top_rows, metric, top_path, highlight, _), (all_rows, *_rest) = calls["ranking_chart"]
    top_names = [r["entry"] for r in top_rows]
    assert metric == "balanced_accuracy" and highlight == REFERENCE
    assert len(top_names) <= FIGURE_TOP + 1 and REFERENCE in top_names
    assert len(all_rows) == N_ENTRIES
    assert top_path.name == "ranking.png" and (run.figures_dir / "ranking_all.png").is_file()
    # the best eight by the ranking metric, in order, then the reference
    values = sorted((r["value"] for r in all_rows), reverse=True)
    assert [r["value"] for r in top_rows[:FIGURE_TOP]] == values[:FIGURE_TOP]
    assert top_names[-1] == REFERENCE and REFERENCE not in top_names[:FIGURE_TOP]
    # macro ROC: the best scored entries plus the reference; every scored entry by kind panel
    (top_roc, *_), = calls["macro_roc_comparison"]
    (all_roc, _path, _title, roc_highlight), = calls["macro_roc_panels"]
    assert len(top_roc) == FIGURE_TOP + 1 and REFERENCE in [e[0] for e in top_roc]
    assert len(all_roc) == N_ENTRIES - 1  # hard voting has no probabilities
    assert roc_highlight == REFERENCE
    for name in ("ranking", "ranking_all", "macro_roc", "macro_roc_all"):
        assert (run.figures_dir / f"{name}.png").stat().st_size > 10_000
    figures = _section(text, "## 7. Figures", "### Per entry")
    assert "### Ranking with 95 % intervals: the best 8 and the reference" in figures
    assert f"and the reference `{REFERENCE}`: " in figures
    assert "### Ranking of all 22 entries" in figures
    assert "(figures/ranking_all.png)" in figures and "(figures/macro_roc_all.png)" in figures
    # training curves: the comparison figure's backbones inline, the others folded
    curves = text[text.index("### Training curves"):]
    inline, folded = curves.split("<details>")
    assert f"Training curves of {REFERENCE}" in inline
    assert "Training curves of nasnet_large" in folded  # the worst backbone


def test_verdict_compares_the_reference_with_every_entry(many):
    _, text, _ = many
    section = _section(text, "## 3.", "## 4.")
    verdict = section[section.index("**Verdict.**"):].split("\n\n")[0]
    others = re.findall(r"`([^`]+)`", verdict[verdict.index("significantly better"):])
    named = {n for n in others if n not in ("balanced_accuracy",)}
    assert named == {n for n in [*BACKBONES, *BASELINES, *DERIVED, "soft_voting", "hard_voting",
                                 "weighted_voting", "stacking"] if n != REFERENCE}
    assert f"Holm-corrected per metric over the {N_ENTRIES - 1} comparisons" in verdict


def _entry(name: str, **metrics) -> Entry:
    return Entry(name, Path("models") / name, metrics)


def test_family_and_group_fall_back():
    base = _entry("xception", kind="backbone", family="Inception", group="paper")
    derived = _entry("xception+tta8", kind="tta")
    old = _entry("nasnet_large", kind="backbone")
    by_name = {e.name: e for e in (base, derived, old)}
    assert entry_family(base) == "Inception" and entry_group(base) == "paper"
    assert entry_family(derived, by_name) == "Inception"  # from the entry it derives from
    assert entry_family(derived) == OTHER_FAMILY  # without the run's entries
    assert entry_family(old, by_name) == entry_family(_entry("x+y"), by_name) == OTHER_FAMILY
    assert entry_family(_entry("a", family="  ")) == OTHER_FAMILY
    assert entry_group(old) == "n/a"


def test_groups_order_kinds_and_families():
    ranked = [_entry("e1", kind="ensemble"), _entry("b1", kind="backbone", family="B"),
              _entry("z1", kind="zeta"), _entry("a1", kind="backbone", family="A"),
              _entry("b2", kind="backbone", family="B"), _entry("p1", kind="baseline"),
              _entry("d1", kind="derived")]
    ranked.insert(1, _entry("t1", kind="tta"))
    groups = group_ranked(ranked)
    assert [g.kind for g in groups] == ["backbone", "baseline", "ensemble", "tta", "zeta",
                                        "derived"]
    backbones = groups[0]
    assert [(f.family, [(r, e.name) for r, e in f.rows]) for f in backbones.families] == [
        ("B", [(3, "b1"), (6, "b2")]), ("A", [(5, "a1")])]
    assert [f.family for g in groups[1:] for f in g.families] == [None] * 5
    assert kind_title("zeta") == "Entries of kind `zeta`" and kind_title("baseline") == "Baselines"
    # no backbone records a family (an older run): one unsplit table
    older = group_ranked([_entry("b1", kind="backbone"), _entry("b2", kind="backbone")])
    assert [(f.family, len(f.rows)) for f in older[0].families] == [(None, 2)]
    assert kind_counts(ranked) == ("3 backbones, 1 baseline, 1 ensemble, 1 TTA entry, "
                                   "1 of kind `zeta`, 1 of kind `derived`")


@pytest.mark.parametrize(("reference", "top", "expected"), [
    ("e3", 2, ["e0", "e1", "e3"]),   # the reference below the top: added
    ("e1", 2, ["e0", "e1"]),         # within the top: not repeated
    ("absent", 2, ["e0", "e1"]),     # not ranked: left out
    ("e4", 8, ["e0", "e1", "e2", "e3", "e4"]),  # fewer entries than the top
])
def test_figure_entries(reference, top, expected):
    ranked = [_entry(f"e{i}") for i in range(5)]
    assert [e.name for e in figure_entries(ranked, reference, top)] == expected


def test_figure_entries_refuses_an_empty_top():
    with pytest.raises(ValueError, match="top must be at least 1"):
        figure_entries([], "x", 0)


@pytest.mark.slow
def test_the_trainer_records_family_and_group(trained_smoke_run):
    """A trained entry's metrics.json records its zoo family and `--models` group (what the
    ranking groups by), and the smoke run's report groups its backbones by family."""
    from core.atomic import read_json

    expected = {"xception": ("Inception", "paper"), "inception_v3": ("Inception", "paper"),
                "paper_cnn": ("paper CNN", "paper")}
    for name, (family, group) in expected.items():
        metrics = read_json(trained_smoke_run / "models" / name / "metrics.json")
        assert (metrics["family"], metrics["group"]) == (family, group), name
    text = (trained_smoke_run / "report.md").read_text(encoding="utf-8")
    backbones = _section(text, "### 2.1 Backbones, by family", "### 2.2")
    assert re.search(r"\| +xception +\| Inception +\|", backbones)
    assert "Models group" not in backbones  # one group in this run
    assert "Family `other`" not in text


def test_a_run_of_one_models_group_shows_no_group_column(synthetic_run, tmp_path):
    families = {"convnext_tiny": ("ConvNeXt", "modern"), "densenet121": ("DenseNet", "modern")}
    run = synthetic_run(tmp_path / "run", n_test=60, n_val=60, backbones=dict.fromkeys(families, 1.5),
                        baselines={}, ensembles=(), histories=False, families=families)
    text = build_report(run.root, n_resamples=20, figures=False).read_text(encoding="utf-8")
    ranking = _section(text, "## 2. Ranking", "## 3.")
    assert "### 2.1 Backbones, by family" in ranking and "| ConvNeXt" in ranking
    assert "Models group" not in ranking
    # the reference is not in this run: nothing is bold, nothing is said about it
    assert "**" not in ranking.split("### 2.1")[1] and "The reference" not in ranking


def test_kind_palette_gives_unknown_kinds_their_own_colours():
    palette = figure_module.kind_palette(["tta", "backbone", "zeta", "tta"])
    assert list(palette) == ["tta", "backbone", "zeta"]
    assert palette["backbone"] == figure_module.KIND_COLORS["backbone"]
    assert len({*palette.values(), *figure_module.KIND_COLORS.values()}) == 5

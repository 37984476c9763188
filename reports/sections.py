"""Markdown that both reports share (the single run's reports.markdown and the grid's
reports.grid_markdown): links relative to the run directory, the title with the pipeline-check box
of a smoke or synthetic run, the rows on the data and the provenance of the run, the reference
entry's name, and the closing reproducibility and licence sections. Pure text generation.

`pipeline_check_note` is also the note at the top of `--all`'s console summary
(pipeline.all_action), so the two say the same."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from core import defaults
from core.facts import DISCLAIMER, LICENCE, SYNTHETIC, citations
from reports.context import NOT_RECORDED, SMOKE_PRESET, RunContext

# How the report names the default reference entry (core.defaults.REFERENCE).
REFERENCE_TITLE = "InceptionResNetV2"
REFERENCE_SHORT = "IRv2"


def rel_path(root: Path, path: Path) -> str:
    """`path` relative to the run directory `root`, with forward slashes."""
    return Path(os.path.relpath(path, root)).as_posix()


def md_link(root: Path, path: Path, text: str | None = None) -> str:
    """A markdown link from report.md in `root` to `path` (URL-quoted), showing `text` (default:
    the relative path)."""
    rel = rel_path(root, path)
    return f"[{text or rel}]({quote(rel)})"


def md_image(root: Path, path: Path, alt: str) -> str:
    """A markdown image from report.md in `root` to `path` (URL-quoted)."""
    return f"![{alt}]({quote(rel_path(root, path))})"


def title_lines(heading: str, root: Path, ctx: RunContext | None = None) -> list[str]:
    """The report's first lines: `# <heading>: `<run folder>``, the pipeline-check box of a smoke
    or synthetic run (`pipeline_check_note`, a GitHub warning admonition), then the disclaimer."""
    lines = [f"# {heading}: `{root.name}`", ""]
    note = pipeline_check_note(ctx) if ctx is not None else None
    if note:
        lines += ["> [!WARNING]", f"> **A pipeline check, not a benchmark.** {note}", ""]
    return [*lines, f"> **{DISCLAIMER}**"]


def pipeline_check_note(ctx: RunContext) -> str | None:
    """One sentence saying that a smoke or synthetic run checks the pipeline and that its numbers
    say nothing about the backbones (`RunContext.is_pipeline_check`); None for any other run.

    Args:
        ctx: the run's run.json facts.

    Returns:
        The sentence, naming why (generated images, the smoke preset, untrained backbones), or
        None.
    """
    if not ctx.is_pipeline_check:
        return None
    why = []
    if ctx.dataset == SYNTHETIC:
        why.append("generated synthetic images")
    if ctx.preset == SMOKE_PRESET:
        why.append("the CPU-sized smoke preset")
    if ctx.untrained_backbones:
        why.append("backbones without pretrained weights")
    return (f"This run checks that the pipeline works ({', '.join(why)}); its numbers say "
            "nothing about how good the backbones are.")


def reference_title(reference: str) -> str:
    """"InceptionResNetV2" for the default reference, else the entry name in backticks."""
    return REFERENCE_TITLE if reference == defaults.REFERENCE else f"`{reference}`"


def reference_short(reference: str) -> str:
    """"IRv2" for the default reference, else the entry name (for table headers)."""
    return REFERENCE_SHORT if reference == defaults.REFERENCE else reference


def dataset_rows(ctx: RunContext) -> list[tuple[str, str]]:
    """The first rows of the report's header table: the dataset and the split type."""
    split = (f"{ctx.split_type}-level" if ctx.split_type in ("lesion", "image")
             else ctx.split_type)
    return [("Dataset", ctx.dataset), ("Split", split)]


def provenance_rows(ctx: RunContext) -> list[tuple[str, str]]:
    """The header rows on where the numbers come from: fingerprint, preset, backend, command,
    date and versions (each "not recorded" when run.json lacks it)."""
    return [
        ("Protocol fingerprint", f"`{ctx.fingerprint}`" if ctx.fingerprint != NOT_RECORDED
         else NOT_RECORDED),
        ("Preset", ctx.preset),
        ("Keras backend", ctx.backend),
        ("Command line", f"`{ctx.command}`" if ctx.command != NOT_RECORDED else NOT_RECORDED),
        ("Date", ctx.date),
        ("Versions", ctx.versions),
    ]


def rebuild_command(root: Path, rank_by: str, reference: str) -> str:
    """The `--report` command that rebuilds this report (options only where not the default)."""
    return (f"python benchmark.py --report --out {root.as_posix()}"
            + (f" --rank-by {rank_by}" if rank_by != defaults.RANK_BY else "")
            + (f" --reference {reference}" if reference != defaults.REFERENCE else ""))


def reproducibility_section(
    root: Path, ctx: RunContext, what: str, rebuilt: str, rank_by: str, reference: str,
    files: str,
) -> str:
    """The closing section: the command that made the run, how to rebuild the report, its files,
    then the dataset licence and citations.

    Args:
        root: the run directory.
        ctx: its run.json facts.
        what: "run" or "grid".
        rebuilt: what the rebuild command writes, e.g. "this report, results.csv and the figures".
        rank_by, reference: the report's options (repeated in the rebuild command when not the
            default).
        files: the files sentence, without "Files: " and the final period (markdown links).

    Returns:
        Markdown text.
    """
    lines = ["## Reproducibility", ""]
    if ctx.command != NOT_RECORDED:
        lines += [f"The {what} was produced by:", "", "```sh", ctx.command, "```", ""]
    else:
        lines += [f"The command that produced this {what} was not recorded (no run.json).", ""]
    lines += [
        f"Rebuild {rebuilt} from the run directory alone (no training, no TensorFlow):",
        "",
        "```sh",
        rebuild_command(root, rank_by, reference),
        "```",
        "",
        f"Files: {files}.",
        "",
        *licence_section(),
    ]
    return "\n".join(lines)


def licence_section() -> list[str]:
    """The closing lines of every report: dataset licence, citations, disclaimer (core.facts)."""
    return ["## Dataset licence and citation", "", LICENCE, "",
            *[f"- {c}" for c in citations()], "", f"**{DISCLAIMER}**"]

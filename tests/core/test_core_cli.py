"""The CLI's own contract: documented options, one-line usage errors, user errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

import benchmark

REPO = benchmark.__file__.rsplit("/", 1)[0]


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as info:
        benchmark.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for action in benchmark.build_parser()._actions:
        for flag in action.option_strings:
            assert flag in text
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} has no help text"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--prepare", "--bogus"], "unrecognized arguments: --bogus"),
        (["--prepare", "--folds", "1"], "--folds needs at least 2 folds"),
        (["--prepare", "--ratios", "0.8,0.3,0.1"], "summing to 1"),
        (["--prepare", "--dataset", "imagenet"], "invalid choice: 'imagenet'"),
        (["--prepare", "--report"], "not allowed with argument"),
        (["--ensemble", "majority"], "invalid choice: 'majority'"),
    ],
)
def test_bad_usage_is_one_line(capsys, argv, expected):
    with pytest.raises(SystemExit) as info:
        benchmark.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert expected in err


def test_user_error_from_a_stage_has_no_traceback(tmp_path):
    # A report on a directory without predictions is a user error: one line, exit 2.
    result = subprocess.run(
        [sys.executable, "benchmark.py", "--report", "--out", str(tmp_path / "empty")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")

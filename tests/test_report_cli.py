"""``rh-eval report``: where it writes, what it leaves untouched on errors, and its help."""

from __future__ import annotations

import re

import pytest
from report_runs import NONE, niah_rows, two_runs, write_run

from rh_tasks.plugin.command import main


def run_cli(argv) -> int:
    return main(["report", *map(str, argv)])


def test_cli_errors_leave_existing_report_untouched(tmp_path, capsys):
    folders = two_runs(tmp_path)
    assert run_cli([*folders, "-o", tmp_path / "out", "--n-resamples", "2000"]) == 0
    assert "Wrote" in capsys.readouterr().out
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert set(before) == {"report.md", "report.json", "report.html", "forest.svg"}

    (tmp_path / "empty").mkdir()
    no_samples = tmp_path / "no_samples"
    write_run(no_samples, {"niah": niah_rows(NONE)})
    for sample in no_samples.rglob("samples_*"):
        sample.unlink()
    bad = two_runs(tmp_path / "bad", versions={"niah": 9.0})
    for args in ([tmp_path / "empty"], [no_samples], bad, [tmp_path / "missing"]):
        assert run_cli([*args, "-o", tmp_path / "out"]) == 2
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_cli_without_output_dir_writes_a_new_report_folder_and_never_overwrites(tmp_path, capsys):
    runs = tmp_path / "runs"
    folders = two_runs(runs)  # runs/none and runs/masked
    assert run_cli([*folders, "--n-resamples", "1000"]) == 0  # several: report/ in the folder holding them
    assert f"Wrote {runs / 'report' / 'report.md'}" in capsys.readouterr().out
    first = (runs / "report" / "report.json").read_bytes()
    assert run_cli([*folders, "--n-resamples", "2000"]) == 0  # a second report goes next to the first
    assert f"Wrote {runs / 'report-2' / 'report.md'}" in capsys.readouterr().out
    assert run_cli([runs, "--n-resamples", "1000"]) == 0  # one RUN_DIR: report/ inside it, numbered on
    assert f"Wrote {runs / 'report-3' / 'report.md'}" in capsys.readouterr().out
    assert (runs / "report" / "report.json").read_bytes() == first


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        run_cli(["--help"])
    usage, options = capsys.readouterr().out.split("options:")
    flags = [flag for flag in re.findall(r"\[(-[-\w]+)", usage) if flag != "-h"]  # the usage line names them all
    entries = [entry.strip() for entry in re.split(r"\n  (?=-)", options) if entry.strip()]
    assert flags and len(entries) == len(flags) + 1  # and --help
    for flag in flags:
        (entry,) = [e for e in entries if re.search(rf"(^|, ){flag}\b", re.split(r"\s{2,}", e)[0])]
        invocation, *explanation = re.split(r"\s{2,}", entry, maxsplit=1)  # the flags and metavars, then the text
        assert len(" ".join(explanation).split()) >= 5, f"{flag} has no explanation in --help: {entry!r}"

"""archcalc report and compare -o: every file, a self-contained page, and committed reports kept fresh."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT

from archcalc.api import report_data
from archcalc.cli import main
from archcalc.frontends.sources import zoo_models
from archcalc.render.files import Report, build, report_folder_name, to_markdown

REPORTS = ROOT / "reports"


def test_report_writes_every_file_and_a_self_contained_page(tmp_path):
    out = tmp_path / "lenet"
    result = CliRunner().invoke(main, ["report", "lenet5", "-o", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "report.html", "layers.csv", "summary.json", "layers.png", "timeline.png",
            "batch.png", "plan.png"} <= names
    page = (out / "report.html").read_text()
    images = re.findall(r'<img alt="[^"]+" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4 and all(len(i) > 1000 for i in images)
    assert "http://" not in page and "https://" not in page  # no network needed to read it
    for heading in ("Totals", "Inference memory", "Training memory", "Fit across GPUs", "Figures", "Layers"):
        assert f"<h2>{heading}" in page
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema"] == "archcalc.report/2" and summary["totals"]["params"] == 61_706
    assert [f["gpu"] for f in summary["fit"]] == ["T4", "A100-80GB", "H100-80GB"]


def test_report_with_validation_adds_measurements(tmp_path):
    out = tmp_path / "cifar"
    result = CliRunner().invoke(main, ["report", "cifar10-small", "-o", str(out), "--validate", "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["validation"]["mismatches"] == 0 and (out / "measured.png").exists()
    assert "Validation (onnxruntime)" in (out / "report.md").read_text()


def test_compare_writes_a_side_by_side_report(tmp_path):
    result = CliRunner().invoke(main, ["compare", "vgg11", "vgg16", "-o", str(tmp_path)])
    assert result.exit_code == 0
    md = (tmp_path / "compare.md").read_text()
    assert "| parameters | 132,863,336 | 138,357,544 |" in md and (tmp_path / "compare.html").exists()


@functools.cache
def _fresh(model: str) -> Report:
    """What `archcalc report --zoo -o reports` would write for ``model`` now, figures aside: its
    report data (an estimate, the fit table, the batch curve and a plan) computed once per session
    and judged by both checks below."""
    return build(model, report_folder_name(model), report_data(model), with_figures=False)


def _committed(model: str) -> Path:
    folder = REPORTS / report_folder_name(model)
    assert folder.is_dir(), f"missing: run `archcalc report --zoo -o reports` ({folder})"
    return folder


@pytest.mark.parametrize("model", sorted(zoo_models()))
def test_committed_zoo_report_is_fresh(model):
    assert (_committed(model) / "report.md").read_text() == to_markdown(_fresh(model)), \
        "stale: `archcalc report --zoo -o reports`"


@pytest.mark.parametrize("model", sorted(zoo_models()))
def test_committed_zoo_summary_is_fresh_and_names_its_files(model):
    summary = json.loads((_committed(model) / "summary.json").read_text())
    assert summary == json.loads(json.dumps(_fresh(model).summary)), "stale: `archcalc report --zoo -o reports`"
    for name in summary["files"]:
        assert (_committed(model) / name).is_file()

"""Every example of docs/examples is on the examples page (make docs runs them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "docs" / "examples").glob("*.py"))


# Running the examples is make docs' job (CI runs it): it executes each one and the
# Sphinx build, warnings as errors, fails on a figure one did not write. Running them
# here too cost make test 37 s.


def test_every_example_is_shown_in_the_docs():
    page = (EXAMPLES[0].parents[1] / "examples.rst").read_text()
    for script in EXAMPLES:
        assert f"examples/{script.name}" in page


def test_the_dicom_guide_runs(tmp_path, capsys):
    pytest.importorskip("pydicom")
    page = (EXAMPLES[0].parents[1] / "dicom.rst").read_text()
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:   .*\n|\n)+)", page)
    assert blocks, "dicom.rst shows no Python example"
    code = "\n".join(line[3:] for block in blocks for line in block.splitlines())
    exec(compile(code, "dicom.rst", "exec"), {"__name__": "dicom_guide"})
    printed = capsys.readouterr().out
    assert "examples_ybr_color.dcm' has 30 frames" in printed
    assert printed.count("[") >= 2  # two rows of predictions

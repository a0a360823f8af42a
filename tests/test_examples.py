"""The documentation's examples run on the synthetic set and write their figures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "docs" / "examples").glob("*.py"))


@pytest.mark.real_data
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
@pytest.mark.slow
def test_example_runs_and_writes_its_figure(script, tmp_path):
    env = {**os.environ, "SKCONV_EXAMPLES_OUT": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, str(script)],
        check=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        capture_output=True,
    )
    figures = re.findall(r'"(\w+\.png)"', script.read_text())
    assert figures, f"{script.name} names no figure"
    for name in figures:
        with Image.open(tmp_path / name) as image:
            assert image.size[0] >= 200 and image.size[1] >= 150


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

"""The demo package's surface: `pipeline.demo.shapes` offers every public name, the layout's
constants load without numpy or Pillow (the CLI reads them on every start), and `uvft data demo`
offers the extra sets the generator knows."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.cli import build_parser
from pipeline.demo import layout, shapes


def test_the_public_surface_resolves():
    assert len(shapes.__all__) == len(set(shapes.__all__))
    missing = [name for name in shapes.__all__ if not hasattr(shapes, name)]
    assert missing == []
    for name in ("generate", "written_params", "canonical_params", "EXTRA_TASKS", "SHAPES", "Shape"):
        assert name in shapes.__all__
    assert shapes.EXTRA_TASKS is layout.EXTRA_TASKS and shapes.REFER_REFS is layout.REFER_REFS


def test_the_layout_loads_without_the_generator():
    code = (
        "import sys, pipeline.demo.layout, pipeline.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'PIL', 'tqdm') "
        "or m.startswith('pipeline.demo.') and m != 'pipeline.demo.layout'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_command_offers_the_extra_sets(capsys: pytest.CaptureFixture[str]):
    parser = build_parser()
    args = parser.parse_args(["data", "demo", "--extra-tasks", *layout.EXTRA_TASKS])
    assert args.extra_tasks == ["refer", "ocr", "captions_de"]
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "demo", "--extra-tasks", "depth"])
    err = capsys.readouterr().err
    assert "invalid choice" in err and all(name in err.split("choose from")[1] for name in layout.EXTRA_TASKS)

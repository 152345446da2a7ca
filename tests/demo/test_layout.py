"""The demo package's surface: `pipeline.demo.shapes` offers every public name, the layout's
constants load without numpy or Pillow (the CLI reads them on every start), and `uvft data demo`
offers the extra sets the generator knows; the set's README names the module that wrote it."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

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
    assert args.extra_tasks == ["refer", "ocr", "captions_de", "regions"]
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "demo", "--extra-tasks", "depth"])
    err = capsys.readouterr().err
    assert "invalid choice" in err and all(name in err.split("choose from")[1] for name in layout.EXTRA_TASKS)


def test_the_readme_names_the_generator_it_came_from(tmp_path: Path):
    shapes.generate(tmp_path / "s", n_train=1, n_val=1, progress=False)
    readme = (tmp_path / "s" / layout.README).read_text()
    (command,) = [line.strip() for line in readme.splitlines() if "import generate" in line]
    module = re.search(r"from ([\w.]+) import generate;", command)
    assert module and importlib.import_module(module[1]).generate is shapes.generate

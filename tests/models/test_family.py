"""Both family modules satisfy the Family protocol (every name, every function's parameters), the
family table is the one list of families, and collate and generation ask the family rather
than its name."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import get_args

import pytest

from pipeline import formats, models
from pipeline.families import FAMILIES
from pipeline.formats.loc import FLORENCE, PALI
from pipeline.models.family import Family
from pipeline.recipe import Family as RecipeFamily

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"


def _members(kind: str) -> list[str]:
    """The protocol's data members ("data") or functions ("functions")."""
    functions = [n for n, v in vars(Family).items() if inspect.isfunction(v) and not n.startswith("_")]
    if kind == "functions":
        return functions
    return [n for n in Family.__annotations__ if n not in functions]


def test_the_family_table_is_the_one_list():
    assert FAMILIES == ("florence2", "paligemma")
    assert models.names() == list(FAMILIES)
    assert set(get_args(RecipeFamily)) == set(FAMILIES)  # the recipe schema's choices
    for name in ("florence3", "Florence2"):
        with pytest.raises(KeyError, match="known: florence2, paligemma"):
            models.get(name)
        with pytest.raises(KeyError, match="known: florence2, paligemma"):
            formats.get(name)


@pytest.mark.parametrize("name", FAMILIES)
def test_family_modules_satisfy_the_protocol(name):
    family = models.get(name)
    assert isinstance(family, Family)
    assert name == family.FAMILY
    assert name == formats.get(name).FAMILY
    data = "FAMILY DISPLAY_NAME MODEL_CLASS DECODER_ONLY IMAGE_TOKEN LOCATIONS LORA_TARGETS EMBEDDING_MODULES"
    functions = "load build_tiny real_config_tiny encode_batch encode_prompts target_lengths"
    assert set(_members("data")) == set(data.split())
    assert set(_members("functions")) == set(functions.split())
    for fn in _members("functions"):
        wanted = list(inspect.signature(getattr(Family, fn)).parameters.values())[1:]  # without self
        have = inspect.signature(getattr(family, fn)).parameters
        for p in wanted:
            assert p.name in have, f"{name}.{fn} lacks parameter {p.name}"
            assert have[p.name].kind == p.kind, f"{name}.{fn}({p.name}) is {have[p.name].kind}"
            if p.default is not p.empty:  # a default the callers rely on (a module may add one)
                assert have[p.name].default == p.default, f"{name}.{fn}({p.name}) default differs"
        extra = [p for n, p in have.items() if n not in {w.name for w in wanted}]
        assert all(p.default is not p.empty for p in extra), f"{name}.{fn} has required extras {extra}"


def test_family_facts():
    florence, pali = models.get("florence2"), models.get("paligemma")
    assert (florence.DECODER_ONLY, pali.DECODER_ONLY) == (False, True)
    assert (florence.LOCATIONS, pali.LOCATIONS) == (FLORENCE, PALI)
    assert florence.IMAGE_TOKEN == pali.IMAGE_TOKEN == "<image>"
    assert (florence.MODEL_CLASS, pali.MODEL_CLASS) == (
        "Florence2ForConditionalGeneration",
        "PaliGemmaForConditionalGeneration",
    )
    import transformers

    for family in (florence, pali):  # the class names are transformers' own
        assert hasattr(transformers, family.MODEL_CLASS)
        assert set(family.LORA_TARGETS) == set(models.PRESETS)


def test_no_branching_on_family_names_outside_the_family_modules():
    """Collate, generation, training and evaluation ask the family: no `== "florence2"` and no
    family-name dict outside the family table, the family and format modules and the recipe."""
    allowed = {"families.py", "recipe.py", "models/florence2.py", "models/paligemma.py"}
    allowed |= {"formats/florence2.py", "formats/pali.py", "formats/loc.py"}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in FAMILIES:
                found.append(f"{rel}:{node.lineno} {node.value!r}")
    assert found == []

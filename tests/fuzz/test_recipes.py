"""Fuzz: every field of the recipe schema, given values of the wrong type, is refused with its
dotted path (RecipeError), never accepted, never a traceback from inside pydantic or yaml; and an
alias bomb (a "billion laughs") as the value of any key of a recipe or a data card is refused by
name at once, before anything expands it."""

from __future__ import annotations

import types
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel
from yaml_bombs import BILLION_LAUGHS

from pipeline.data.cards import load_card
from pipeline.errors import DataError, RecipeError
from pipeline.recipe import Recipe, load_recipe

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "recipes/demo.yaml"
WRONG = {  # YAML override texts of the wrong type for each kind of field
    "int": ["true", "abc", "[1]", "1.5", "{a: 1}"],
    "float": ["true", "abc", "[1]", "{a: 1}"],
    "bool": ["abc", "[1]", "3", "{a: 1}"],
    "str": ["[1]", "{a: 1}", "true", "5"],
    "literal": ["123", "nope", "[1]"],
    "list": ["abc", "5", "{a: 1}"],
    "dict": ["abc", "[1]", "5"],
}


def _kind(ann: typing.Any) -> str | None:
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        return _kind(args[0]) if len(args) == 1 else None
    if origin is typing.Annotated:
        return _kind(args[0])
    if origin is typing.Literal:
        return "literal"
    if origin in (list, tuple):
        return "list"
    if origin is dict:
        return "dict"
    return {int: "int", float: "float", bool: "bool", str: "str"}.get(ann)


def _model(ann: typing.Any) -> type[BaseModel] | None:
    for a in (ann, *typing.get_args(ann)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
        inner = typing.get_args(a)
        if (
            typing.get_origin(a) is list
            and inner
            and isinstance(inner[0], type)
            and issubclass(inner[0], BaseModel)
        ):
            return inner[0]
    return None


def _leaves(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        sub = _model(ann)
        if sub is not None:
            is_list = typing.get_origin(ann) is list or any(
                typing.get_origin(a) is list for a in typing.get_args(ann)
            )
            out += _leaves(sub, f"{prefix}{name}.{'0.' if is_list else ''}")
        elif (kind := _kind(ann)) is not None:
            out.append((f"{prefix}{name}", kind))
    return out


CASES = [(key, value) for key, kind in _leaves(Recipe) for value in WRONG[kind]]


def test_the_fuzz_covers_every_section():
    keys = {k for k, _ in CASES}
    assert len(CASES) > 250 and {"train.lr", "adapter.r", "data.sources.0.format", "eval.metric"} <= keys


# lists the demo recipe leaves out, made first so that their items' keys can be set
MAKE_LIST = {
    "model.tiny.base_stages.": [
        "model.tiny.base_steps=0",
        "model.tiny.base_sources=null",
        "model.tiny.base_stages=[{steps: 1}]",
    ],
}


@pytest.mark.parametrize(("key", "value"), CASES)
def test_a_wrong_type_is_refused_with_its_path(key, value):
    first = [o for prefix, made in MAKE_LIST.items() if key.startswith(prefix) for o in made]
    with pytest.raises(RecipeError) as e:
        load_recipe(DEMO, [*first, f"{key}={value}"])
    assert f"{DEMO}: {key}" in str(e.value), str(e.value)


BOMB = "the YAML expands to more than 100000 values through aliases (&anchor/*alias); {} needs far fewer"
PLACE = "bomb-goes-here"


def _set(raw: dict, key: str, value: str) -> None:
    node: typing.Any = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if node is None:
            raise AssertionError(key)
    node[parts[-1]] = value


@pytest.mark.parametrize("key", sorted({k for k, _ in CASES}))
def test_an_alias_bomb_under_any_key_of_a_recipe_is_refused_at_once(tmp_path: Path, key: str) -> None:
    raw = yaml.safe_load(DEMO.read_text())
    _set(raw, key, PLACE)
    path = tmp_path / "bomb.yaml"
    path.write_text(yaml.safe_dump(raw).replace(PLACE, BILLION_LAUGHS))
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    assert str(e.value) == f"{path}: {BOMB.format('a recipe')}"


CARD_KEYS = ["name", "tasks", "format", "license", "homepage", "citation", "splits", "obtain", "label_map"]


@pytest.mark.parametrize("key", CARD_KEYS)
def test_an_alias_bomb_under_any_key_of_a_data_card_is_refused_at_once(tmp_path: Path, key: str) -> None:
    text = (ROOT / "data_cards/shapes.md").read_text()
    end = text.index("\n---", 3)
    meta = yaml.safe_load(text[4:end])
    meta[key] = PLACE
    path = tmp_path / "card.md"
    path.write_text(f"---\n{yaml.safe_dump(meta).replace(PLACE, BILLION_LAUGHS)}---{text[end + 4 :]}")
    with pytest.raises(DataError) as e:
        load_card(path)
    assert str(e.value) == f"file {path}: {BOMB.format('a card')}"

"""YAML read safely, in one place: `load_yaml` is `yaml.safe_load` (no tags, so no code) with
bounds on what aliases expand to and on nesting, for recipes, overrides, data cards and the
recipe.yaml of run folders and checkpoints (which may come from anyone: a hub download); and
`yaml_problem`, a YAML error on one line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from pipeline.errors import UvftError

# Bounds on a YAML document (a recipe, a data card's front matter, a run's recipe.yaml), far above
# what one holds (the demo recipe: ~150 values, 5 levels) and far below what costs time or memory.
MAX_YAML_VALUES = 100_000
MAX_YAML_DEPTH = 64


def load_yaml(text: str, error: Callable[[str], UvftError], *, what: str = "a recipe") -> Any:
    """`yaml.safe_load(text)`, bounded. safe_load refuses tags, not aliases: ten lines of anchors
    and aliases (a "billion laughs") build a value that every later walk of it (a copy, validation,
    a hash) expands to billions. So the document's nodes are counted first, as if every alias were
    written out, each node once (a node's count is memoised, so counting is linear in the text):
    more than MAX_YAML_VALUES, deeper than MAX_YAML_DEPTH, or an alias inside its own anchor is
    `error(message)` (its caller names the file), before anything is built. Plain anchors, aliases
    and merge keys (`<<: *base`) load as yaml.safe_load loads them; yaml.YAMLError passes through
    for the caller to word. `what` ends the message: "...; a recipe needs far fewer"."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:  # the composer recurses per level: hundreds of levels end here
            raise error(_too_deep(what)) from None
        if node is None:
            return None
        _check_expansion(node, error, what)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, error: Callable[[str], UvftError], what: str) -> None:
    """Count `root`'s values and levels with aliases expanded (see load_yaml), without recursion."""
    count: dict[int, int] = {}  # id(node) -> values it expands to, itself included
    height: dict[int, int] = {}  # id(node) -> levels it expands to
    open_: set[int] = set()  # the nodes whose children are being counted: the path from the root
    todo: list[tuple[yaml.Node, bool]] = [(root, False)]
    while todo:
        node, children_done = todo.pop()
        key = id(node)
        children = _yaml_children(node)
        if children_done:
            open_.discard(key)
            count[key] = 1 + sum(count[id(c)] for c in children)
            height[key] = 1 + max((height[id(c)] for c in children), default=0)
            if count[key] > MAX_YAML_VALUES:
                # as many nodes written out: a big document, not aliases
                how = "holds" if len(count) > MAX_YAML_VALUES else "expands to"
                through = "" if how == "holds" else " through aliases (&anchor/*alias)"
                raise error(
                    f"the YAML {how} more than {MAX_YAML_VALUES} values{through}; {what} needs far fewer"
                )
            if height[key] > MAX_YAML_DEPTH:
                raise error(_too_deep(what))
        elif key in open_:
            raise error(
                "an alias (&anchor/*alias) stands inside the value it names: it would expand without end"
            )
        elif key not in count:
            open_.add(key)
            todo.append((node, True))
            todo.extend((child, False) for child in children)


def _too_deep(what: str) -> str:
    return f"the YAML nests deeper than {MAX_YAML_DEPTH} levels; {what} needs a handful"


def _yaml_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return node.value
    return []


def yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error on one line: where, and what (PyYAML's own text spans four, with a caret)."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else str(problem)

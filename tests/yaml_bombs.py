"""The classic "billion laughs" as one line of flow YAML, to place as the value of any key: nine
anchors, each a list of nine aliases to the one before, so the last expands to 9**9 (387 million)
strings. yaml.safe_load builds it in microseconds, sharing the lists; every later walk of it (a copy,
validation, a hash, a dump as JSON) writes them all out."""

from __future__ import annotations

LEVELS = 9


def laughs(levels: int = LEVELS) -> str:
    items = ["&l0 [" + ", ".join(["lol"] * 9) + "]"]
    items += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(items) + "]"


BILLION_LAUGHS = laughs()


def demo_recipe_with_bomb(folder, old: str, new: str):
    """recipes/demo.yaml with `old` replaced by `new`, whose BOMB is the billion laughs, written
    to `folder`/bomb.yaml (returned)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "recipes/demo.yaml").read_text()
    assert old in text
    path = Path(folder) / "bomb.yaml"
    path.write_text(text.replace(old, new.replace("BOMB", BILLION_LAUGHS), 1))
    return path

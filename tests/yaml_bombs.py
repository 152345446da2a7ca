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

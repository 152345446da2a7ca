"""The nesting bound: JSON counted before it is parsed (strings and escapes respected, the same
answer whole or in pieces), parsed values walked, and the error naming file, record and offset."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from pipeline.errors import DataError
from pipeline.sources import nesting
from pipeline.sources.nesting import MAX_DEPTH, DepthCheckedFile, JsonDepth, check_json, check_value


def _reference_depth(text: str) -> int:
    """The deepest level of valid JSON, counted character by character."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def _random_value(rng: random.Random, depth: int) -> object:
    kind = rng.random()
    if depth <= 0 or kind < 0.3:  # strings full of what could fool a counter
        return "".join(
            rng.choice(['"', "\\", "[", "]", "{", "}", "a", "\\\\", '\\"']) for _ in range(rng.randrange(8))
        )
    if kind < 0.65:
        return [_random_value(rng, depth - 1) for _ in range(rng.randrange(4))]
    return {_random_value(rng, 0): _random_value(rng, depth - 1) for _ in range(rng.randrange(4))}


def _deepest(data: bytes, pieces: list[int]) -> int:
    """The depth the counter reaches over `data`, fed in pieces cut at `pieces`."""
    for limit in range(0, 200):
        counter = JsonDepth(file="f.json", limit=limit)
        try:
            cuts = [0, *pieces, len(data)]
            for a, b in itertools.pairwise(cuts):
                counter.feed(data[a:b])
        except DataError:
            continue
        return limit
    raise AssertionError("deeper than 200")


def test_the_count_is_exact_on_random_json_whole_or_in_pieces():
    rng = random.Random(0)
    for _ in range(200):
        text = json.dumps(_random_value(rng, rng.randrange(1, 9)))
        data = text.encode()
        cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randrange(0, 6))))
        assert _deepest(data, cuts) == _deepest(data, []) == _reference_depth(text), text


def test_backslash_runs_that_cross_pieces_and_chunks(monkeypatch):
    monkeypatch.setattr(nesting, "_CHUNK", 3)  # every run of backslashes crosses chunk bounds
    for run in range(7):  # an even run leaves the quote closing the string; an odd one escapes it
        text = json.dumps(["\\" * run + '"[[[', ["x"]])
        assert _deepest(text.encode(), [1, 4, 5]) == _reference_depth(text) == 2, text


def test_too_deep_names_file_record_and_offset():
    data = b'{"a": "[[[[", "b": ' + b"[" * 70 + b"]" * 70 + b"}"
    with pytest.raises(DataError) as err:
        check_json(data, file="anns.json", record="line 3", offset=100)
    # the 64th "[" after the object's own "{" is the 65th level: at index 19 + 63 in `data`
    assert str(err.value) == (
        f"file anns.json, record line 3: nesting deeper than {MAX_DEPTH} levels at byte offset "
        f"{100 + 19 + 63}; an annotation file nests a handful (COCO's: 5)"
    )
    check_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, file="f")  # the bound itself is allowed
    check_json('["' + "[" * 1000 + '"]', file="f")  # brackets inside a string are text


def test_a_streaming_parser_reading_through_the_check_stops_at_the_bound(tmp_path):
    import ijson

    path = tmp_path / "deep.json"
    # 20 bytes, two levels open, then 63 more reach the bound: the next "[" (20 + 62) is past it
    path.write_bytes(b'{"annotations": [1, ' + b"[" * 100_000 + b"]" * 100_000 + b"]}")
    with path.open("rb") as f, pytest.raises(DataError, match=r"deeper than 64 levels at byte offset 82;"):
        list(ijson.items(DepthCheckedFile(f, file=path), "annotations.item"))


def test_parsed_values_are_walked_to_the_bound():
    deep: list = []
    node = deep
    for _ in range(MAX_DEPTH - 2):
        node.append([])
        node = node[0]
    check_value({"k": deep}, file="refs.p")  # 64 levels: the dict and 63 lists
    check_value("scalar", file="refs.p")
    node.append({(1, (2,)): None})  # 66 levels in `deep` through a dict's key
    with pytest.raises(DataError) as err:
        check_value(deep, file="refs.p", record="ref 3")
    assert str(err.value) == (
        f"file refs.p, record ref 3: nesting deeper than {MAX_DEPTH} levels; an annotation nests a handful"
    )

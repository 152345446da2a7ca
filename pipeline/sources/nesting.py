"""How deeply what a reader parses may nest: MAX_DEPTH levels, far above any real annotation file
(a COCO or VQAv2 file nests 5: the top object, a list, a record, a field, a polygon), and far below
what costs time or memory to refuse.

Without a bound, nesting is where parsing stops being linear: ijson keeps one prefix string per
open level, each as long as the path to it, so a 2 MB file of brackets held gigabytes while
streaming; orjson stops at 1024 levels, but a value of a thousand levels makes every `repr` of
it in an error message a RecursionError. So JSON is counted before it is parsed, by `JsonDepth`,
one pass over the bytes with numpy (brackets inside strings are text, and escaped quotes do not end
a string), whole (`check_json`) or as a stream hands it over (`DepthCheckedFile`), and a value
parsed from another format (a pickle, a `datasets` Json column) is walked by `check_value`, which
stops at the bound. Both raise TooDeep, a DataError naming the file (and the record where known):
"nesting deeper than 64 levels at byte offset N".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pipeline.errors import DataError

MAX_DEPTH = 64
_CHUNK = 1 << 20  # bytes counted at once: numpy's temporaries stay a few MB whatever the file
_QUOTE, _BACKSLASH = 0x22, 0x5C
_STEP = np.zeros(256, np.int8)  # byte -> how it changes the depth outside a string
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


class TooDeep(DataError):
    """Nesting past the bound (a DataError: it names the file, and the record where known)."""


def _too_deep(limit: int) -> str:
    return f"nesting deeper than {limit} levels"


class JsonDepth:
    """The nesting depth of JSON bytes fed in order, whole or in pieces; `feed` raises a DataError
    at the first bracket deeper than `limit`. Linear in the bytes, whatever they hold: the state
    carried from one piece to the next is four numbers. Brackets in invalid JSON may be counted
    where a parser would stop first; in valid JSON the count is exact."""

    def __init__(
        self, *, file: str | Path, record: str | int | None = None, limit: int = MAX_DEPTH, offset: int = 0
    ) -> None:
        self.file, self.record, self.limit = file, record, limit
        self.offset = offset  # of the next byte fed, in the file
        self.depth = 0
        self._in_string = 0  # 1 inside a string
        self._backslashes = 0  # how many backslashes the bytes fed so far end with

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        for start in range(0, len(view), _CHUNK):
            self._count(np.frombuffer(view[start : start + _CHUNK], np.uint8))

    def _count(self, a: np.ndarray) -> None:
        quotes = np.flatnonzero(a == _QUOTE)
        if quotes.size:
            quotes = self._unescaped(a, quotes)
        steps = _STEP[a]
        brackets = np.flatnonzero(steps)
        if brackets.size:
            # a bracket is text when an odd number of quotes (and the string carried in) precede it
            outside = brackets[((np.searchsorted(quotes, brackets) + self._in_string) & 1) == 0]
            if outside.size:
                levels = self.depth + np.cumsum(steps[outside], dtype=np.int64)
                over = np.flatnonzero(levels > self.limit)
                if over.size:
                    raise TooDeep(
                        f"{_too_deep(self.limit)} at byte offset {self.offset + int(outside[over[0]])}; "
                        "an annotation file nests a handful (COCO's: 5)",
                        file=self.file,
                        record=self.record,
                    )
                self.depth = int(levels[-1])
        self._in_string ^= quotes.size & 1
        if a.size:
            if a[-1] == _BACKSLASH:
                others = np.flatnonzero(a != _BACKSLASH)
                self._backslashes = (
                    a.size - 1 - int(others[-1]) if others.size else self._backslashes + a.size
                )
            else:
                self._backslashes = 0
        self.offset += a.size

    def _unescaped(self, a: np.ndarray, quotes: np.ndarray) -> np.ndarray:
        """The quotes that open or close a string: those after an even run of backslashes."""
        after_backslash = np.zeros(quotes.size, bool)
        after_backslash[quotes > 0] = a[quotes[quotes > 0] - 1] == _BACKSLASH
        if quotes[0] == 0:
            after_backslash[0] = self._backslashes > 0
        if not after_backslash.any():
            return quotes
        maybe = quotes[after_backslash]
        others = np.flatnonzero(a != _BACKSLASH)
        before = np.searchsorted(others, maybe) - 1  # the last byte before the run of backslashes
        # no such byte in this piece: the run goes on from the previous one
        start = np.where(before >= 0, others[np.maximum(before, 0)], -1 - self._backslashes)
        escaped = ((maybe - 1 - start) & 1) == 1
        return np.setdiff1d(quotes, maybe[escaped], assume_unique=True)


def check_json(
    data: bytes | bytearray | memoryview | str,
    *,
    file: str | Path,
    record: str | int | None = None,
    offset: int = 0,
) -> None:
    """Refuse JSON `data` that nests deeper than MAX_DEPTH (see JsonDepth); `offset`: where `data`
    starts in the file."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    # fewer opening brackets than the bound cannot nest deeper than it: most JSON lines stop here
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return
    JsonDepth(file=file, record=record, offset=offset).feed(data)


class DepthCheckedFile:
    """A binary file whose bytes are counted by a JsonDepth as a streaming parser reads them, so
    the parser never sees a level past the bound (ijson's memory grows with the square of it)."""

    def __init__(self, f: BinaryIO, *, file: str | Path) -> None:
        self._f = f
        self._depth = JsonDepth(file=file)

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._depth.feed(data)
        return data


def check_value(
    value: Any, *, file: str | Path, record: str | int | None = None, limit: int = MAX_DEPTH
) -> None:
    """Refuse a parsed value (of lists, tuples, dicts, sets and scalars, as a pickle or a parser
    gives them) that nests deeper than `limit`. Walks it a level at a time, without recursion,
    each container once, keys too (a pickle's may be tuples); stops at the bound."""
    level = [value] if type(value) in _CONTAINERS else []
    for _ in range(limit):
        below: list[Any] = []
        for node in level:
            if type(node) is dict:
                below += [v for v in node.values() if type(v) in _CONTAINERS]
                below += [k for k in node if type(k) in _CONTAINERS]
            else:
                below += [v for v in node if type(v) in _CONTAINERS]
        if not below:
            return
        level = below
    raise TooDeep(f"{_too_deep(limit)}; an annotation nests a handful", file=file, record=record)


_CONTAINERS = frozenset({list, tuple, dict, set, frozenset})

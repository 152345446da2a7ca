"""Reserved text: the special tokens of a family's tokenizer, which user text must not hold, and
the one check of every user-text field of an Example against them. The build runs it on every
Example a reader yields, before rendering (so a new reader has it for free); `uvft predict` runs
it on what it is asked.

A special token inside a caption, a question or a label is not text to the model: PaliGemma's
processor counts `<image>` tokens against the images (a question holding one fails its batch, on
every resume, so the run can never finish), Florence-2's processor refuses a prompt holding a task
token, a `<loc…>` in an answer is a coordinate, an `<eos>` ends a target early, and parse strips
or splits on what render wrote. Each format module states its family's reserved text as one
pattern, `RESERVED` (made by `pattern`), with a named group per kind of token: image, location,
segmentation, task, special. A skip names the kind and the field.

What `screen` does with an Example:

- a user-text field holding reserved text: the example is skipped and counted, "{kind} token in
  {field}" (e.g. "image token in question"). Skipped, not a DataError: it is one bad record (as a
  question without answers is), and data.max_skip_fraction decides when there are too many; its
  error names the reasons;
- a vocabulary entry (`categories`) holding it: dropped from the vocabulary and counted as a
  repair (repairs.RESERVED_CATEGORY). The vocabulary is shared by every example of a source: one
  bad class name must not skip them all; the examples that use the name are skipped by their
  label or objects;
- line breaks and tabs in a single-line field (every user-text field but OCR's `text`, where lines
  are content): a run of them becomes one space, counted as a repair (repairs.LINE_BREAK):
  PaliGemma ends its prefix with "\\n", and the parsers read a label up to a separator.

User text is what a person wrote and the model reads, writes or is scored on: label, caption,
captions, question, answer, answers, categories, the objects' and crowd regions' categories,
phrase, text and the regions' texts. Not checked: ids and paths (never rendered), `language`
(a code: the readers refuse anything else) and `answer_type` (a scoring group, never rendered).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import replace

from pipeline.errors import DataError
from pipeline.records import Example, Region, Tally
from pipeline.sources import repairs

KINDS = ("image", "location", "segmentation", "task", "special")
# every reserved token starts with one of these (`pattern` makes it so): a text without them holds none
LEADS = "<["

# line breaks (what str.splitlines splits at) and tabs; spaces around them fold into the one space.
# All of them are unprintable (str.isprintable), which screen's quick look relies on
_BREAK_CHARS = "\t\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
_BREAKS = re.compile(f" *[{_BREAK_CHARS}][{_BREAK_CHARS} ]*")
# the user-text fields by shape (OCR's `text` is the one that keeps its lines)
_TEXT_FIELDS = ("label", "caption", "question", "answer", "phrase")
_LIST_FIELDS = ("captions", "answers")
_OBJECT_FIELDS = ("objects", "crowd")
SHOWN = 60  # characters of a value shown in a log line or an error


def literal(tokens: Iterable[str]) -> str:
    """A regex matching any of `tokens` as written (longest first, so `<OCR_WITH_REGION>` is not
    read as `<OCR>` plus text)."""
    return "|".join(re.escape(t) for t in sorted(set(tokens), key=len, reverse=True))


def pattern(**kinds: str) -> re.Pattern[str]:
    """A family's reserved text: `kinds` maps each kind of token (one of KINDS) to a regex of its
    tokens; `find` names the kind of a match. Only text starting with one of LEADS matches (the
    tests tie each pattern to its tokenizer's tokens, so a token without a lead fails there)."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown kinds of token {unknown}; known: {', '.join(KINDS)}")
    alternatives = "|".join(f"(?P<{kind}>{rx})" for kind, rx in kinds.items())
    return re.compile(f"(?=[{re.escape(LEADS)}])(?:{alternatives})")


@functools.lru_cache(maxsize=1 << 16)  # a build asks about the same few thousand texts many times
def find(text: str, reserved: re.Pattern[str]) -> tuple[str, str] | None:
    """(kind, token) of the first reserved text in `text`, or None."""
    m = reserved.search(text)
    if m is None:
        return None
    kind = next(k for k, v in m.groupdict().items() if v is not None)
    return kind, m.group()


@functools.lru_cache(maxsize=1 << 16)
def one_line(text: str) -> str:
    """`text` with each run of line breaks and tabs (and the spaces around it) as one space."""
    return _BREAKS.sub(" ", text).strip() if _BREAKS.search(text) else text


def screen(ex: Example, reserved: re.Pattern[str], tally: Tally) -> bool:
    """Check every user-text field of `ex` (see the module doc): False when the example is skipped
    (counted in `tally`, whose `examples` no longer counts it); True when it is kept, with line
    breaks replaced and the vocabulary's reserved entries dropped in place, each counted."""
    # the common case first, at C speed: no text can hold a token (none has a lead) or a break
    texts = _user_texts(ex)
    joined = " ".join([*(t for _, t in texts), *ex.categories])  # no token holds a space to span a join
    if joined.isprintable() and not any(lead in joined for lead in LEADS):
        return True
    for name, value in texts:
        if hit := find(value, reserved):
            kind, token = hit
            tally.drop(f"{kind} token in {name}", f"{_where(ex)}: {name} {_short(value)!r} holds {token}")
            return False
    if ex.categories:
        kept, dropped = _vocabulary(tuple(ex.categories), reserved)
        if dropped:
            ex.categories = list(kept)
            tally.repair(repairs.RESERVED_CATEGORY, f"{_where(ex)}: {', '.join(map(repr, dropped))}")
    if changed := _to_one_line(ex):
        tally.repair(repairs.LINE_BREAK, f"{_where(ex)}: {', '.join(changed)}")
    return True


def checked(ex: Example, reserved: re.Pattern[str], family: str) -> Example:
    """`ex` as `screen` keeps it, or a DataError naming the field whose text holds reserved text:
    for what a person asks `uvft predict` (a question, a phrase, classes), refused rather than
    skipped."""
    # predict's vocabulary is the classes asked for (--classes)
    for name, value in (*_user_texts(ex), *(("classes", c) for c in ex.categories)):
        if hit := find(value, reserved):
            kind, token = hit
            raise DataError(
                f"{_short(value)!r} holds {token}, {'an' if kind == 'image' else 'a'} {kind} token of "
                f"{family}: the model would read it as that token, not as text; leave it out",
                field=name,
            )
    _to_one_line(ex)
    return ex


def _user_texts(ex: Example) -> list[tuple[str, str]]:
    """(field, text) of every user text of `ex` but the vocabulary (see the module doc)."""
    out = [(name, v) for name in (*_TEXT_FIELDS, "text") if (v := getattr(ex, name)) is not None]
    out += [(name, v) for name in _LIST_FIELDS for v in getattr(ex, name)]
    out += [(f"{name}.category", o.category) for name in _OBJECT_FIELDS for o in getattr(ex, name)]
    out += [("regions.text", r.text) for r in ex.regions]
    return out


@functools.lru_cache(maxsize=256)  # one per vocabulary: every example of a source shares it
def _vocabulary(categories: tuple[str, ...], reserved: re.Pattern[str]) -> tuple[tuple[str, ...], list[str]]:
    """(the entries kept, the entries holding reserved text)."""
    dropped = [c for c in categories if find(c, reserved)]
    return tuple(c for c in categories if c not in dropped), dropped


def _to_one_line(ex: Example) -> list[str]:
    """Replace line breaks and tabs in the single-line fields of `ex`; the fields changed."""
    changed = []
    for name in _TEXT_FIELDS:
        value = getattr(ex, name)
        if value is not None and (fixed := one_line(value)) != value:
            setattr(ex, name, fixed)
            changed.append(name)
    for name in (*_LIST_FIELDS, "categories"):
        values = getattr(ex, name)
        fixed_values = [one_line(v) for v in values]
        if fixed_values != values:  # a new list: a vocabulary may be shared by other examples
            setattr(ex, name, list(dict.fromkeys(fixed_values)) if name == "categories" else fixed_values)
            changed.append(name)
    for name in _OBJECT_FIELDS:
        objects = getattr(ex, name)
        if any(one_line(o.category) != o.category for o in objects):
            setattr(ex, name, [replace(o, category=one_line(o.category)) for o in objects])
            changed.append(f"{name}.category")
    if any(one_line(r.text) != r.text for r in ex.regions):
        ex.regions = [Region(one_line(r.text), r.quad) for r in ex.regions]
        changed.append("regions.text")
    return changed


def _where(ex: Example) -> str:
    return f"{ex.source}/{ex.split} record {ex.id}" if ex.source else f"record {ex.id}"


def _short(text: str) -> str:
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"

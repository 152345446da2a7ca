"""VQAv2 (official JSON format) -> VQA Examples.

Two files: questions (`{"questions": [{"image_id", "question", "question_id"}], "data_subtype":
"train2014", ...}`) and annotations (`{"annotations": [{"question_id", "image_id", "answers":
[{"answer", "answer_confidence", "answer_id"}], "multiple_choice_answer", "answer_type",
"question_type"}]}`). One Example per question, id = str(question_id), in question-file order.
`language` (optional, e.g. "de" for a translated VQAv2) is set on every Example; None: English.

`answers` keeps all ten human answers (answer_id order), untouched, because the VQA accuracy
metric scores a prediction against each of them. The text trained on is the most frequent
answer (see `most_frequent_answer`). The image file is `image_pattern` formatted with
`image_id` and the questions file's `data_subtype`, under `images`.

Skipped and counted: "question without answers" (no annotation for the question, or an empty
answer list: e.g. the test split, which ships without annotations) and unusable image files.
Errors (DataError naming file, record and field): JSON that does not parse or nests deeper than
64 levels (sources/nesting.py; the annotations are counted as they stream), missing required
keys, duplicate question ids, an annotation whose question_id is not among the questions or
whose image_id disagrees with its question's, a `language` that is not a code (see language_code).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import DataError
from pipeline.records import Example
from pipeline.sources import register
from pipeline.sources.context import SourceContext
from pipeline.sources.images import (
    check_image,
    id_sort_key,
    json_list_items,
    language_code,
    prefetch_checks,
    read_json,
    require,
    require_id,
    require_list,
)
from pipeline.sources.nesting import TooDeep
from pipeline.tasks import VQA

DEFAULT_IMAGE_PATTERN = "COCO_{data_subtype}_{image_id:012d}.jpg"


def most_frequent_answer(answers: list[str]) -> str:
    """The answer given most often, counted after stripping and lower-casing.

    Ties go to the answer whose normalised form occurs first in `answers` (so the result is
    deterministic and follows the file's answer_id order). Returns that first occurrence,
    stripped but with its original case.
    """
    if not answers:
        raise ValueError("most_frequent_answer needs at least one answer")
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for answer in answers:
        key = answer.strip().lower()
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, answer.strip())
    # dicts keep insertion order and max() returns the first maximum: first occurrence wins ties
    best = max(counts, key=counts.__getitem__)
    return first[best]


def _answers(ann: dict[str, Any], *, file: Path, record: str) -> list[str]:
    """The answers' texts in answer_id order (the file's order where it has no ids)."""
    raw = require(ann, "answers", file=file, record=record, what="an annotation")
    if not isinstance(raw, list):
        raise DataError("'answers' must be a list", file=file, record=record, field="answers")
    try:  # as VQAv2 has them: objects with a string answer and ids 1..10 in order
        texts = [item["answer"] for item in raw]
        ids = [item.get("answer_id", i) for i, item in enumerate(raw)]
    except (TypeError, KeyError, AttributeError):
        pass  # the checks below name what is wrong
    else:
        in_order = all(type(i) is int for i in ids) and all(a < b for a, b in itertools.pairwise(ids))
        if in_order and all(type(t) is str for t in texts):
            return texts
    items: list[tuple[Any, str]] = []
    for index, item in enumerate(raw):
        answer = require(item, "answer", file=file, record=record, what="an answer")
        if not isinstance(answer, str):
            raise DataError(
                f"answer must be a string, got {answer!r}", file=file, record=record, field="answer"
            )
        items.append((item.get("answer_id", index), answer))
    return [a for _, a in sorted(items, key=lambda it: id_sort_key(it[0]))]


def _add_answers(
    answered: dict[Any, tuple[list[str], str | None]],
    ann: Any,
    by_qid: dict[Any, dict[str, Any]],
    afile: Path,
    qfile: Path,
) -> None:
    """Check one annotation against the questions and keep its answers by question id."""
    qid = require_id(ann, "question_id", file=afile, record="annotation ?", what="an annotation")
    record = f"question {qid}"
    if qid not in by_qid:
        raise DataError(
            f"question_id {qid!r} is not in the questions file {qfile.name}",
            file=afile,
            record=record,
            field="question_id",
        )
    if qid in answered:
        raise DataError("duplicate question id", file=afile, record=record, field="question_id")
    if "image_id" in ann and ann["image_id"] != by_qid[qid]["image_id"]:
        raise DataError(
            f"image_id {ann['image_id']!r} differs from the question's {by_qid[qid]['image_id']!r}",
            file=afile,
            record=record,
            field="image_id",
        )
    answered[qid] = (_answers(ann, file=afile, record=record), ann.get("answer_type"))


def _stream_answers(
    answered: dict[Any, tuple[list[str], str | None]],
    afile: Path,
    by_qid: dict[Any, dict[str, Any]],
    qfile: Path,
) -> bool:
    """Answers of the annotations file streamed item by item (json_list_items); False when it
    could not be (no items, or ijson stopped on the file): the caller reads it whole instead."""
    import ijson

    try:
        for ann in json_list_items(afile, "annotations"):
            _add_answers(answered, ann, by_qid, afile, qfile)
    except (ijson.JSONError, OSError):
        return False
    except TooDeep:  # found before ijson saw it: reading the file whole would only find it again
        raise
    except DataError:
        read_json(afile)  # a file that does not parse says so first, as when read whole
        raise
    return bool(answered)


@register("vqav2")
def read_vqav2(
    ctx: SourceContext,
    *,
    questions: Path,
    images: Path,
    annotations: Path | None = None,
    image_pattern: str = DEFAULT_IMAGE_PATTERN,
    language: str | None = None,
) -> Iterator[Example]:
    """Yield one VQA Example per question, with all ten human answers kept for scoring."""
    qfile = Path(questions)
    language = language_code(language, file=qfile)
    qdata = read_json(qfile)
    subtype = qdata.get("data_subtype") if isinstance(qdata, dict) else None
    by_qid: dict[Any, dict[str, Any]] = {}
    for q in require_list(qdata, "questions", file=qfile):
        qid = require_id(q, "question_id", file=qfile, record="question ?", what="a question")
        record = f"question {qid}"
        require_id(q, "image_id", file=qfile, record=record, what="a question")
        text = require(q, "question", file=qfile, record=record, what="a question")
        if not isinstance(text, str) or not text.strip():
            raise DataError(
                f"question must be a non-empty string, got {text!r}",
                file=qfile,
                record=record,
                field="question",
            )
        if qid in by_qid:
            raise DataError("duplicate question id", file=qfile, record=record, field="question_id")
        by_qid[qid] = q
    del qdata
    if subtype is None and "{data_subtype" in image_pattern:
        raise DataError(
            f"the questions file has no 'data_subtype', which image_pattern {image_pattern!r} needs",
            file=qfile,
            field="data_subtype",
        )

    answered: dict[Any, tuple[list[str], str | None]] = {}
    if annotations is not None:
        afile = Path(annotations)
        if not _stream_answers(answered, afile, by_qid, qfile):
            answered.clear()  # read whole: the usual error, or what the stream could not give
            adata = read_json(afile)
            for ann in require_list(adata, "annotations", file=afile):
                _add_answers(answered, ann, by_qid, afile, qfile)
            del adata

    def image_path(qid: Any, image_id: Any) -> str:
        record = f"question {qid}"
        try:
            relpath = image_pattern.format(image_id=image_id, data_subtype=subtype, question_id=qid)
        except (KeyError, IndexError, ValueError) as e:
            raise DataError(
                f"cannot format image_pattern {image_pattern!r} with image_id={image_id!r}, "
                f"data_subtype={subtype!r}: {e!r}",
                file=qfile,
                record=record,
                field="image_id",
            ) from None
        return ctx.paths.confine(images, relpath, file=qfile, record=record, field="image_id")

    paths = {qid: image_path(qid, q["image_id"]) for qid, q in by_qid.items() if answered.get(qid, ([],))[0]}
    prefetch_checks(paths.values(), ctx)  # each image opened once per build, on every core
    for qid, q in by_qid.items():
        record = f"question {qid}"
        answers, answer_type = answered.get(qid, ([], None))
        if not answers:
            ctx.tally.skip("question without answers", record)
            continue
        path = paths[qid]
        size = check_image(path, ctx, record=record)
        if size is None:
            continue
        yield ctx.example(
            str(qid),
            path,
            size,
            task=VQA,
            question=q["question"].strip(),
            answer=most_frequent_answer(answers),
            answers=answers,
            answer_type=answer_type,
            language=language,
        )

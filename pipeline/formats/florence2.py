"""Florence-2's text format: render an Example to (prompt, target), parse a generation back.

Prompts. Caption and detection use Florence's own task tokens, `<CAPTION>` and `<OD>`, which
`Florence2Processor` expands into its pretraining sentences; a caption's level chooses among
`<CAPTION>`, `<DETAILED_CAPTION>` (level "detailed") and `<MORE_DETAILED_CAPTION>` ("paragraph").
Florence has no task token for VQA or classification, so those use plain sentences in the style
of its task prompts:

- vqa: `VQA_PROMPT` = "Answer the question: {question}"
- classification: `CLASSIFICATION_PROMPT` = "What category does the image belong to?"

Targets. Caption, vqa and classification targets are `caption`, `answer` and `label`. A
detection target is Florence's `<OD>` output: `category<loc_x1><loc_y1><loc_x2><loc_y2>` per
object, concatenated without separators, in raster order (`loc.sort_objects`); no objects gives
the empty string. The example's `categories` are not part of the prompt (`<OD>` has none).

The other tasks use Florence's own task tokens, which the processor expands into its
pretraining sentences:

- grounding: `<CAPTION_TO_PHRASE_GROUNDING>{phrase}` -> `phrase<loc_x1><loc_y1><loc_x2><loc_y2>`
  (one or more boxes after the phrase, raster order), parsed as detection is;
- segmentation: `<REFERRING_EXPRESSION_SEGMENTATION>{phrase}` -> the mask's polygons as
  `<loc_x><loc_y>` pairs, polygons joined by `<sep>` (see `polygons_text`);
- ocr: `<OCR>` -> the text; with regions, `<OCR_WITH_REGION>` -> `text<loc_x1><loc_y1>..<loc_y4>`
  per region (a quad, clockwise from the top-left), and the parsed text is the regions' texts
  joined by spaces.

- dense_region_caption: `<DENSE_REGION_CAPTION>` -> `description<loc_x1><loc_y1><loc_x2><loc_y2>`
  per region (raster order), parsed as detection is, the description in the category's place;
- region_proposal: `<REGION_PROPOSAL>` -> `<loc_x1><loc_y1><loc_x2><loc_y2>` per box, no labels
  (parsed boxes have category "");
- open_vocabulary_detection: `<OPEN_VOCABULARY_DETECTION>{class}` -> `class<loc>x4` per object;
  the task token takes one text, so an example names exactly one class;
- region_to_category, region_to_description, region_to_ocr: `<REGION_TO_…>` followed by the
  region's four location tokens -> the answer (`label`, `caption`, `text`) followed by the same four
  tokens, as Florence-2 answers them (`car<loc_52><loc_332><loc_932><loc_774>`); parse keeps the
  text before the tokens;
- region_to_segmentation: `<REGION_TO_SEGMENTATION><loc>x4` -> the mask's polygons, as segmentation.

A caption or question's `language` changes nothing: Florence-2 was pretrained in English only
(the recipe check warns).

Parsing detection accepts one label per box and one label followed by several boxes
(`a<loc>x4<loc>x4`), as Florence emits both. It never raises; `Prediction.errors` counts one per
piece that does not become an object: a box with an out-of-range token (`<loc_1000>`), a
truncated box (a run of location tokens whose length is not a multiple of four adds one), a box
with no label before it (one per box), a label with no location token after it, and a fragment
starting with "<" that is no token (a label ends at "<"). Boxes keep
their decoded coordinates (bin centres, always inside the image); a reversed box is not swapped.

A category that could not be read back (empty, padded with spaces, or holding "<") raises
DataError at render time rather than producing a target parse would misread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pipeline.errors import DataError
from pipeline.formats import Prediction, check_named, check_phrase, reserved, text_pair, writable_label
from pipeline.formats.loc import FLORENCE, SPECIAL_MARKERS, sort_objects, strip_markers
from pipeline.records import TASKS, Example, ImageSize, Object, Region

logger = logging.getLogger(__name__)

FAMILY = "florence2"
LOCATIONS = FLORENCE  # <loc_0>..<loc_999>, x1 y1 x2 y2
MASK_CODES = 0  # masks are written as polygons, not as codes of a codebook (PaliGemma: 16)
DETECTION_LISTS_CATEGORIES = False  # `<OD>`: every category it knows
PROMPTS_NAME_LANGUAGE = False  # pretrained in English only: a caption's language is not in its prompt
CAPTION_PROMPT = "<CAPTION>"
DETECTION_PROMPT = "<OD>"
VQA_PROMPT = "Answer the question: {question}"
CLASSIFICATION_PROMPT = "What category does the image belong to?"
GROUNDING_PROMPT = "<CAPTION_TO_PHRASE_GROUNDING>"  # + the phrase
SEGMENTATION_PROMPT = "<REFERRING_EXPRESSION_SEGMENTATION>"  # + the phrase
OCR_PROMPT = "<OCR>"
OCR_REGION_PROMPT = "<OCR_WITH_REGION>"
# a caption's level (Example.level, None: brief) -> its task token
CAPTION_PROMPTS = {
    None: CAPTION_PROMPT,
    "detailed": "<DETAILED_CAPTION>",
    "paragraph": "<MORE_DETAILED_CAPTION>",
}
DENSE_REGION_CAPTION_PROMPT = "<DENSE_REGION_CAPTION>"
REGION_PROPOSAL_PROMPT = "<REGION_PROPOSAL>"
OPEN_VOCABULARY_PROMPT = "<OPEN_VOCABULARY_DETECTION>"  # + the class
# region_to_* -> its task token, followed by the region's four location tokens
REGION_PROMPTS = {
    "region_to_category": "<REGION_TO_CATEGORY>",
    "region_to_description": "<REGION_TO_DESCRIPTION>",
    "region_to_ocr": "<REGION_TO_OCR>",
    "region_to_segmentation": "<REGION_TO_SEGMENTATION>",
}
# the region tasks answered in words, and the Example field holding the answer
REGION_ANSWER_FIELD = {
    "region_to_category": "label",
    "region_to_description": "caption",
    "region_to_ocr": "text",
}
# the task tokens the tiny tokenizer carries as special tokens (the processor expands every task
# token into its sentence before tokenizing, so the others need none)
TASK_TOKENS = (CAPTION_PROMPT, DETECTION_PROMPT)


def extra_tokens() -> list[str]:
    """Special tokens the format writes: the 1000 location tokens, then the task tokens it uses."""
    return [*FLORENCE.tokens(), *TASK_TOKENS]


# Florence-2's reserved text (formats/reserved.py): every token its tokenizer or processor would
# read in user text. The tokenizer's specials are BART's and `<image>`; the checkpoints' processor
# adds the location tokens and these tags as special tokens (sic "desciption", as shipped):
TAG_TOKENS = (
    *("<od>", "</od>", "<ocr>", "</ocr>", "<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>"),
    *("<grounding>", "</grounding>", "<seg>", "</seg>", "<sep>", "<region_cap>", "</region_cap>"),
    *("<region_to_desciption>", "</region_to_desciption>", "<proposal>", "</proposal>", "<poly>"),
    *("</poly>", "<and>"),
)
BART_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
# Florence2Processor swaps each of its task tokens for a sentence, and refuses a prompt holding a
# task token that takes no input beside other text; the tiny tokenizer carries TASK_TOKENS too
PROCESSOR_TASK_TOKENS = (
    *("<OCR>", "<OCR_WITH_REGION>", "<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>"),
    *("<OD>", "<DENSE_REGION_CAPTION>", "<REGION_PROPOSAL>", "<CAPTION_TO_PHRASE_GROUNDING>"),
    *("<REFERRING_EXPRESSION_SEGMENTATION>", "<REGION_TO_SEGMENTATION>", "<OPEN_VOCABULARY_DETECTION>"),
    *("<REGION_TO_CATEGORY>", "<REGION_TO_DESCRIPTION>", "<REGION_TO_OCR>"),
)
RESERVED = reserved.pattern(
    image=reserved.literal(["<image>"]),
    location=FLORENCE.pattern.pattern,  # any digits: parse reads `<loc_1000>` as a location too
    task=reserved.literal(PROCESSOR_TASK_TOKENS),
    special=reserved.literal([*BART_SPECIALS, *TAG_TOKENS, *SPECIAL_MARKERS]),  # parse strips the markers
)


def _check_category(ex: Example, category: str) -> None:
    if not writable_label(category, "<"):  # parse ends a label at the first "<"
        raise DataError(
            f"category {category!r} cannot be written in a Florence-2 target "
            "(it must be non-empty, without surrounding spaces, without '<')",
            record=ex.id,
            field="objects",
        )


def render(example: Example) -> tuple[str, str]:
    """The (prompt, target) pair Florence-2 is trained on for one Example."""
    ex = example
    if ex.task in ("caption", "vqa", "classification"):
        return text_pair(ex, caption=CAPTION_PROMPTS, vqa=VQA_PROMPT, classification=CLASSIFICATION_PROMPT)
    if ex.task in ("detection", "dense_region_caption"):
        prompt = DETECTION_PROMPT if ex.task == "detection" else DENSE_REGION_CAPTION_PROMPT
        return prompt, _labelled_boxes(ex, ex.objects)
    if ex.task == "region_proposal":
        boxes = sort_objects(ex.objects, ex.image_size, FLORENCE.bins)
        return REGION_PROPOSAL_PROMPT, "".join(FLORENCE.encode(o.bbox, ex.image_size) for o in boxes)
    if ex.task == "open_vocabulary_detection":
        name = _named_class(ex)
        return OPEN_VOCABULARY_PROMPT + name, _labelled_boxes(ex, ex.objects)
    if ex.task == "grounding":
        phrase = check_phrase(ex, "<")
        boxes = sort_objects(ex.objects, ex.image_size, FLORENCE.bins)
        return GROUNDING_PROMPT + phrase, phrase + "".join(
            FLORENCE.encode(o.bbox, ex.image_size) for o in boxes
        )
    if ex.task in ("segmentation", "region_to_segmentation"):
        if ex.task == "segmentation":
            prompt = SEGMENTATION_PROMPT + check_phrase(ex, "<")
        else:
            prompt = REGION_PROMPTS[ex.task] + _region_tokens(ex)
        try:
            target = polygons_text(ex.polygons, ex.image_size)
        except ValueError as err:
            raise DataError(str(err), record=ex.id, field="polygons") from None
        return prompt, target
    if ex.task in REGION_ANSWER_FIELD:
        # as Florence-2 answers these: the answer, then the region it was asked about
        name = REGION_ANSWER_FIELD[ex.task]
        answer = getattr(ex, name)
        if not writable_label(answer, "<"):
            raise DataError(
                f"{name} {answer!r} cannot be written in a Florence-2 target "
                "(it must be non-empty, without surrounding spaces, without '<')",
                record=ex.id,
                field=name,
            )
        tokens = _region_tokens(ex)
        return REGION_PROMPTS[ex.task] + tokens, answer + tokens
    assert ex.task == "ocr" and ex.text is not None
    if not ex.regions:
        return OCR_PROMPT, ex.text
    parts = []
    for i, region in enumerate(ex.regions):
        if not writable_label(region.text, "<"):
            raise DataError(
                f"region text {region.text!r} cannot be written in a Florence-2 target "
                "(it must be non-empty, without surrounding spaces, without '<')",
                record=ex.id,
                field=f"regions[{i}].text",
            )
        parts.append(region.text + FLORENCE.encode_points(region.quad, ex.image_size))
    return OCR_REGION_PROMPT, "".join(parts)


def _labelled_boxes(ex: Example, objects: Sequence[Object]) -> str:
    """`label<loc_x1><loc_y1><loc_x2><loc_y2>` per object in raster order (detection, dense region
    captions, open-vocabulary detection)."""
    parts = []
    for obj in sort_objects(objects, ex.image_size, FLORENCE.bins):
        _check_category(ex, obj.category)
        parts.append(obj.category + FLORENCE.encode(obj.bbox, ex.image_size))
    return "".join(parts)


def _named_class(ex: Example) -> str:
    """The one class an open-vocabulary prompt names (`<OPEN_VOCABULARY_DETECTION>` takes one text),
    every object being of it."""
    if len(ex.categories) != 1:
        raise DataError(
            f"Florence-2's <OPEN_VOCABULARY_DETECTION> names one class, not {len(ex.categories)} "
            f"({', '.join(map(repr, ex.categories))}): give one example per class",
            record=ex.id,
            field="categories",
        )
    name = ex.categories[0]
    _check_category(ex, name)
    check_named(ex, ex.categories)
    return name


def _region_tokens(ex: Example) -> str:
    assert ex.region is not None  # Example guarantees a region_to_* example its region
    return FLORENCE.encode(ex.region, ex.image_size)


def parse(text: str, task: str, image_size: ImageSize) -> Prediction:
    """Read a Florence-2 generation (special markers may remain) back into a Prediction."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    if task in ("detection", "grounding", "dense_region_caption", "open_vocabulary_detection"):
        objects, errors = _parse_detection(strip_markers(text), image_size)
        if errors:
            logger.debug("florence2 %s: %d unparsable pieces in %r", task, errors, text)
        return Prediction(task=task, text=text, objects=objects, errors=errors)
    if task == "region_proposal":
        objects, errors = _parse_proposals(strip_markers(text), image_size)
        return Prediction(task=task, text=text, objects=objects, errors=errors)
    if task in ("segmentation", "region_to_segmentation"):
        polygons, errors = parse_polygons(text, image_size)
        return Prediction(task=task, text=text, polygons=polygons, errors=errors)
    if task in REGION_ANSWER_FIELD:
        return _parse_region_answer(text, task)
    if task == "ocr" and FLORENCE.pattern.search(text):
        regions, errors = parse_regions(text, image_size)
        return Prediction(task=task, text=" ".join(r.text for r in regions), regions=regions, errors=errors)
    return Prediction(task=task, text=strip_markers(text))


def _parse_region_answer(text: str, task: str) -> Prediction:
    """A region_to_category / _description / _ocr answer: the text before the region's location
    tokens, which Florence-2 writes after its answer (the post-processor's pure text keeps them).
    No text, a run of other than four location tokens, and text after them count one error each."""
    pieces = FLORENCE.split(strip_markers(text))
    first = next((i for i, p in enumerate(pieces) if not isinstance(p, str)), len(pieces))
    answer, rest = "".join(map(str, pieces[:first])).strip(), pieces[first:]
    tokens = sum(not isinstance(p, str) for p in rest)
    stray = any(isinstance(p, str) and p.strip() for p in rest)
    errors = int(not answer) + int(tokens not in (0, 4)) + int(stray)
    return Prediction(task=task, text=answer, errors=errors)


def _parse_proposals(text: str, size: ImageSize) -> tuple[list[Object], int]:
    """Region proposals: every four location tokens a box (no label: category ""), as the
    post-processor reads `<REGION_PROPOSAL>`; text between them, an invalid token and a truncated
    run count one error each."""
    errors = 0
    run: list[int | None] = []
    for piece in FLORENCE.split(text):
        if not isinstance(piece, str):
            run.append(piece)
        elif piece.strip():
            errors += 1
    boxes, bad = FLORENCE.boxes(run, size)
    return [Object(box, "") for box in boxes], errors + bad


def parse_regions(text: str, size: ImageSize) -> tuple[list[Region], int]:
    """(regions, errors) of an `<OCR_WITH_REGION>` generation: `text<loc_x1><loc_y1>..<loc_y4>` per
    region, as Florence2PostProcessor reads it. A text without its 8 location tokens, a run of
    another length, an invalid token and location tokens before any text count one error each
    (the region then dropped)."""
    regions: list[Region] = []
    errors = 0
    label: str | None = None  # the text read whose quad has not come yet
    run: list[int | None] = []

    def close() -> None:
        nonlocal errors, label
        points, bad = FLORENCE.points(run, size)
        if label is None or len(run) != 8 or bad:
            errors += 1
        else:
            regions.append(Region(label, tuple(points)))
        run.clear()
        label = None

    for piece in FLORENCE.split(strip_markers(text)):
        if not isinstance(piece, str):
            run.append(piece)
            continue
        chunk = piece.strip()
        if not chunk:
            continue
        if run:
            close()
        elif label is not None:
            errors += 1  # the previous text never got its quad
        label = chunk
    if run:
        close()
    elif label is not None:
        errors += 1  # a trailing text: the generation stopped before its quad
    return regions, errors


# ---------------------------------------------------------------------------- polygons
#
# A mask as Florence-2 writes it for <REFERRING_EXPRESSION_SEGMENTATION> (and
# <REGION_TO_SEGMENTATION>): each polygon a run of <loc_x><loc_y> pairs, polygons separated by
# <sep>, optionally wrapped in <poly>...</poly>, as transformers' Florence2PostProcessor reads them
# (parse_description_with_polygons_from_text_and_spans).

POLYGON_SEPARATOR = "<sep>"
POLYGON_MARKERS = ("<poly>", "</poly>")


def polygons_text(polygons: Sequence[Sequence[float]], size: ImageSize) -> str:
    """A mask's polygons (flat `[x1, y1, x2, y2, ...]` lists in pixels) as location tokens."""
    for i, poly in enumerate(polygons):
        if len(poly) < 6 or len(poly) % 2:
            raise ValueError(f"polygon {i}: needs at least 3 points (an even count of >= 6 numbers)")
    return POLYGON_SEPARATOR.join(FLORENCE.encode_points(poly, size) for poly in polygons)


def parse_polygons(text: str, size: ImageSize) -> tuple[list[list[float]], int]:
    """(polygons at bin centres, errors) of a generation: text between the location tokens other
    than separators, invalid tokens, a coordinate without its pair and polygons of fewer than
    three points each count one error (the polygon then dropped)."""
    text = strip_markers(text)
    for marker in POLYGON_MARKERS:
        text = text.replace(marker, POLYGON_SEPARATOR)
    polygons: list[list[float]] = []
    errors = 0
    for part in text.split(POLYGON_SEPARATOR):
        run: list[int | None] = []
        for piece in FLORENCE.split(part):
            if isinstance(piece, str):
                errors += bool(piece.strip())
            else:
                run.append(piece)
        if not run:
            continue
        points, bad = FLORENCE.points(run, size)
        errors += bad
        if len(points) >= 6:
            polygons.append(points)
        else:
            errors += 1
    return polygons, errors


def _parse_detection(text: str, size: ImageSize) -> tuple[list[Object], int]:
    objects: list[Object] = []
    errors = 0
    label: str | None = None
    label_has_boxes = True  # no label yet: nothing is missing
    run: list[int | None] = []

    def close_run() -> None:
        nonlocal errors
        boxes, bad = FLORENCE.boxes(run, size)
        if label is None:
            errors += len(boxes) + bad  # boxes before any label belong to nothing
        else:
            objects.extend(Object(box, label) for box in boxes)
            errors += bad
        run.clear()

    for piece in FLORENCE.split(text):
        if not isinstance(piece, str):
            run.append(piece)
            label_has_boxes = True
            continue
        # a label ends at "<" (render refuses categories holding one): what follows is a
        # fragment no target has, e.g. a location token cut off mid-way
        chunk, sep, _ = piece.partition("<")
        chunk = chunk.strip()
        if sep:
            errors += 1
        if not chunk:  # whitespace between location tokens (some decoders add it) changes nothing
            continue
        if run:
            close_run()
        if not label_has_boxes:
            errors += 1
        label, label_has_boxes = chunk, False
    if run:
        close_run()
    if not label_has_boxes:
        errors += 1  # a trailing label: the last object was cut off before its box
    return objects, errors

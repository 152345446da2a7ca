"""PaliGemma's text format: render an Example to (prompt, target), parse a generation back.

Prompts follow PaliGemma's pretraining prefixes (big_vision):

- caption: `CAPTION_PROMPT` = "caption {lang}", the example's language ("en" when it has none);
  a detailed caption (level "detailed") `DESCRIBE_PROMPT` = "describe {lang}", PaliGemma's prefix
  for longer captions; a paragraph (level "paragraph") is refused: PaliGemma has one longer prefix
- vqa: `VQA_PROMPT` = "answer {lang} {question}"
- classification: `CLASSIFICATION_PROMPT` = "answer en what category does this image belong to?"
  (PaliGemma has no classification prefix; a VQA question reuses the "answer en" skill)
- detection: "detect " + " ; ".join(categories), the source's whole vocabulary in its own order
  so training and evaluation prompts match; without a vocabulary, the sorted unique categories
  of the objects (and just "detect" when there are none).

- grounding: "detect {phrase}", target `<locY1><locX1><locY2><locX2> {phrase}` per box, joined
  by " ; " (PaliGemma's referring-expression format), parsed as detection is
- ocr: "ocr", target the text (PaliGemma's OCR writes no regions: an example's regions are not
  rendered)
- open_vocabulary_detection: as detection, the prompt naming the example's classes
  (`detect a ; b`), every object of one of them
- segmentation: "segment {phrase}", target `<locY1><locX1><locY2><locX2><segNNN>x16 {phrase}`
  (PaliGemma's referring-segmentation format): the box is the mask's extent at location-token bins
  (`mask_window`, so the codes are made in the very window decoding pastes them into), the 16
  codes the example's `mask_codes`, made by the build with the recipe's mask VQ-VAE
  (pipeline.models.vqvae); an example without them is refused. Parsed into one object (box and
  phrase) and its 16 codes per ` ; `-separated instance; evaluation decodes the codes into a mask.
- refused at build time, each with its reason (`UNSUPPORTED`): what its pretraining has no prompt
  for: dense region captions, region proposals and the region_to_* tasks

Targets. Caption, vqa and classification targets are `caption`, `answer` and `label`. A
detection target is PaliGemma's detection output: `<locY1><locX1><locY2><locX2> category` per
object (4-digit bins, 1024 per axis), joined by " ; ", in raster order (`loc.sort_objects`); no
objects gives the empty string.

Parsing segmentation reads each ` ; `-separated piece as four location tokens, codes and a label;
a piece that is not that (no box, an out-of-range token, a box with no area, other than 16 codes,
a code over 127) is one error and no object, as big_vision's evaluator counts an invalid prediction.

Parsing detection accepts `<loc>x4 label ; <loc>x4 label` and several boxes before one label
(`<loc>x8 label`); segmentation tokens (`<seg000>`..) are ignored. It never raises;
`Prediction.errors` counts one per piece that does not become an object: a box with an
out-of-range token (`<loc1024>`), a truncated box (a run of location tokens whose length is not
a multiple of four adds one), a box with no label after it before the next ";" or the end (one
per box; e.g. a generation cut off before its last label), a label with no box before it, and a
fragment starting with "<" that is no token (a label ends at "<").
Boxes keep their decoded coordinates (bin centres, always inside the image); a reversed box is
not swapped.

A category that could not be read back (empty, padded with spaces, or holding "<" or ";")
raises DataError at render time rather than producing a prompt or target parse would misread.
"""

from __future__ import annotations

import functools
import logging
import re

from pipeline.errors import DataError
from pipeline.formats import (
    Prediction,
    check_named,
    check_phrase,
    outline,
    refuse,
    reserved,
    text_pair,
    writable_label,
)
from pipeline.formats.loc import PALI, SPECIAL_MARKERS, bins_to_box, box_to_bins, sort_objects, strip_markers
from pipeline.records import TASKS, Box, Example, ImageSize, Object

logger = logging.getLogger(__name__)

FAMILY = "paligemma"
LOCATIONS = PALI  # <loc0000>..<loc1023>, y1 x1 y2 x2
DETECTION_LISTS_CATEGORIES = True  # `detect a ; b`: the prompt names what to look for
PROMPTS_NAME_LANGUAGE = True  # `caption de`, `answer de ...`
CAPTION_PROMPT = "caption {lang}"  # {lang}: the example's language, default "en"
DESCRIBE_PROMPT = "describe {lang}"  # a detailed caption: PaliGemma's longer-caption prefix
# a caption's level (Example.level, None: brief) -> its prompt; paragraphs have none (refused)
CAPTION_PROMPTS = {None: CAPTION_PROMPT, "detailed": DESCRIBE_PROMPT}
VQA_PROMPT = "answer {lang} {question}"
CLASSIFICATION_PROMPT = "answer en what category does this image belong to?"
DETECTION_PREFIX = "detect"
OCR_PROMPT = "ocr"
SEGMENT_PREFIX = "segment"
SEPARATOR = " ; "
SEG_TOKENS = 128
MASK_CODES = 16  # a mask is written as 16 codes of a 128-entry codebook (pipeline.models.vqvae)

_SEG_RE = re.compile(r"<seg[0-9]+>")


def extra_tokens() -> list[str]:
    """Special tokens of the format: the 1024 location tokens, then the 128 segmentation tokens."""
    return [*PALI.tokens(), *(f"<seg{i:03d}>" for i in range(SEG_TOKENS))]


# PaliGemma's reserved text (formats/reserved.py): every token its tokenizer or processor would
# read in user text. Gemma's control tokens (its other added pieces, HTML tags such as `<b>` and
# runs of spaces or line breaks, are ordinary text to it), then PaliGemma's own: `<image>`, which
# the processor counts against the images, and the location and segmentation tokens (any digits:
# parse reads `<loc01024>` as a location too and strips `<seg…>`).
GEMMA_CONTROL_TOKENS = (
    *("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<2mass>", "[@BOS@]"),
    *("<start_of_turn>", "<end_of_turn>"),
)
RESERVED = reserved.pattern(
    image=reserved.literal(["<image>"]),
    location=PALI.pattern.pattern,
    segmentation=_SEG_RE.pattern,
    # `<unused0>`..`<unused98>`: reserved by Gemma for fine-tuning; the markers parse strips
    special=reserved.literal([*GEMMA_CONTROL_TOKENS, *SPECIAL_MARKERS]) + r"|<unused[0-9]+>",
)


def _check_category(ex: Example, category: str, field: str) -> None:
    if not writable_label(category, "<;"):  # parse splits on ";" and ends a label at "<"
        raise DataError(
            f"category {category!r} cannot be written in a PaliGemma prompt or target "
            "(it must be non-empty, without surrounding spaces, without '<' or ';')",
            record=ex.id,
            field=field,
        )


def detection_prompt(example: Example) -> str:
    """The detection prompt, `detect a ; b ; c`, over the vocabulary (or the objects' categories)."""
    categories = example.categories or sorted({o.category for o in example.objects})
    prompt = _prompt(tuple(categories))
    if prompt is None:
        for c in categories:
            _check_category(example, c, "categories")  # raises, naming the record
    return prompt


@functools.lru_cache(maxsize=256)  # one per vocabulary: every detection record of a source shares it
def _prompt(categories: tuple[str, ...]) -> str | None:
    if not all(writable_label(c, "<;") for c in categories):
        return None
    return f"{DETECTION_PREFIX} {SEPARATOR.join(categories)}" if categories else DETECTION_PREFIX


def render(example: Example) -> tuple[str, str]:
    """The (prompt, target) pair PaliGemma is trained on for one Example."""
    ex = example
    if ex.task in UNSUPPORTED:
        raise refuse(ex, "PaliGemma", UNSUPPORTED[ex.task])
    if ex.task == "caption" and ex.level not in CAPTION_PROMPTS:
        raise refuse(ex, "PaliGemma", PARAGRAPH_UNSUPPORTED, field="level")
    if ex.task in ("caption", "vqa", "classification"):
        return text_pair(ex, caption=CAPTION_PROMPTS, vqa=VQA_PROMPT, classification=CLASSIFICATION_PROMPT)
    if ex.task in ("detection", "open_vocabulary_detection"):
        if ex.task == "open_vocabulary_detection":
            check_named(ex, ex.categories)
        parts = []
        for obj in sort_objects(ex.objects, ex.image_size, PALI.bins):
            _check_category(ex, obj.category, "objects")
            parts.append(f"{PALI.encode(obj.bbox, ex.image_size)} {obj.category}")
        return detection_prompt(ex), SEPARATOR.join(parts)
    if ex.task == "grounding":
        phrase = check_phrase(ex, "<;")
        boxes = sort_objects(ex.objects, ex.image_size, PALI.bins)
        return f"{DETECTION_PREFIX} {phrase}", SEPARATOR.join(
            f"{PALI.encode(o.bbox, ex.image_size)} {phrase}" for o in boxes
        )
    if ex.task == "segmentation":
        return _segmentation_pair(ex)
    assert ex.task == "ocr" and ex.text is not None
    return OCR_PROMPT, ex.text  # PaliGemma's `ocr` writes the text only: regions are not rendered


def mask_window(polygons: list[list[float]], size: ImageSize) -> Box | None:
    """The box a mask is written with and its codes made in: the polygons' extent at the centres
    of its location-token bins (what decoding reads back); None when the mask has no area."""
    box = outline.extent(polygons, size)
    if box is None:
        return None
    x1, y1, x2, y2 = box_to_bins(box, size, PALI.bins)
    return bins_to_box((x1, y1, x2, y2), size, PALI.bins)


def _segmentation_pair(ex: Example) -> tuple[str, str]:
    phrase = check_phrase(ex, "<;")
    box = mask_window(ex.polygons, ex.image_size)
    if box is None:
        raise DataError("the mask's polygons have no area inside the image", record=ex.id, field="polygons")
    codes = ex.mask_codes
    if len(codes) != MASK_CODES or not all(0 <= c < SEG_TOKENS for c in codes):
        raise DataError(
            f"a PaliGemma mask is {MASK_CODES} codes in range({SEG_TOKENS}) of its VQ-VAE, made by "
            f"`uvft build` (model.mask_vae); this example has {len(codes)}",
            record=ex.id,
            field="mask_codes",
        )
    seg = "".join(f"<seg{c:03d}>" for c in codes)
    return f"{SEGMENT_PREFIX} {phrase}", f"{PALI.encode(box, ex.image_size)}{seg} {phrase}"


_NO_REGIONS = (
    "its pretraining has no prompt that gives a region of the image (Florence-2's {token} does); "
    "train it with model.family: florence2"
)
# the tasks PaliGemma's pretraining has no equivalent of, and why (the build refuses them)
UNSUPPORTED = {
    "dense_region_caption": "its pretraining has no prompt for boxes with free-text descriptions "
    "(Florence-2's <DENSE_REGION_CAPTION> does); train it with model.family: florence2",
    "region_proposal": "its pretraining has no prompt for boxes without classes (`detect` names what to "
    "find; Florence-2's <REGION_PROPOSAL> does); train it with model.family: florence2",
    "region_to_category": _NO_REGIONS.format(token="<REGION_TO_CATEGORY>"),
    "region_to_description": _NO_REGIONS.format(token="<REGION_TO_DESCRIPTION>"),
    "region_to_ocr": _NO_REGIONS.format(token="<REGION_TO_OCR>"),
    "region_to_segmentation": _NO_REGIONS.format(token="<REGION_TO_SEGMENTATION>"),
}
PARAGRAPH_UNSUPPORTED = (
    "its pretraining has one prompt for longer captions, `describe {lang}`; give these captions "
    "level: detailed to train them under it"
)


def parse(text: str, task: str, image_size: ImageSize) -> Prediction:
    """Read a PaliGemma generation (special markers may remain) back into a Prediction."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    if task == "segmentation":
        objects, codes, errors = _parse_masks(strip_markers(text), image_size)
        return Prediction(task=task, text=text, objects=objects, mask_codes=codes, errors=errors)
    if task not in ("detection", "grounding", "open_vocabulary_detection"):
        return Prediction(task=task, text=strip_markers(text))
    objects, errors = _parse_detection(_SEG_RE.sub("", strip_markers(text)), image_size)
    if errors:
        logger.debug("paligemma %s: %d unparsable pieces in %r", task, errors, text)
    return Prediction(task=task, text=text, objects=objects, errors=errors)


def _parse_detection(text: str, size: ImageSize) -> tuple[list[Object], int]:
    objects: list[Object] = []
    errors = 0
    run: list[int | None] = []
    for piece in PALI.split(text):
        if not isinstance(piece, str):
            run.append(piece)
            continue
        parts = piece.split(";")
        for j, part in enumerate(parts):
            # a label ends at "<" (render refuses categories holding one): what follows is a
            # fragment no target has, e.g. a location token cut off mid-way
            label, sep, _ = part.partition("<")
            label = label.strip()
            if sep:
                errors += 1
            if label and not run:
                errors += 1  # a label with no box before it
            elif label:
                boxes, bad = PALI.boxes(run, size)
                objects.extend(Object(box, label) for box in boxes)
                errors += bad
                run.clear()
            if j < len(parts) - 1 and run:  # a ";" ends an object: these boxes never got a label
                errors += _unlabelled(run, size)
    if run:  # boxes with no label after them: the generation stopped early
        errors += _unlabelled(run, size)
    return objects, errors


def _unlabelled(run: list[int | None], size: ImageSize) -> int:
    """Errors of a run of location tokens that no label claims (one per box), clearing the run."""
    boxes, bad = PALI.boxes(run, size)
    run.clear()
    return len(boxes) + bad


_MASK_RE = re.compile(r"((?:<loc[0-9]+>){4})((?:<seg[0-9]+>)*)([^<]*)")
_DIGITS_RE = re.compile(r"[0-9]+")


def _parse_masks(text: str, size: ImageSize) -> tuple[list[Object], list[list[int]], int]:
    """(objects, their codes, errors) of a segmentation generation: one object per ` ; `-separated
    piece that is a valid box, exactly 16 codes and a label (possibly empty)."""
    objects: list[Object] = []
    codes: list[list[int]] = []
    errors = 0
    pieces = [p.strip() for p in text.split(";")]
    for piece in pieces:
        if not piece:
            errors += len(pieces) > 1  # an empty piece between separators; no output at all is no error
            continue
        m = _MASK_RE.fullmatch(piece)
        if m is None:
            errors += 1
            continue
        bins = [PALI.value(d) for d in _DIGITS_RE.findall(m.group(1))]
        seg = [int(d) if len(d) <= 4 else SEG_TOKENS for d in _DIGITS_RE.findall(m.group(2))]
        if None in bins or len(seg) != MASK_CODES or max(seg) >= SEG_TOKENS:
            errors += 1
            continue
        box = PALI.decode([b for b in bins if b is not None], size)
        if box[2] <= box[0] or box[3] <= box[1]:  # big_vision's evaluator: a box without area is invalid
            errors += 1
            continue
        objects.append(Object(box, m.group(3).strip()))
        codes.append(seg)
    return objects, codes, errors

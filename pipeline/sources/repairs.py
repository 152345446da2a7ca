"""Repairs that say the data is laid out wrong: which of the readers' repairs they are, and the
likely cause the build names when one hits more than `data.max_repair_fraction` of what it could
have hit in a source and split.

A repair that hits a few records is a few bad records: the reader fixes them and counts them.
One that hits most of them is a systematic error that repairing would hide, and the wrong
targets would be trained: boxes clipped because x1, y1, x2, y2 was written where COCO's x, y,
width, height belongs, every caption blank because the text is in another field. Boxes are
judged from the clues `images.clip_objects` keeps (records.BoxClues): boxes past the edge by more
than a pixel or dropped, and boxes inside [0, 1] x [0, 1] (normalised coordinates, which no
clipping reveals). Repairs that are choices or ordinary ("negative image excluded", "crowd region
excluded", "L converted to RGB", "EXIF orientation applied", a line break in a single-line text
replaced by a space) are never systematic.
"""

from __future__ import annotations

from pipeline.records import BoxClues, Tally

BOX_CLIPPED = "box clipped"
BOX_DROPPED = "zero-area box dropped"
SIZE_DIFFERS = "image size differs from annotation"
EMPTY_CAPTION = "empty caption dropped"
EMPTY_ANSWER = "empty answer dropped"
EMPTY_PHRASE = "empty phrase dropped"
DEGENERATE_POLYGON = "degenerate polygon dropped"
EMPTY_REGION = "empty region dropped"
EMPTY_DESCRIPTION = "empty description dropped"
# text repairs of the build's check of user text (formats/reserved.py): choices, never systematic
LINE_BREAK = "line break or tab replaced by a space"
RESERVED_CATEGORY = "category holding a special token dropped from the vocabulary"

# one or two hits are bad records however small the set: a repair is systematic from this many
MIN_HITS = 3

# the repairs judged by what fraction of their items they hit: reason -> (the items, the likely
# cause when most are hit); boxes are judged from their clues (box_findings)
SYSTEMATIC: dict[str, tuple[str, str]] = {
    EMPTY_CAPTION: ("captions", "is the caption text in another field?"),
    EMPTY_ANSWER: ("answers", "is the answer text in another field?"),
    EMPTY_PHRASE: ("sentences", "is the referring expression in another key than 'sent' or 'raw'?"),
    DEGENERATE_POLYGON: (
        "polygons",
        "a polygon is a flat [x1, y1, x2, y2, x3, y3, ...] list of 3 or more points; are they boxes, "
        "or nested one list too deep?",
    ),
    EMPTY_REGION: ("regions", "is the region text in another key than 'text'?"),
    EMPTY_DESCRIPTION: ("region descriptions", "is the description in another key than 'phrase'?"),
}


def findings(tally: Tally, limit: float) -> list[str]:
    """What in `tally` hits more than `limit` (a fraction) of its items, and at least MIN_HITS of
    them, each with its likely cause; [] when nothing does."""
    out = box_findings(tally, limit)
    for reason, (items, cause) in SYSTEMATIC.items():
        hit, read = tally.repaired.get(reason, 0), tally.read.get(reason, 0)
        if _over(hit, read, limit):
            out.append(f"{reason} for {hit} of {read} {items} ({_pct(hit, read)}): {cause}")
    return out


def box_findings(tally: Tally, limit: float) -> list[str]:
    """The boxes' findings: normalised coordinates; boxes past the image, with their likely cause;
    images whose declared size is not theirs (a resized copy), when the boxes did not say it."""
    clues = tally.boxes
    out = []
    if _over(clues.unit, clues.boxes, limit):
        out.append(
            f"{clues.unit} of {clues.boxes} boxes lie inside [0, 1] x [0, 1] "
            f"({_pct(clues.unit, clues.boxes)}): "
            "likely normalised 0-1 coordinates; uvft reads boxes in pixels (multiply x by the image's "
            "width and y by its height)"
        )
    compared, differ = tally.read.get(SIZE_DIFFERS, 0), tally.repaired.get(SIZE_DIFFERS, 0)
    resized = _over(differ, compared, limit)
    resized_copy = (
        f"{differ} of {compared} images are not the size their annotation declares{_ratio_clause(clues)}"
    )
    if _over(clues.moved, clues.boxes, limit):
        if resized:  # the declared sizes are the strongest clue: they are the annotation's own
            cause = f"likely the boxes of the original images on a resized copy: {resized_copy}"
            resized = False  # said here
        elif clues.xywh and clues.moved_fit_as_xyxy >= 0.9 * clues.moved:
            cause = (
                "likely x1, y1, x2, y2 written in an x, y, width, height field: "
                f"{clues.moved_fit_as_xyxy} of them fit the image when their numbers are read as x1, y1, "
                "x2, y2 (COCO's bbox is [x, y, width, height])"
            )
        else:
            cause = (
                f"boxes reach up to {clues.overflow:.2f}x the image's width or height (they fit when scaled "
                f"by {1 / clues.overflow:.2f}): likely annotations of a larger copy of the images, or of "
                "another coordinate frame"
            )
        out.append(
            f"{clues.moved} of {clues.boxes} boxes reach past their image and were clipped or dropped "
            f"({_pct(clues.moved, clues.boxes)}): {cause}"
        )
    if resized:
        out.append(
            f"{resized_copy} ({_pct(differ, compared)}): a resized copy of the images? Boxes are in the "
            "declared frame and are clipped to the real image, not rescaled"
        )
    return out


def _ratio_clause(clues: BoxClues) -> str:
    if not clues.size_ratios:
        return ""
    ratio, n = clues.size_ratios.most_common(1)[0]
    if n < 0.9 * sum(clues.size_ratios.values()) or not ratio:
        return ""
    return (
        f" (the annotation declares {ratio:.2f}x the file's size: boxes fit when scaled by {1 / ratio:.2f})"
    )


def _over(hit: int, total: int, limit: float) -> bool:
    return hit >= MIN_HITS and hit / total > limit


def _pct(n: int, total: int) -> str:
    return f"{n / total:.0%}"

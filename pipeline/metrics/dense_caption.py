"""Dense captioning mAP (Johnson et al., DenseCap, CVPR 2016), the figure Visual Genome dense
captioning papers report (DenseCap, GRiT, ...): localisation and caption quality in one number.

Followed: DenseCap's own evaluation, ``eval/eval_utils.lua`` (``DenseCaptioningEvaluator``) and
``merge_boxes`` in ``densecap/box_utils.lua`` of jcjohnson/densecap. GRiT has no port of its own:
its README says it reports VG numbers with that Lua code, and its ``grit/evaluation/eval.py`` only
writes the predictions out. The definition, per image, then over the whole split:

1. Reference boxes are merged greedily (``merge_boxes``): while some box has IoU >= 0.7 with a
   box not yet merged, take the box with the most such neighbours (itself included; the first such
   box on a tie), make it and its neighbours one reference whose box is their mean and whose
   captions are theirs, in their original order. A box overlapping no other is a reference alone.
2. Predictions are sorted by score (descending); each is assigned to the merged reference of
   highest IoU (the first on a tie), whether or not that reference is taken. It may count as a
   true positive only if that reference was not taken before (it then takes it): a second
   prediction of the same region is a false positive, even when another free reference overlaps it.
   A prediction overlapping no reference takes nothing and is a false positive.
3. All predictions of the split are sorted by score. For an IoU threshold t in (0.3, 0.4, 0.5,
   0.6, 0.7) and a METEOR threshold m in (0.05, 0.1, 0.15, 0.2, 0.25), a prediction is a true
   positive when it took its reference, its IoU is >= t and METEOR(its caption, the reference's
   captions) is > m (strictly, as in the Lua); every other prediction is a false positive. Recall
   is over the number of merged references of the split.
4. AP per (t, m) is the Lua's max-interpolated AP: the mean, over the recall levels r of the loop
   ``for t=0,1,0.01`` (100 levels, 0 to 0.99, reached by adding 0.01 in double precision, so the
   level after 0.49 is 0.5000000000000002: a recall of exactly 0.5 does not reach it), of the
   highest precision at a recall >= r (0 where none is).
5. ``map`` is the mean of the 25 APs. ``det_map``, localisation only, is the mean over the IoU
   thresholds of the AP with METEOR ignored (the Lua's threshold -1).

METEOR is pycocoevalcap's ``Meteor`` (meteor-1.5.jar, ``-l en -norm``: the scorer and flags of
DenseCap's ``eval/meteor_bridge.py``), started once per evaluation for every (prediction,
references) pair that can count (took its reference, IoU >= the lowest IoU threshold). It needs
``java``. Captions are first normalised as DenseCap's preprocessing left them for its model and its
references (lower-cased, ASCII punctuation removed, whitespace collapsed; ``normalize=False``
passes them as given).

Where this module and the references differ:

* DenseCap's Lua: on a prediction overlapping no reference, ``used[jmax]`` with ``jmax = -1``
  wraps to the LAST merged reference and marks it taken (and an image without references
  crashes there). Here such a prediction takes nothing (as in the PyTorch port below); an image
  without references is allowed (its predictions are false positives).
* Sorting: the Lua's ``torch.sort`` leaves ties in any order; here ties keep input order (by
  image, then by position in the image's list). Scores default to 1.0 (a generation often has
  none), so a model without scores is ranked in generation order.
* Boxes: the Lua works on inclusive pixel boxes (``x2 = xc + (w - 1) / 2``) with the "+1" IoU;
  here boxes are continuous xyxy (``x2 - x1`` is the width), the same physical boxes, whose plain
  IoU is the Lua's "+1" IoU of their inclusive form.
* soloist97/densecap-pytorch (``model/evaluator.py``, the Python port others reuse) differs from
  the Lua: METEOR thresholds (0, 0.05, ..., 0.25), so its mAP is over 30 pairs; recall levels
  from ``torch.arange(0, 1, 0.01)`` in float32; IoU from torchvision (no "+1" on inclusive
  boxes). ``meteor_thresholds=(0, 0.05, 0.1, 0.15, 0.2, 0.25)`` gives its threshold set here.

Inputs, one entry per image: predictions ``[{"bbox": xyxy, "description": str, "score": float}]``
(score optional) and references ``[{"bbox": xyxy, "description": str}]``; items may also be objects
with those attributes. Boxes are in pixels.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import string
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from numbers import Real
from typing import Any

import datasets
import evaluate
import numpy as np

from pipeline.metrics import box_iou, metric_info
from pipeline.metrics.detection import _get, scored_items

IOU_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
METEOR_THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25)
MERGE_IOU = 0.7


def _recall_levels() -> tuple[float, ...]:
    # the Lua's `for t=0,1,0.01`: t is accumulated, not i / 100, and stops before 1.0000000000000007
    levels, t = [], 0.0
    while t <= 1:
        levels.append(t)
        t += 0.01
    return tuple(levels)


RECALL_LEVELS = _recall_levels()

Scorer = Callable[[Sequence[tuple[str, Sequence[str]]]], list[float]]


def normalize_caption(text: str) -> str:
    """A caption as DenseCap's preprocessing left it: lower-cased, ASCII punctuation removed,
    whitespace collapsed to single spaces."""
    return " ".join(text.lower().translate(str.maketrans("", "", string.punctuation)).split())


def merge_boxes(boxes: Sequence[Sequence[float]], threshold: float = MERGE_IOU) -> list[list[int]]:
    """DenseCap's ``merge_boxes``: groups of box indices (each group ascending) in the order they were
    merged; every box is in exactly one group. See the module docstring, step 1."""
    if not threshold > 0:
        raise ValueError(f"merge threshold {threshold}: must be > 0")
    n = len(boxes)
    iou = np.array([[box_iou(a, b) for b in boxes] for a in boxes], dtype=np.float64).reshape(n, n)
    np.fill_diagonal(iou, 1.0)  # the Lua sets the diagonal to 1, zero-area boxes included
    groups = []
    while n:
        good = iou >= threshold
        counts = good.sum(axis=0)
        top = int(np.argmax(counts))  # first maximum, as torch.max
        if counts[top] == 0:
            break
        members = np.flatnonzero(good[top])
        groups.append([int(i) for i in members])
        iou[members, :] = 0.0
        iou[:, members] = 0.0
    return groups


def densecap_ap(is_tp: Sequence[bool], num_references: int) -> float:
    """DenseCap's max-interpolated AP of a ranked list of true / false positives (module docstring,
    step 4); 0 for an empty list or when there is no reference."""
    if len(is_tp) == 0 or num_references == 0:
        return 0.0
    hits = np.asarray(is_tp, dtype=bool)
    tp = np.cumsum(hits, dtype=np.float64)
    fp = np.cumsum(~hits, dtype=np.float64)
    recall = tp / num_references
    precision = tp / (tp + fp)
    best_after = np.maximum.accumulate(precision[::-1])[::-1]  # highest precision from i on
    first = np.searchsorted(recall, RECALL_LEVELS, side="left")  # recall is non-decreasing
    ap = 0.0
    for i in first:  # summed in the Lua's order
        ap += float(best_after[i]) if i < len(precision) else 0.0
    return ap / len(RECALL_LEVELS)


def _check_box(box: Any, where: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in box) if not isinstance(box, (str, bytes)) else ()
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where}.bbox {box!r} is not four finite numbers (x1, y1, x2, y2)")
    return values  # type: ignore[return-value]


def _check_regions(items: Any, index: int, side: str, with_score: bool) -> list[dict[str, Any]]:
    if items is None:
        return []
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise ValueError(f"example {index}: {side} must be a list of regions, not {type(items).__name__}")
    out = []
    for j, item in enumerate(items):
        where = f"example {index}: {side}[{j}]"
        box = _get(item, "bbox")
        if box is None:
            raise ValueError(f"{where} has no bbox")
        box = _check_box(box, where)
        caption = _get(item, "description")
        if not isinstance(caption, str):
            raise ValueError(f"{where}.description {caption!r} is not a string")
        region: dict[str, Any] = {"bbox": box, "description": caption}
        if with_score:
            score = _get(item, "score")
            score = 1.0 if score is None else score
            if isinstance(score, bool) or not isinstance(score, Real) or not math.isfinite(score):
                raise ValueError(f"{where}.score {score!r} is not a finite number")
            region["score"] = float(score)
        else:
            if box[2] < box[0] or box[3] < box[1]:
                raise ValueError(f"{where}.bbox {list(box)} has x2 < x1 or y2 < y1")
            if not caption.strip():
                raise ValueError(f"{where}.description is empty")
        out.append(region)
    return out


def _meteor(errors: Any) -> Any:
    """pycocoevalcap's ``Meteor`` (its command, its protocol), with the JVM in its own session: a
    Ctrl-C or SIGTERM sent to a training job's process group, which the trainer turns into a clean
    stop, must not kill it mid-evaluation. Its stderr goes to the file ``errors``: a pipe nobody
    reads could fill up and stall it on a long evaluation."""
    import os
    import threading

    from pycocoevalcap.meteor import meteor

    class Meteor(meteor.Meteor):
        def __init__(self) -> None:  # pycocoevalcap's __init__, plus start_new_session
            jar = meteor.METEOR_JAR
            self.meteor_cmd = ["java", "-jar", "-Xmx2G", jar, "-", "-", "-stdio", "-l", "en", "-norm"]
            self.meteor_p = subprocess.Popen(
                self.meteor_cmd,
                cwd=os.path.dirname(os.path.abspath(meteor.__file__)),  # the jar's path is relative
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                start_new_session=True,
            )
            self.lock = threading.Lock()

    return Meteor()


def meteor_scores(pairs: Sequence[tuple[str, Sequence[str]]]) -> list[float]:
    """METEOR 1.5 of each ``(candidate, references)`` pair, by pycocoevalcap's ``Meteor`` in one JVM.

    Raises RuntimeError when ``java`` is not on PATH (METEOR is a Java program)."""
    if not pairs:
        return []
    if shutil.which("java") is None:
        raise RuntimeError(
            "dense captioning mAP needs METEOR, which runs on Java: no `java` on PATH. Install a Java "
            "runtime (8 or later), e.g. `apt-get install openjdk-17-jre-headless`."
        )

    def line(text: str) -> str:  # one protocol line: no newlines, no field separators
        return " ".join(text.replace("|||", " ").split())

    gts = {i: [line(r) for r in refs] for i, (_, refs) in enumerate(pairs)}
    res = {i: [line(c)] for i, (c, _) in enumerate(pairs)}
    with tempfile.TemporaryFile() as errors:
        scorer = _meteor(errors)
        try:
            _, scores = scorer.compute_score(gts, res)
        except (ValueError, OSError) as err:  # the JVM died: an empty line, or a broken pipe
            scorer.meteor_p.kill()
            scorer.meteor_p.wait()
            errors.seek(0)
            why = errors.read().decode(errors="replace").strip().splitlines()[-1:] or [str(err)]
            raise RuntimeError(f"METEOR (java -jar meteor-1.5.jar) failed: {why[0]}") from err
        finally:
            if scorer.lock.locked():  # compute_score holds it when it fails; its __del__ takes it again
                scorer.lock.release()
            with contextlib.suppress(OSError):  # a dead JVM: the flush of what is left breaks the pipe
                scorer.meteor_p.stdin.close()
            scorer.meteor_p.kill()
            scorer.meteor_p.wait()
    return [float(s) for s in scores]


def dense_caption_map(
    predictions: Sequence[Any],
    references: Sequence[Any],
    *,
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
    meteor_thresholds: Sequence[float] = METEOR_THRESHOLDS,
    normalize: bool = True,
    scorer: Scorer | None = None,
) -> dict[str, Any]:
    """DenseCap's dense captioning mAP of ``predictions`` against ``references`` (one list of regions
    per image each; see the module docstring).

    ``scorer`` maps ``[(candidate, [reference captions])]`` to METEOR scores (default
    :func:`meteor_scores`; tests pass a table). Returns ``{"map": float | None, "det_map": float |
    None, "ap": {"iou_0.3_meteor_0.05": float, ...}, "det_ap": {"iou_0.3": float, ...},
    "num_images", "num_predictions", "num_references" (after merging), "num_reference_boxes"
    (before), "num_meteor_pairs": int}``. ``map`` and ``det_map`` are None when no image has a
    reference (recall is undefined); with references but no predictions they are 0.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} prediction lists but {len(references)} reference lists")
    if not iou_thresholds or not meteor_thresholds:
        raise ValueError("iou_thresholds and meteor_thresholds must each name at least one threshold")
    norm = normalize_caption if normalize else (lambda s: s)

    # per image: assign each prediction, in score order, to its best merged reference
    scores: list[float] = []
    overlaps: list[float] = []
    pairs: list[tuple[str, list[str]] | None] = []  # None: the prediction took no reference
    num_refs = num_boxes = 0
    for i, (preds, refs) in enumerate(zip(predictions, references, strict=True)):
        preds = _check_regions(preds, i, "predictions", with_score=True)
        refs = _check_regions(refs, i, "references", with_score=False)
        groups = merge_boxes([r["bbox"] for r in refs])
        # a merged reference: the mean of its boxes, all their captions
        merged = [
            (
                np.mean([refs[k]["bbox"] for k in g], axis=0).tolist(),
                [norm(refs[k]["description"]) for k in g],
            )
            for g in groups
        ]
        taken = [False] * len(merged)
        for p in sorted(preds, key=lambda p: -p["score"]):  # stable: ties keep input order
            best, best_j = 0.0, -1
            for j, (box, _) in enumerate(merged):
                ov = box_iou(p["bbox"], box)
                if ov > best:
                    best, best_j = ov, j
            scores.append(p["score"])
            overlaps.append(best)
            if best_j >= 0 and not taken[best_j]:
                taken[best_j] = True
                pairs.append((norm(p["description"]), merged[best_j][1]))
            else:
                pairs.append(None)
        num_refs += len(merged)
        num_boxes += len(refs)

    # METEOR only where it can matter: a prediction that took its reference at a countable IoU
    lowest = min(iou_thresholds)
    need = [k for k, pair in enumerate(pairs) if pair is not None and overlaps[k] >= lowest]
    meteor = np.full(len(pairs), -math.inf)
    if need:
        got = (scorer or meteor_scores)([pairs[k] for k in need])  # type: ignore[misc]
        if len(got) != len(need):
            raise RuntimeError(f"METEOR returned {len(got)} scores for {len(need)} captions")
        meteor[need] = got

    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    took = np.array([pair is not None for pair in pairs], dtype=bool)[order]
    ov = np.asarray(overlaps, dtype=np.float64)[order]
    met = meteor[order]
    ap: dict[str, float] = {}
    det_ap: dict[str, float] = {}
    for t in iou_thresholds:
        located = took & (ov >= t)
        det_ap[f"iou_{t}"] = densecap_ap(located, num_refs)
        for m in meteor_thresholds:
            ap[f"iou_{t}_meteor_{m}"] = densecap_ap(located & (met > m), num_refs)
    defined = num_refs > 0
    return {
        "map": sum(ap.values()) / len(ap) if defined else None,
        "det_map": sum(det_ap.values()) / len(det_ap) if defined else None,
        "ap": ap,
        "det_ap": det_ap,
        "num_images": len(predictions),
        "num_predictions": len(pairs),
        "num_references": num_refs,
        "num_reference_boxes": num_boxes,
        "num_meteor_pairs": len(need),
    }


_BOX = datasets.List(datasets.Value("float64"))
_PRED = datasets.List(
    {"bbox": _BOX, "description": datasets.Value("string"), "score": datasets.Value("float64")}
)
_REF = datasets.List({"bbox": _BOX, "description": datasets.Value("string")})
_DESCRIPTION = (
    "Dense captioning mAP (IoU x METEOR thresholds), DenseCap's definition; see the module docstring."
)
_CITATION = """@inproceedings{johnson2016densecap,
  title={DenseCap: Fully Convolutional Localization Networks for Dense Captioning},
  author={Johnson, Justin and Karpathy, Andrej and Fei-Fei, Li},
  booktitle={CVPR}, year={2016}}"""
_INPUTS = """
Args:
    predictions: list (one per image) of [{"bbox": [x1, y1, x2, y2], "description": str, "score": float}].
    references: list (one per image) of [{"bbox": [x1, y1, x2, y2], "description": str}].
    iou_thresholds, meteor_thresholds, normalize, scorer: as ``dense_caption_map``.
Returns: the dict of ``dense_caption_map``.
"""


def _fill_scores(batch: Sequence[Any] | None) -> list[list[dict[str, Any]]] | None:
    return scored_items(batch, ("bbox", "description"))


def _plain(batch: Sequence[Any] | None) -> list[list[dict[str, Any]]] | None:
    if batch is None:
        return None
    return [
        [{"bbox": _get(o, "bbox"), "description": _get(o, "description")} for o in items or []]
        for items in batch
    ]


class DenseCaptionMAP(evaluate.Metric):
    """``evaluate`` wrapper of :func:`dense_caption_map`, usable offline:
    ``DenseCaptionMAP().compute(predictions=[...], references=[...])`` (one list of regions per image)."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(_DESCRIPTION, _CITATION, _INPUTS, predictions=_PRED, references=_REF)

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of images' regions (a missing score filled in as 1.0)."""
        predictions, references = _fill_scores(predictions), _plain(references)
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one image's regions (a missing score filled in as 1.0)."""
        prediction = None if prediction is None else _fill_scores([prediction])[0]  # type: ignore[index]
        reference = None if reference is None else _plain([reference])[0]  # type: ignore[index]
        return super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(
        self,
        predictions,
        references,
        iou_thresholds=IOU_THRESHOLDS,
        meteor_thresholds=METEOR_THRESHOLDS,
        normalize=True,
        scorer=None,
    ) -> dict[str, Any]:
        return dense_caption_map(
            predictions,
            references,
            iou_thresholds=iou_thresholds,
            meteor_thresholds=meteor_thresholds,
            normalize=normalize,
            scorer=scorer,
        )

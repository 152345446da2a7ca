"""The shapes set's on-disk formats, one writer per format, each laying out its files exactly as the
real source does so the same readers take them: COCO instances and captions, VQAv2's questions and
annotations, ImageFolder, RefCOCO's refs pickle + instances, Visual Genome's region descriptions,
and OCR, region OCR and leveled captions as JSONL. The entry builders
(`coco_annotation`, `vqa_annotation`, ...) fix each record's key order, which the set's bytes
depend on; the writers fix the files' encoding. PNGs carry no metadata and JSON is written in a
fixed key order, so the bytes depend on the content alone."""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.demo.layout import (
    IMAGE_FOLDER,
    OCR_JSONL,
    REFER_INSTANCES,
    REFER_REFS,
    VG_IMAGES,
    VG_REGIONS,
    VQA_ANNOTATIONS,
    VQA_QUESTIONS,
)
from pipeline.sources.images import COCO_CAPTION, COCO_SEGMENTATION
from pipeline.tasks import CAPTION, OCR, REGION_TO_OCR

_INFO = {"description": "uvft synthetic shapes", "version": "1.0", "contributor": "uvft"}
_LICENSES = [{"id": 1, "name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"}]


def png_bytes(pixels: np.ndarray) -> bytes:
    # No pnginfo: PIL then writes no text or time chunks, so the bytes depend on pixels alone.
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=True, separators=(",", ":")) + "\n", encoding="utf-8")


# --- COCO instances and captions -------------------------------------------------------------------


def coco_categories(names: Iterable[str]) -> list[dict[str, Any]]:
    """COCO categories with ids 1, 2, ... in the order of `names`."""
    return [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(names)]


def coco_image(image_id: int, file_name: str, size: int) -> dict[str, Any]:
    return {"id": image_id, "file_name": file_name, "width": size, "height": size}


def coco_annotation(
    ann_id: int,
    image_id: int,
    category_id: int,
    box: tuple[int, int, int, int],
    area: int,
    segmentation: list[list[float]] | None = None,
) -> dict[str, Any]:
    """A COCO instances annotation (xywh bbox) in the key order the set's JSON has always had; the
    referring scenes add their polygon `segmentation` before `area`."""
    x1, y1, x2, y2 = box
    ann: dict[str, Any] = {"id": ann_id, "image_id": image_id, "category_id": category_id}
    ann["bbox"] = [x1, y1, x2 - x1, y2 - y1]
    if segmentation is not None:
        ann[COCO_SEGMENTATION] = segmentation
    ann.update(area=area, iscrowd=0)
    return ann


def coco_caption(caption_id: int, image_id: int, text: str) -> dict[str, Any]:
    return {"id": caption_id, "image_id": image_id, COCO_CAPTION: text}


def write_coco_instances(
    path: Path,
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    categories: list[dict[str, Any]],
) -> None:
    write_json(
        path,
        {
            "info": _INFO,
            "licenses": _LICENSES,
            "images": images,
            "annotations": annotations,
            "categories": categories,
        },
    )


def write_coco_captions(path: Path, images: list[dict[str, Any]], captions: list[dict[str, Any]]) -> None:
    write_json(path, {"info": _INFO, "licenses": _LICENSES, "images": images, "annotations": captions})


# --- VQAv2 -----------------------------------------------------------------------------------------


def vqa_question(image_id: int, question_id: int, question: str) -> dict[str, Any]:
    return {"image_id": image_id, "question": question, "question_id": question_id}


def vqa_annotation(
    question_id: int, image_id: int, qa: dict[str, Any], answers: list[str], consensus: str
) -> dict[str, Any]:
    """VQAv2's annotation of one question: its ten answers and `consensus`, the most frequent one
    (VQAv2's multiple_choice_answer); `qa` gives the question's types."""
    return {
        "question_id": question_id,
        "image_id": image_id,
        "question_type": qa["question_type"],
        "answer_type": qa["answer_type"],
        "multiple_choice_answer": consensus,
        "answers": [
            {"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)
        ],
    }


def write_vqav2(
    root: Path, split: str, questions: list[dict[str, Any]], annotations: list[dict[str, Any]]
) -> None:
    """VQAv2's two files of one split: the open-ended questions and their annotations."""
    write_json(
        root / VQA_QUESTIONS.format(split=split),
        {
            "info": {},
            "task_type": "Open-Ended",
            "data_type": "shapes",
            "data_subtype": split,
            "questions": questions,
        },
    )
    write_json(
        root / VQA_ANNOTATIONS.format(split=split),
        {"info": {}, "data_type": "shapes", "data_subtype": split, "annotations": annotations},
    )


# --- ImageFolder -----------------------------------------------------------------------------------


def make_image_folder(root: Path, split: str, classes: Iterable[str]) -> None:
    """One folder per class, every class present even when no image has it."""
    for name in classes:
        (root / IMAGE_FOLDER.format(split=split) / name).mkdir(parents=True)


def write_image_folder_image(root: Path, split: str, label: str, file_name: str, png: bytes) -> None:
    (root / IMAGE_FOLDER.format(split=split) / label / file_name).write_bytes(png)


# --- RefCOCO ---------------------------------------------------------------------------------------


def refcoco_ref(
    ref_id: int, ann_id: int, image_id: int, split: str, category_id: int, phrases: list[str], sent_id: int
) -> dict[str, Any]:
    """One ref as lichengunc/refer writes it: its phrases become sentences numbered from `sent_id`."""
    sentences = [
        {"sent": p, "raw": p, "tokens": p.split(), "sent_id": sent_id + i} for i, p in enumerate(phrases)
    ]
    return {
        "ref_id": ref_id,
        "ann_id": ann_id,
        "image_id": image_id,
        "split": split,
        "category_id": category_id,
        "sent_ids": [x["sent_id"] for x in sentences],
        # not a file: the image's name with the ann_id appended, as refer writes it
        "file_name": f"{image_id:06d}_{ann_id}.jpg",
        "sentences": sentences,
    }


def write_refcoco(
    root: Path,
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    categories: list[dict[str, Any]],
    refs: list[dict[str, Any]],
) -> None:
    """RefCOCO as it ships: one instances.json for all splits (file names relative to images/) and
    refs(unc).p, a protocol-2 pickle of the refs."""
    (root / REFER_REFS).parent.mkdir()
    write_coco_instances(root / REFER_INSTANCES, images, annotations, categories)
    (root / REFER_REFS).write_bytes(pickle.dumps(refs, protocol=2))


# --- OCR JSONL -------------------------------------------------------------------------------------


def ocr_line(image_id: int, image: str, regions: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    """One JSONL line: the text in reading order (the words joined by spaces) and each word's box;
    `image` is relative to images/ (the recipes read it with jsonl's `images: images`)."""
    line = {
        "id": image_id,
        "task": OCR,
        "image": image,
        "text": " ".join(word for word, _ in regions),
        "regions": [{"text": word, "bbox": list(box)} for word, box in regions],
    }
    return jsonl_line(line)


def write_ocr_jsonl(root: Path, split: str, lines: list[str]) -> None:
    path = root / OCR_JSONL.format(split=split)
    path.parent.mkdir(exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")


def jsonl_line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")) + "\n"


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")


def region_ocr_lines(
    image_id: int, image: str, regions: list[tuple[str, tuple[int, int, int, int]]]
) -> list[str]:
    """One JSONL line per word of an OCR image: its box (the region asked about) and the word."""
    return [
        jsonl_line(
            {
                "id": f"{image_id}-{k}",
                "task": REGION_TO_OCR,
                "image": image,
                "region": list(box),
                "text": word,
            }
        )
        for k, (word, box) in enumerate(regions)
    ]


def ocr_text_line(image_id: int, image: str, regions: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    """An OCR image's text alone, no regions (Florence-2's `<OCR>` rather than `<OCR_WITH_REGION>`)."""
    return jsonl_line(
        {"id": image_id, "task": OCR, "image": image, "text": " ".join(word for word, _ in regions)}
    )


def caption_line(line_id: str, image: str, text: str, level: str) -> str:
    """A caption of a given level as one JSONL line (`image` relative to images/)."""
    return jsonl_line({"id": line_id, "task": CAPTION, "image": image, "captions": [text], "level": level})


# --- Visual Genome -----------------------------------------------------------------------------------

VG_URL = (
    "https://cs.stanford.edu/people/rak248/VG_100K/{}"  # as image_data.json's urls; the reader uses the name
)


def vg_image(image_id: int, file_name: str, size: int) -> dict[str, Any]:
    return {
        "width": size,
        "url": VG_URL.format(file_name),
        "height": size,
        "image_id": image_id,
        "coco_id": None,
        "flickr_id": None,
    }


def vg_region(region_id: int, image_id: int, phrase: str, box: tuple[int, int, int, int]) -> dict[str, Any]:
    """One region of region_descriptions.json (x, y, width, height in pixels, as VG writes them)."""
    x1, y1, x2, y2 = box
    return {
        "region_id": region_id,
        "width": x2 - x1,
        "height": y2 - y1,
        "image_id": image_id,
        "phrase": phrase,
        "y": y1,
        "x": x1,
    }


def write_visual_genome(
    root: Path, split: str, images: list[dict[str, Any]], regions: dict[int, list[dict[str, Any]]]
) -> None:
    """region_descriptions.json (per image: {"regions", "id"}) and image_data.json, as VG 1.2 ships them."""
    path = root / VG_REGIONS.format(split=split)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, [{"regions": regions[i["image_id"]], "id": i["image_id"]} for i in images])
    write_json(root / VG_IMAGES.format(split=split), images)

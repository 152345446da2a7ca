"""The demo set's writers, one per on-disk format: each entry's key order and each file's encoding,
which the set's bytes depend on, checked on hand-made entries (test_shapes.py reads whole sets)."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.demo import layout, writers
from pipeline.sources.refcoco import load_refs
from pipeline.tasks import OCR


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        assert struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0] == zlib.crc32(kind + body)
        chunks.append(kind)
        at += 12 + length
    return chunks


def test_png_bytes_hold_pixels_and_nothing_else():
    pixels = np.zeros((5, 7, 3), dtype=np.uint8)
    pixels[1, 2] = (220, 40, 40)
    data = writers.png_bytes(pixels)
    assert set(png_chunks(data)) == {b"IHDR", b"IDAT", b"IEND"}  # no text, time or gamma chunks
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)
    assert writers.png_bytes(pixels.copy()) == data


def test_json_is_compact_ascii_with_a_final_newline(tmp_path: Path):
    path = tmp_path / "x.json"
    writers.write_json(path, {"b": 1, "a": ["grün", 2.5]})
    assert path.read_bytes() == b'{"b":1,"a":["gr\\u00fcn",2.5]}\n'  # insertion order, not sorted


def test_coco_entries_keep_their_key_order():
    assert writers.coco_categories(["circle", "star"]) == [
        {"id": 1, "name": "circle", "supercategory": "shape"},
        {"id": 2, "name": "star", "supercategory": "shape"},
    ]
    plain = writers.coco_annotation(7, 3, 2, (4, 5, 10, 20), 61)
    assert list(plain.items()) == [
        ("id", 7), ("image_id", 3), ("category_id", 2), ("bbox", [4, 5, 6, 15]), ("area", 61), ("iscrowd", 0)
    ]  # fmt: skip
    polygon = [[4.0, 5.0, 10.0, 5.0, 7.0, 20.0]]
    with_mask = writers.coco_annotation(7, 3, 2, (4, 5, 10, 20), 61, polygon)
    assert list(with_mask) == ["id", "image_id", "category_id", "bbox", "segmentation", "area", "iscrowd"]
    assert with_mask["segmentation"] == polygon
    assert list(writers.coco_caption(4, 3, "a red star").items()) == [
        ("id", 4), ("image_id", 3), ("caption", "a red star")
    ]  # fmt: skip
    assert writers.coco_image(3, "000003.png", 64) == {
        "id": 3,
        "file_name": "000003.png",
        "width": 64,
        "height": 64,
    }


def test_coco_files_are_what_the_coco_readers_take(tmp_path: Path):
    images = [writers.coco_image(0, "000000.png", 32)]
    anns = [writers.coco_annotation(1, 0, 1, (0, 0, 4, 4), 16)]
    cats = writers.coco_categories(["circle"])
    writers.write_coco_instances(tmp_path / "i.json", images, anns, cats)
    writers.write_coco_captions(tmp_path / "c.json", images, [writers.coco_caption(1, 0, "x")])
    inst = json.loads((tmp_path / "i.json").read_text())
    assert list(inst) == ["info", "licenses", "images", "annotations", "categories"]
    assert (inst["images"], inst["annotations"], inst["categories"]) == (images, anns, cats)
    caps = json.loads((tmp_path / "c.json").read_text())
    assert list(caps) == ["info", "licenses", "images", "annotations"] and caps["info"] == inst["info"]


def test_vqav2_files(tmp_path: Path):
    (tmp_path / "annotations").mkdir()
    qa = {"question": "how many shapes are there?", "question_type": "how many", "answer_type": "number"}
    question = writers.vqa_question(5, 50, qa["question"])
    assert list(question) == ["image_id", "question", "question_id"]
    answer = writers.vqa_annotation(50, 5, qa, ["2", "two", "2"], "2")
    assert list(answer) == [
        "question_id", "image_id", "question_type", "answer_type", "multiple_choice_answer", "answers"
    ]  # fmt: skip
    assert answer["answers"][1] == {"answer": "two", "answer_confidence": "yes", "answer_id": 2}
    writers.write_vqav2(tmp_path, "val", [question], [answer])
    qs = json.loads((tmp_path / layout.VQA_QUESTIONS.format(split="val")).read_text())
    assert (qs["task_type"], qs["data_subtype"], qs["questions"]) == ("Open-Ended", "val", [question])
    ans = json.loads((tmp_path / layout.VQA_ANNOTATIONS.format(split="val")).read_text())
    assert (ans["data_type"], ans["annotations"]) == ("shapes", [answer])


def test_image_folder_has_every_class(tmp_path: Path):
    writers.make_image_folder(tmp_path, "train", ["circle", "star"])
    writers.write_image_folder_image(tmp_path, "train", "star", "000001.png", b"png")
    folder = tmp_path / layout.IMAGE_FOLDER.format(split="train")
    assert sorted(p.name for p in folder.iterdir()) == ["circle", "star"]  # an empty class stays
    assert (folder / "star" / "000001.png").read_bytes() == b"png"


def test_refcoco_refs_number_their_sentences(tmp_path: Path):
    ref = writers.refcoco_ref(3, 9, 12, "val", 2, ["the red star", "the star"], 40)
    assert list(ref) == [
        "ref_id", "ann_id", "image_id", "split", "category_id", "sent_ids", "file_name", "sentences"
    ]  # fmt: skip
    assert ref["sent_ids"] == [40, 41] and ref["file_name"] == "000012_9.jpg"
    assert ref["sentences"][1] == {
        "sent": "the star",
        "raw": "the star",
        "tokens": ["the", "star"],
        "sent_id": 41,
    }
    writers.write_refcoco(tmp_path, [], [], writers.coco_categories(["star"]), [ref])
    data = (tmp_path / layout.REFER_REFS).read_bytes()
    assert data[:2] == b"\x80\x02" and pickle.loads(data) == [ref] == load_refs(tmp_path / layout.REFER_REFS)
    assert json.loads((tmp_path / layout.REFER_INSTANCES).read_text())["categories"][0]["name"] == "star"


def test_ocr_lines_name_the_task_from_the_table(tmp_path: Path):
    line = writers.ocr_line(7, "ocr_val/000007.png", [("red", (2, 3, 17, 10)), ("4", (5, 20, 10, 27))])
    assert line.endswith("\n") and line.count("\n") == 1
    record = json.loads(line)
    assert list(record) == ["id", "task", "image", "text", "regions"]
    assert record["task"] == OCR and record["text"] == "red 4"
    assert record["regions"][1] == {"text": "4", "bbox": [5, 20, 10, 27]}
    writers.write_ocr_jsonl(tmp_path, "val", [line, line])
    assert (tmp_path / layout.OCR_JSONL.format(split="val")).read_text() == line + line

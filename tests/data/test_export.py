"""Chat JSONL export: the exact line for one record (path and embedded image), mime types read from
the image's content, counts and order per split, location tokens kept, a missing image named, and a
file that parses line by line with unique ids."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.data import export
from pipeline.data.export import EXPORT_FORMATS, export_chat_jsonl
from pipeline.errors import DataError


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _by_id(recs: list[dict[str, Any]], rid: str) -> dict[str, Any]:
    return next(r for r in recs if r["id"] == rid)


def _decode(url: str) -> tuple[str, bytes]:
    head, data = url.split(",", 1)
    assert head.startswith("data:") and head.endswith(";base64")
    return head[len("data:") : -len(";base64")], base64.b64decode(data, validate=True)


def test_export_formats_name_both_exports():
    assert EXPORT_FORMATS == ("jsonl", "chat-jsonl")


def test_exact_line_with_image_path(records, tmp_path: Path):
    rec = _by_id(records["paligemma"], "cap")
    out = tmp_path / "chat.jsonl"
    assert export_chat_jsonl({"train": [rec]}, out, progress=False) == {"train": 1}
    image = json.dumps(rec["image"])
    assert rec["image"].startswith("/")  # stored absolute, written as stored
    assert out.read_text(encoding="utf-8") == (
        '{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": '
        + image
        + '}}, {"type": "text", "text": "caption en"}]}, {"role": "assistant", "content": '
        '[{"type": "text", "text": "A red circle."}]}], "id": "cap", "source": "", "task": "caption", '
        '"split": "train"}\n'
    )
    assert not out.with_name(out.name + ".tmp").exists()


def test_exact_line_with_embedded_image(records, tmp_path: Path):
    rec = _by_id(records["florence2"], "vqa")
    out = tmp_path / "chat.jsonl"
    export_chat_jsonl({"val": [rec]}, out, embed_images=True, progress=False)
    (line,) = _lines(out)
    url = line["messages"][0]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert _decode(url) == ("image/png", Path(rec["image"]).read_bytes())
    assert line == {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "Answer the question: what color is the circle?"},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "green"}]},
        ],
        "id": "vqa",
        "source": "",
        "task": "vqa",
        "split": "val",
    }


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp"), ("GIF", "image/gif")],
)
def test_mime_comes_from_content_not_extension(records, tmp_path: Path, fmt: str, mime: str):
    # named .png whatever it holds: the extension must not decide the mime type
    path = tmp_path / "photo.png"
    Image.new("RGB", (16, 8), (200, 30, 30)).save(path, format=fmt)
    rec = {**_by_id(records["paligemma"], "cls"), "image": str(path)}
    out = tmp_path / "chat.jsonl"
    export_chat_jsonl({"train": [rec]}, out, embed_images=True, progress=False)
    (line,) = _lines(out)
    assert _decode(line["messages"][0]["content"][0]["image_url"]["url"]) == (mime, path.read_bytes())


def test_other_formats_are_reencoded_as_png(records, tmp_path: Path):
    path = tmp_path / "photo.bmp"
    img = Image.new("RGB", (16, 8), (30, 160, 30))
    img.putpixel((3, 2), (1, 2, 3))
    img.save(path, format="BMP")
    rec = {**_by_id(records["paligemma"], "cls"), "image": str(path)}
    out = tmp_path / "chat.jsonl"
    export_chat_jsonl({"train": [rec]}, out, embed_images=True, progress=False)
    (line,) = _lines(out)
    mime, data = _decode(line["messages"][0]["content"][0]["image_url"]["url"])
    assert mime == "image/png"
    with Image.open(io.BytesIO(data)) as png:
        assert png.format == "PNG"
        assert png.size == (16, 8)
        assert png.convert("RGB").tobytes() == img.tobytes()


def test_counts_and_order_per_split(records, tmp_path: Path):
    recs = records["paligemma"]
    out = tmp_path / "sub" / "chat.jsonl"
    counts = export_chat_jsonl({"train": recs, "val": recs[:1], "test": []}, out, progress=False)
    assert counts == {"train": 4, "val": 1, "test": 0}
    lines = _lines(out)
    assert [(x["split"], x["id"]) for x in lines] == [("train", r["id"]) for r in recs] + [("val", "cls")]
    assert [x["task"] for x in lines[:4]] == ["classification", "caption", "vqa", "detection"]


def test_dataset_dict_input(records, tmp_path: Path):
    from datasets import Dataset, DatasetDict

    from pipeline.records import record_features

    recs = records["florence2"]
    dsd = DatasetDict(
        {
            "train": Dataset.from_list(recs, features=record_features()),
            "val": Dataset.from_list(recs[2:], features=record_features()),
        }
    )
    out = tmp_path / "chat.jsonl"
    assert export_chat_jsonl(dsd, out, progress=False) == {"train": 4, "val": 2}
    lines = _lines(out)
    assert [x["messages"][0]["content"][1]["text"] for x in lines[:4]] == [r["prompt"] for r in recs]
    assert [x["messages"][1]["content"][0]["text"] for x in lines[4:]] == [r["target"] for r in recs[2:]]


@pytest.mark.parametrize(
    ("family", "token"), [("paligemma", "<loc0042><loc0512>"), ("florence2", "square<loc_500>")]
)
def test_location_tokens_stay_as_text(records, tmp_path: Path, family: str, token: str):
    rec = _by_id(records[family], "det")
    out = tmp_path / "chat.jsonl"
    export_chat_jsonl({"train": [rec]}, out, progress=False)
    (line,) = _lines(out)
    text = line["messages"][1]["content"][0]["text"]
    assert text == rec["target"]
    assert token in text
    assert line["messages"][0]["content"][1]["text"] == rec["prompt"]


def test_missing_image_names_file_record_and_field(records, tmp_path: Path):
    missing = tmp_path / "gone.jpg"
    recs = [
        *records["paligemma"][:2],
        {**_by_id(records["paligemma"], "vqa"), "id": "q-17", "image": str(missing)},
    ]
    out = tmp_path / "chat.jsonl"
    out.write_text("old\n")
    with pytest.raises(DataError, match="q-17") as info:
        export_chat_jsonl({"train": recs}, out, embed_images=True, progress=False)
    err = info.value
    assert (err.file, err.record, err.field) == (str(missing), "q-17", "image")
    assert str(missing) in str(err)
    # the previous file is left as it was, and no partial file stays behind
    assert out.read_text() == "old\n"
    assert not out.with_name(out.name + ".tmp").exists()
    # without embedding the path is written as stored, never opened
    assert export_chat_jsonl({"train": recs}, out, progress=False) == {"train": 3}


def test_unreadable_image_is_a_data_error(records, tmp_path: Path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    rec = {**_by_id(records["paligemma"], "cap"), "image": str(bad)}
    with pytest.raises(DataError, match="record cap, field 'image'"):
        export_chat_jsonl({"train": [rec]}, tmp_path / "chat.jsonl", embed_images=True, progress=False)


def test_each_image_is_encoded_once(records, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls: list[str] = []
    real = export._data_url

    def counting(image: str, rid: Any) -> str:
        calls.append(image)
        return real(image, rid)

    monkeypatch.setattr(export, "_data_url", counting)
    recs = records["paligemma"]  # four records on two images
    out = tmp_path / "chat.jsonl"
    export_chat_jsonl({"train": recs, "val": recs}, out, embed_images=True, progress=False)
    assert sorted(calls) == sorted({r["image"] for r in recs})
    urls = {x["id"]: x["messages"][0]["content"][0]["image_url"]["url"] for x in _lines(out)}
    assert urls["cls"] == urls["cap"] != urls["vqa"] == urls["det"]


def test_output_parses_line_by_line_with_unique_ids(records, tmp_path: Path):
    recs = records["florence2"]
    unicode = {**recs[1], "id": "cap-es", "prompt": "¿Qué hay en la imagen?", "target": "Un círculo rojo."}
    out = tmp_path / "chat.jsonl"
    export_chat_jsonl({"train": [*recs, unicode], "val": recs}, out, embed_images=True, progress=False)
    raw = out.read_bytes()
    assert "¿Qué hay en la imagen?".encode() in raw  # UTF-8 as is, not \u escapes
    lines = raw.decode("utf-8").split("\n")
    assert lines[-1] == ""  # every line, the last included, ends with a newline
    parsed = [json.loads(line) for line in lines[:-1]]
    assert len(parsed) == 9
    for x in parsed:
        assert list(x) == ["messages", "id", "source", "task", "split"]
        assert [m["role"] for m in x["messages"]] == ["user", "assistant"]
        assert [p["type"] for p in x["messages"][0]["content"]] == ["image_url", "text"]
    train_ids = [x["id"] for x in parsed if x["split"] == "train"]
    assert len(set(train_ids)) == len(train_ids) == 5
    keys = [(x["source"], x["split"], x["id"]) for x in parsed]
    assert len(set(keys)) == len(keys)


def test_exif_rotated_jpeg_is_sent_upright(records, tmp_path: Path):
    rec = dict(_by_id(records["paligemma"], "cap"))
    upright = Image.new("RGB", (40, 20), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to view
    path = tmp_path / "sideways.jpg"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif.tobytes())
    rec["image"] = str(path)
    out = tmp_path / "chat.jsonl"
    export_chat_jsonl({"train": [rec]}, out, embed_images=True, progress=False)
    mime, data = _decode(_lines(out)[0]["messages"][0]["content"][0]["image_url"]["url"])
    assert mime == "image/png"
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (40, 20)  # the frame the record's boxes and size live in

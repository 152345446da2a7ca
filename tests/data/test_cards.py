"""Data cards: every card in data_cards/ loads, and bad cards fail naming the file and the field."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from yaml_bombs import BILLION_LAUGHS

from pipeline.data.cards import FORMATS, check_counts, expected_count, load_card, load_cards
from pipeline.errors import DataError
from pipeline.records import TASKS

CARDS = Path(__file__).resolve().parents[2] / "data_cards"
EXPECTED = {
    "shapes",
    "coco2017_detection",
    "coco2017_captions",
    "vqav2",
    "imagenette",
    "refcoco",
    "visual_genome",
}

GOOD = """---
name: tiny
tasks: [vqa]
format: vqav2
license: CC-BY-4.0
homepage: https://example.org
citation: "@misc{tiny}"
splits: {train: 10, val: 4}
obtain: {commands: "wget ..."}
---

# Tiny

Prose.
"""


def write(tmp_path: Path, text: str, name: str = "card.md") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_every_card_loads_with_the_required_keys() -> None:
    cards = load_cards(CARDS)
    assert set(cards) == EXPECTED
    for card in cards.values():
        assert card.path.stem == card.name
        assert card.tasks and set(card.tasks) <= set(TASKS)
        assert card.formats and set(card.formats) <= set(FORMATS)
        assert set(card.counts) == set(card.formats)
        assert all(set(c) >= {"train", "val"} and min(c.values()) > 0 for c in card.counts.values())
        assert card.license and card.homepage
        assert card.citation.lstrip().startswith("@")
        assert isinstance(card.obtain, dict) and card.obtain["commands"].strip()
        assert card.body.startswith("# ") and "## License" in card.body


def test_known_counts() -> None:
    cards = load_cards(CARDS)
    assert expected_count(cards["coco2017_detection"], "coco_detection", "train") == 118287
    assert expected_count(cards["coco2017_captions"], "coco_captions", "val") == 5000
    assert expected_count(cards["vqav2"], "vqav2", "val") == 214354
    assert expected_count(cards["imagenette"], "image_folder", "train") == 9469
    assert expected_count(cards["visual_genome"], "visual_genome", "val") == 5000
    assert len(cards["imagenette"].label_map) == 10
    shapes = cards["shapes"]
    assert shapes.formats == ["coco_detection", "coco_captions", "vqav2", "image_folder"]
    assert expected_count(shapes, "image_folder", "val") == 200
    assert expected_count(shapes, "vqav2", "test") is None


def test_a_good_card(tmp_path: Path) -> None:
    card = load_card(write(tmp_path, GOOD))
    assert (card.name, card.formats, card.counts) == ("tiny", ["vqav2"], {"vqav2": {"train": 10, "val": 4}})
    assert card.body.startswith("# Tiny")


def test_check_counts(tmp_path: Path) -> None:
    card = load_card(write(tmp_path, GOOD))
    assert check_counts(card, "vqav2", "train", 10) is None
    assert check_counts(card, "vqav2", "test", 3) is None  # not on the card: nothing to compare
    assert check_counts(card, "coco_detection", "train", 3) is None
    msg = check_counts(card, "vqav2", "val", 3)
    assert msg is not None
    assert "tiny" in msg and "'val'" in msg and "3" in msg and "4" in msg and "-1" in msg


@pytest.mark.parametrize(
    ("edit", "field", "match"),
    [
        (lambda t: t.replace("license: CC-BY-4.0\n", ""), "license", "missing"),
        (lambda t: t.replace("tasks: [vqa]", "tasks: vqa"), "tasks", "list of strings"),
        (lambda t: t.replace("tasks: [vqa]", "tasks: [vqa, keypoints]"), "tasks", "unknown task 'keypoints'"),
        (lambda t: t.replace("format: vqav2", "format: parquet"), "format", "unknown format"),
        (lambda t: t.replace("train: 10", "train: ten"), "splits.train", "count"),
        (lambda t: t.replace("train: 10", "train: yes"), "splits.train", "count"),
        (
            lambda t: t.replace("format: vqav2", "format: [vqav2, coco_detection]"),
            "splits",
            "keyed by format",
        ),
        (
            lambda t: t.replace("splits: {train: 10, val: 4}", "splits: {coco_detection: {train: 1}}"),
            "splits.coco_detection",
            "not in the card's format list",
        ),
        (lambda t: t.replace("name: tiny", "name: tiny\nlicence: MIT"), "licence", "unknown key"),
        (lambda t: t.replace('citation: "@misc{tiny}"', "citation: 3"), "citation", "non-empty string"),
    ],
)
def test_bad_cards_name_the_file_and_field(tmp_path: Path, edit, field: str, match: str) -> None:
    path = write(tmp_path, edit(GOOD))
    with pytest.raises(DataError, match=match) as err:
        load_card(path)
    assert err.value.file == str(path) and err.value.field == field
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("# just prose\n", "no YAML front matter"),
        ("---\nname: x\n", "no closing"),
        ("---\n- a\n- b\n---\n", "must be a mapping"),
        ("---\nname: [unclosed\n---\n", "not valid YAML"),
    ],
)
def test_broken_front_matter(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=match) as err:
        load_card(path)
    assert err.value.file == str(path)


def test_a_multi_format_card(tmp_path: Path) -> None:
    text = GOOD.replace("format: vqav2", "format: [vqav2, image_folder]").replace(
        "splits: {train: 10, val: 4}", "splits: {vqav2: {train: 10}, image_folder: {train: 3}}"
    )
    card = load_card(write(tmp_path, text))
    assert expected_count(card, "image_folder", "train") == 3
    assert "image_folder" in check_counts(card, "image_folder", "train", 2)


def test_duplicate_card_names(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "a.md")
    write(tmp_path, GOOD, "b.md")
    with pytest.raises(DataError, match="also used"):
        load_cards(tmp_path)


def test_an_alias_bomb_in_the_front_matter_is_refused_at_once(tmp_path: Path) -> None:
    # yaml.safe_load built it in microseconds; the first walk of `obtain` would expand it
    path = write(
        tmp_path, GOOD.replace('obtain: {commands: "wget ..."}', f"obtain: {{commands: {BILLION_LAUGHS}}}")
    )
    started = time.monotonic()
    with pytest.raises(DataError) as err:
        load_card(path)
    assert str(err.value) == (
        f"file {path}: the YAML expands to more than 100000 values through aliases (&anchor/*alias); "
        "a card needs far fewer"
    )
    assert time.monotonic() - started < 1.0

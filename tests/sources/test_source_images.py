"""Shared image helpers: path confinement, image checks and repairs, loading, boxes, JSON errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import DataError
from pipeline.records import Object, Tally
from pipeline.sources import SourceContext
from pipeline.sources import images as source_images
from pipeline.sources.images import (
    check_image,
    clip_objects,
    inspect_image,
    load_image,
    parse_box,
    prefetch_checks,
    read_json,
)
from pipeline.sources.paths import OUT_OF_ROOT, SYMLINK_LOOP, Paths, confine, outside

# ---------------------------------------------------------------------------- confine


def test_confine_accepts_relative_paths_and_normalises(tmp_path: Path) -> None:
    assert (
        confine(tmp_path, "a/b.jpg", file="f.json", record=1, field="file_name") == tmp_path / "a" / "b.jpg"
    )
    assert confine(tmp_path, "a/../b.jpg", file="f.json", record=1, field="file_name") == tmp_path / "b.jpg"


@pytest.mark.parametrize("relpath", ["../x.jpg", "a/../../x.jpg", "/etc/passwd", "C:\\x.jpg", "", "   "])
def test_confine_refuses_escapes_and_absolute_paths(tmp_path: Path, relpath: str) -> None:
    root = tmp_path / "images"
    root.mkdir()
    with pytest.raises(DataError) as err:
        confine(root, relpath, file="anns.json", record="image 7", field="file_name")
    message = str(err.value)
    assert "anns.json" in message and "image 7" in message and "file_name" in message


def test_confine_refuses_symlink_out_of_root(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    outside = tmp_path / "secret"
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(DataError, match="escapes"):
        confine(root, "link/x.jpg", file="anns.json", record=3, field="file_name")


def _paths_confine(root: Path, relpath: str, **where) -> Path:
    return Path(Paths().confine(root, relpath, **where))


CONFINES = [confine, _paths_confine]  # the plain check, and the one a build makes with Paths


@pytest.mark.parametrize("confine_", CONFINES)
@pytest.mark.parametrize("relpath", ["../x.jpg", "a/../../x.jpg", "/etc/passwd", "C:\\x.jpg", "", "   "])
def test_paths_refuse_escapes_and_absolute_paths(tmp_path: Path, relpath: str, confine_) -> None:
    root = tmp_path / "images"
    root.mkdir()
    with pytest.raises(DataError, match=r"anns\.json"):
        confine_(root, relpath, file="anns.json", record="image 7", field="file_name")


@pytest.mark.parametrize("confine_", CONFINES)
def test_symlinks_out_of_root_are_refused_file_or_folder(tmp_path: Path, confine_) -> None:
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    (root / "ok.jpg").write_bytes(b"x")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "x.jpg").write_bytes(b"x")
    (root / "sub" / "file_link.jpg").symlink_to(outside / "x.jpg")  # the last component
    (root / "dir_link").symlink_to(outside, target_is_directory=True)  # a folder on the way
    (root / "inside.jpg").symlink_to(root / "ok.jpg")  # a symlink that stays inside: fine
    (root / "up").symlink_to(root / "sub" / "..", target_is_directory=True)
    where = {"file": "anns.json", "record": 3, "field": "file_name"}
    paths = Paths()  # one instance for every call: the folder listings are cached
    for relpath in ("sub/file_link.jpg", "dir_link/x.jpg", "dir_link/missing.jpg", "sub/../dir_link/x.jpg"):
        with pytest.raises(DataError, match="escapes"):
            confine_(root, relpath, **where)
        with pytest.raises(DataError, match="escapes"):
            paths.confine(root, relpath, **where)
    for relpath in ("ok.jpg", "inside.jpg", "sub/missing.jpg", "up/ok.jpg", "missing/x.jpg"):
        assert confine_(root, relpath, **where) == confine(root, relpath, **where)
        assert paths.confine(root, relpath, **where) == str(confine(root, relpath, **where))


@pytest.mark.parametrize("confine_", CONFINES)
def test_a_symlink_loop_is_refused_not_taken_for_a_missing_image(tmp_path: Path, confine_) -> None:
    # a plain realpath returns a loop's own path, which lies inside the root: the image was then
    # skipped as "missing image", which sends a person looking for a file that is there
    root = tmp_path / "images"
    root.mkdir()
    (root / "self.jpg").symlink_to(root / "self.jpg")
    (root / "a").symlink_to(root / "b", target_is_directory=True)
    (root / "b").symlink_to(root / "a", target_is_directory=True)
    for relpath in ("self.jpg", "a/x.jpg", "b/c/x.jpg"):
        with pytest.raises(DataError) as err:
            confine_(root, relpath, file="anns.json", record=3, field="file_name")
        assert str(err.value) == (
            f"file anns.json, record 3, field 'file_name': image path {relpath!r} is a symlink loop: "
            "it never reaches a file"
        )


def test_outside_says_why_a_listed_path_may_not_be_read(tmp_path: Path) -> None:
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    (root / "ok.jpg").write_bytes(b"x")
    (tmp_path / "secret.jpg").write_bytes(b"x")
    (root / "in.jpg").symlink_to(root / "ok.jpg")
    (root / "out.jpg").symlink_to(tmp_path / "secret.jpg")
    (root / "up").symlink_to(tmp_path, target_is_directory=True)
    (root / "loop").symlink_to(root / "loop")
    assert [outside(root, root / name) for name in ("ok.jpg", "in.jpg", "sub", "missing.jpg")] == [None] * 4
    assert outside(root, root / "out.jpg") == outside(root, root / "up") == OUT_OF_ROOT
    assert outside(root, root / "loop") == outside(root, root / "loop" / "x.jpg") == SYMLINK_LOOP


def test_paths_behind_a_symlinked_root_are_inside(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.jpg").write_bytes(b"x")
    (tmp_path / "root").symlink_to(real, target_is_directory=True)
    where = {"file": "anns.json", "record": 3, "field": "file_name"}
    assert Paths().confine(tmp_path / "root", "a.jpg", **where) == str(tmp_path / "root" / "a.jpg")


# ---------------------------------------------------------------------------- check_image / load_image


def test_rgb_image_passes_without_repairs(ctx: SourceContext, make_image) -> None:
    path = make_image("a.jpg")
    assert check_image(path, ctx, record="r") == (32, 24)
    assert not ctx.tally.repaired and not ctx.tally.skipped


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [
        ("L", "png"),
        ("P", "png"),
        ("RGBA", "png"),
        ("CMYK", "jpg"),
        ("LA", "png"),
        ("I;16", "png"),
        ("1", "png"),
    ],
)
def test_non_rgb_modes_are_counted_and_loaded_as_rgb(
    ctx: SourceContext, make_image, mode: str, suffix: str
) -> None:
    path = make_image(f"img.{suffix}", mode=mode)
    with Image.open(path) as stored:
        assert stored.mode == mode
    assert check_image(path, ctx, record="r") == (32, 24)
    assert ctx.tally.repaired == {f"{mode} converted to RGB": 1}
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (32, 24)


def test_palette_with_transparency_loads_as_rgb(ctx: SourceContext, tmp_path: Path) -> None:
    img = Image.new("P", (32, 24), 0)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.info["transparency"] = 0
    img.save(tmp_path / "t.png")
    with Image.open(tmp_path / "t.png") as stored:
        assert "transparency" in stored.info
    assert check_image(tmp_path / "t.png", ctx, record="r") == (32, 24)
    out = load_image(tmp_path / "t.png")
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 0, 0)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.uint16)).save(tmp_path / "d.png")
    out = np.asarray(load_image(tmp_path / "d.png"))
    assert out[0, :, 0].tolist() == [0, 100, 255]


@pytest.mark.parametrize(
    ("orientation", "size"), [(6, (24, 32)), (8, (24, 32)), (3, (32, 24)), (1, (32, 24))]
)
def test_exif_orientation_gives_oriented_size(ctx: SourceContext, make_image, orientation, size) -> None:
    path = make_image("o.jpg", orientation=orientation)
    assert check_image(path, ctx, record="r") == size
    assert ctx.tally.repaired == ({"EXIF orientation applied": 1} if orientation != 1 else {})
    assert load_image(path).size == size


def test_orientation_6_rotates_pixels(tmp_path: Path) -> None:
    img = Image.new("RGB", (32, 24), (0, 0, 255))
    img.putpixel((0, 0), (255, 0, 0))  # top-left of the stored image
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: stored top-left lands top-right
    img.save(tmp_path / "o.png", exif=exif)
    out = load_image(tmp_path / "o.png")
    assert out.size == (24, 32)
    assert out.getpixel((23, 0)) == (255, 0, 0)
    with Image.open(tmp_path / "o.png") as mine:  # an image the caller opened is turned in a copy
        out = load_image(mine)
        assert out.size == (24, 32) and out.getpixel((23, 0)) == (255, 0, 0)
        assert mine.size == (32, 24) and mine.getexif()[0x0112] == 6


def test_an_upright_image_loads_with_its_pixels_and_outlives_its_file(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "u.png")
    out = load_image(tmp_path / "u.png")  # the file is closed by now
    assert out.mode == "RGB" and np.array_equal(np.asarray(out), pixels)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("garbage", "unreadable image"), ("truncated", "truncated image"), ("big", "decompression bomb")],
)
def test_broken_images_are_skipped_and_counted(
    ctx: SourceContext, bad_images, kind: str, reason: str
) -> None:
    ctx.max_image_pixels = 100 * 100
    path = bad_images(kind, "bad.jpg")
    assert check_image(path, ctx, record="image 5") is None
    assert ctx.tally.skipped == {reason: 1}
    assert ctx.tally.examples == 0


def test_missing_image_is_skipped(ctx: SourceContext, tmp_path: Path) -> None:
    assert check_image(tmp_path / "nope.jpg", ctx, record="r") is None
    assert ctx.tally.skipped == {"missing image": 1}


@pytest.mark.parametrize("name", ["t.jpg", "t.png"])
def test_truncation_is_only_caught_by_the_full_check(bad_images, name: str) -> None:
    path = bad_images("truncated", name)
    assert inspect_image(path, check="header").size == (32, 24)
    assert inspect_image(path, check="full").skip[0] == "truncated image"


def test_pil_own_bomb_limit_is_reported_as_bomb(ctx: SourceContext, make_image, monkeypatch) -> None:
    path = make_image("a.png", size=(64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL raises above twice this
    assert check_image(path, ctx, record="r") is None
    assert ctx.tally.skipped == {"decompression bomb": 1}


def test_cache_opens_once_but_counts_every_record(ctx: SourceContext, make_image, tmp_path: Path) -> None:
    cache: dict = {}
    good = make_image("g.png", mode="L")
    for record in ("q1", "q2"):
        check_image(good, ctx, record=record, cache=cache)
        check_image(tmp_path / "missing.png", ctx, record=record, cache=cache)
    assert len(cache) == 2
    assert ctx.tally.skipped == {"missing image": 2}
    assert ctx.tally.repaired == {"L converted to RGB": 2}


# ---------------------------------------------------------------------------- boxes and JSON


def test_parse_box_formats_and_errors() -> None:
    assert parse_box([1, 2, 3, 4], fmt="xywh", file="f", record=1, field="bbox") == (1, 2, 4, 6)
    assert parse_box([1, 2, 3, 4], fmt="xyxy", file="f", record=1, field="bbox") == (1, 2, 3, 4)
    for bad, fmt in (
        ([5, 2, 3, 4], "xyxy"),
        ([1, 2, -1, 4], "xywh"),
        ([1, 2, 3], "xyxy"),
        ([1, "a", 3, 4], "xyxy"),
    ):
        with pytest.raises(DataError, match=r"file f, record 1, field 'bbox'"):
            parse_box(bad, fmt=fmt, file="f", record=1, field="bbox")


def test_clip_objects_counts_clips_and_drops() -> None:
    tally = Tally()
    objects = [
        Object((1, 1, 5, 5), "a"),  # inside
        Object((-3, 2, 40, 10), "b"),  # clipped on both sides
        Object((35, 2, 40, 10), "c"),  # fully outside on the right: nothing left
        Object((4, 4, 4, 9), "d"),  # zero width from the start
    ]
    kept = clip_objects(objects, (32, 24), tally, record="r")
    assert kept == [Object((1, 1, 5, 5), "a"), Object((0, 2, 32, 10), "b")]
    assert tally.repaired == {"box clipped": 1, "zero-area box dropped": 2}


def test_read_json_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "images": [,]\n}')
    with pytest.raises(DataError, match=r"broken\.json.*line 2 column \d+"):
        read_json(path)
    with pytest.raises(DataError, match="not found"):
        read_json(tmp_path / "absent.json")


def test_an_annotation_file_that_cannot_be_opened_is_a_data_error(tmp_path: Path) -> None:
    # a symlink loop was an OSError from inside the reader (a traceback), not a named error
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    with pytest.raises(DataError) as err:
        read_json(loop)
    assert str(err.value) == f"file {loop}: the path is a symlink loop: it never reaches a file"
    with pytest.raises(DataError) as err:
        read_json(tmp_path)
    assert str(err.value) == f"file {tmp_path}: a folder, not a file"


def test_load_truncated_flag_is_restored(bad_images) -> None:
    from PIL import ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        assert inspect_image(bad_images("truncated", "t.jpg")).skip[0] == "truncated image"
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_checks_made_ahead_in_processes_are_the_checks_made_one_by_one(
    make_image, bad_images, tmp_path, monkeypatch
):
    """prefetch_checks (the COCO, VQAv2 and ImageFolder readers call it) gives every image the
    verdict check_image gives it alone, and the tally is still counted in the reader's order."""
    paths = []
    for i in range(80):
        kind = i % 8
        if kind == 0:
            paths.append(bad_images(("garbage", "truncated", "big")[i % 3], f"bad/{i}.jpg"))
        elif kind == 1:
            paths.append(tmp_path / f"missing/{i}.jpg")
        elif kind == 2:
            paths.append(make_image(f"rot/{i}.jpg", orientation=6))
        elif kind == 3:
            paths.append(make_image(f"grey/{i}.png", mode="L"))
        else:
            paths.append(make_image(f"ok/{i}.jpg", size=(20 + i, 10 + i)))
    names = [str(p) for p in paths]
    alone, ahead = SourceContext(name="src", split="train"), SourceContext(name="src", split="train")
    for c in (alone, ahead):
        c.max_image_pixels = 100 * 100
    monkeypatch.setattr(source_images, "PREFETCH_MIN_IMAGES", 10)  # the 2,000 that make workers worth it
    prefetch_checks(names + names[:5], ahead, processes=2)  # a repeated path is checked once
    assert sorted(ahead.image_checks) == sorted(names)
    sizes_alone = [check_image(n, alone, record=f"r{i}") for i, n in enumerate(names)]
    sizes_ahead = [check_image(n, ahead, record=f"r{i}") for i, n in enumerate(names)]
    assert sizes_ahead == sizes_alone
    assert sizes_alone[4] == (24, 14) and sizes_alone[2] == (24, 32) and sizes_alone[1] is None
    assert ahead.image_checks == alone.image_checks
    assert ahead.tally.skipped == alone.tally.skipped and ahead.tally.repaired == alone.tally.repaired
    skipped = {"missing image": 10, "unreadable image": 4, "truncated image": 3, "decompression bomb": 3}
    assert alone.tally.skipped == skipped


def test_checks_ahead_whose_worker_fails_leave_the_work_to_check_image(make_image, monkeypatch, caplog):
    import sys

    monkeypatch.setattr(sys, "executable", "/bin/false")  # a worker that exits 1 with nothing written
    monkeypatch.setattr(source_images, "PREFETCH_MIN_IMAGES", 1)
    ctx = SourceContext(name="src", split="train")
    names = [str(make_image(f"{i}.jpg")) for i in range(3)]
    prefetch_checks(names, ctx, processes=2)  # no error: one by one instead
    assert ctx.image_checks == {} and "stopped after 0 of 2 images" in caplog.text
    assert [check_image(n, ctx, record=str(i)) for i, n in enumerate(names)] == [(32, 24)] * 3

"""Benchmark `uvft build` at COCO-2017 scale: a fresh build and a cached rebuild, uvft's build
against the build as it was before its speed-up (the baseline), on the same generated data.

The data is COCO-2017 train shaped and generated deterministically (once per scale, cached under
/tmp/uvft-build-scale): 118,287 small real JPEGs, an instances JSON with 80 categories and ~7.3
boxes per image (860k, with polygons, areas and ~1% crowd regions), a captions JSON with 5 per
image (592k), VQAv2 questions and annotations (444k questions, 10 answers each) over the same
image files (through `image_pattern`). The recipe reads the three sources, train split,
`caption_targets: per_caption`, `check_images: full`: 1.15M records at scale 1.

Baseline. The code before the speed-up is taken verbatim from git (`git archive BASELINE_REF
pipeline`, extracted to a temporary folder) and imported from there, so no copy of old code
lives in the repository and nothing the baseline runs was re-typed. Each build runs in its own
child process (python -c, the baseline's tree or this checkout first on sys.path), which
reports the seconds of the `build()` call and its peak RSS (getrusage ru_maxrss); the cached
rebuild runs in the same child right after. Both builds write to separate cache folders; the
benchmark then compares their records: same splits, same features, and Arrow tables equal
(`pa.Table.equals`: same rows, same order, same values) on the columns both have: the record
schema has grown since the baseline, and the newer columns are checked against uvft's schema.

    python bench/build_scale.py [--scale 1.0] [--baseline-ref ec0125a] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from common import report

ROOT = Path(__file__).resolve().parent.parent
BASELINE_REF = "ec0125a"  # main before the build speed-up
CACHE = Path(tempfile.gettempdir()) / "uvft-build-scale"

N_IMAGES, N_BOXES, N_CAPTIONS, N_QUESTIONS = 118_287, 860_001, 591_753, 443_757
SIZES = [(64, 48), (48, 64), (64, 64), (80, 60), (60, 80), (72, 48)]
WORDS = [
    *[
        "a",
        "man",
        "woman",
        "dog",
        "cat",
        "red",
        "blue",
        "on",
        "the",
        "with",
        "sitting",
        "next",
        "to",
        "table",
        "street",
        "two",
        "of",
        "in",
        "an",
    ]
]
ANSWERS = ["yes", "no", "2", "1", "3", "red", "white", "tennis", "dog", "frisbee"]


def generate(root: Path, scale: float) -> None:
    """A COCO-2017-train-shaped set at `scale` (written once; `done` marks a complete set)."""
    if (root / "done").is_file():
        return
    from PIL import Image

    shutil.rmtree(root, ignore_errors=True)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    rng = random.Random(0)
    n_img = round(N_IMAGES * scale)
    # a pool of real JPEGs (every size, a few colours); each file is one of them, byte for byte
    pool: dict[tuple[int, int], list[bytes]] = {}
    for w, h in SIZES:
        for c in range(8):
            buf = io.BytesIO()
            Image.new("RGB", (w, h), (30 * c, 255 - 30 * c, 17 * c)).save(buf, "JPEG", quality=80)
            pool.setdefault((w, h), []).append(buf.getvalue())
    images = []
    for i in range(n_img):
        image_id = 1 + i * 3  # COCO ids are sparse
        w, h = SIZES[rng.randrange(len(SIZES))]
        name = f"{image_id:012d}.jpg"
        (root / "images" / name).write_bytes(pool[(w, h)][rng.randrange(8)])
        images.append({"license": 1, "file_name": name, "height": h, "width": w, "id": image_id})
    categories = [
        {"supercategory": "thing", "id": c + 1 + c // 10, "name": f"category {c}"} for c in range(80)
    ]

    anns = []
    for k in range(round(N_BOXES * scale)):
        img = images[rng.randrange(n_img)]
        w, h = img["width"], img["height"]
        x, y = round(rng.uniform(-2, w - 4), 2), round(rng.uniform(-2, h - 4), 2)
        bw, bh = round(rng.uniform(1, w - max(x, 0)), 2), round(rng.uniform(1, h - max(y, 0)), 2)
        poly = [x, y, x + bw, y, x + bw, y + bh, x, y + bh]
        anns.append(
            {
                "segmentation": [[round(v, 2) for v in poly]],
                "area": round(bw * bh, 2),
                "iscrowd": int(rng.random() < 0.01),
                "image_id": img["id"],
                "bbox": [x, y, bw, bh],
                "category_id": categories[rng.randrange(80)]["id"],
                "id": 900_000 + k,
            }
        )
    info = {"description": "generated COCO-2017-train-shaped set", "version": "1.0"}
    (root / "annotations/instances_train2017.json").write_text(
        json.dumps({"info": info, "images": images, "annotations": anns, "categories": categories})
    )
    del anns
    caps = []
    for k in range(round(N_CAPTIONS * scale)):
        img = images[k % n_img]  # 5 per image (a few get 6, as in COCO)
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 14)))
        caps.append({"image_id": img["id"], "id": 1_000_000 + k, "caption": text.capitalize() + ".\n"})
    (root / "annotations/captions_train2017.json").write_text(
        json.dumps({"info": info, "images": images, "annotations": caps})
    )
    del caps
    questions, qanns = [], []
    for k in range(round(N_QUESTIONS * scale)):
        img = images[rng.randrange(n_img)]
        qid = 10_000_000 + k
        text = "what is the " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) + "?"
        questions.append({"image_id": img["id"], "question": text, "question_id": qid})
        kind = rng.randrange(3)
        answers = [
            {
                "answer": rng.choice(ANSWERS[:2] if kind == 0 else ANSWERS),
                "answer_confidence": "yes",
                "answer_id": j,
            }
            for j in range(1, 11)
        ]
        qanns.append(
            {
                "question_type": "what is the",
                "multiple_choice_answer": answers[0]["answer"],
                "answers": answers,
                "image_id": img["id"],
                "answer_type": ("yes/no", "number", "other")[kind],
                "question_id": qid,
            }
        )
    common = {"info": info, "task_type": "Open-Ended", "data_type": "mscoco", "license": {}}
    (root / "annotations/questions_train2014.json").write_text(
        json.dumps({**common, "data_subtype": "train2014", "questions": questions})
    )
    (root / "annotations/annotations_train2014.json").write_text(
        json.dumps({**common, "data_subtype": "train2014", "annotations": qanns})
    )
    (root / "done").write_text("")


RECIPE = """\
name: build-scale
model: {{family: paligemma, id: null}}
data:
  root: {root}
  cache_dir: {cache}
  caption_targets: per_caption
  check_images: full
  max_skip_fraction: 0.0
  sources:
    - name: coco_detection
      format: coco_detection
      options: {{keep_negatives: true}}
      splits:
        train: {{annotations: annotations/instances_train2017.json, images: images}}
    - name: coco_captions
      format: coco_captions
      splits:
        train: {{annotations: annotations/captions_train2017.json, images: images}}
    - name: vqav2
      format: vqav2
      options: {{image_pattern: "{{image_id:012d}}.jpg"}}
      splits:
        train:
          questions: annotations/questions_train2014.json
          annotations: annotations/annotations_train2014.json
          images: images
"""

# Runs in a child process: the code under test comes first on sys.path.
CHILD = """\
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from pipeline.data.build import build
from pipeline.recipe import load_recipe
recipe = load_recipe(sys.argv[2])
t0 = time.perf_counter()
result = build(recipe, progress=False)
fresh = time.perf_counter() - t0
assert not result.cached
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.perf_counter()
again = build(recipe, progress=False)
cached = time.perf_counter() - t0
assert again.cached
import pipeline
print(json.dumps({"fresh_s": fresh, "cached_s": cached, "peak_rss": rss, "path": str(result.path),
                  "records": sum(sum(r.records.values()) for r in result.stats.rows),
                  "code": pipeline.__file__}))
"""


def run_build(code_root: Path, recipe: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(code_root), str(recipe)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=code_root,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["code"].startswith(str(code_root)), res["code"]  # the intended code ran
    return res


def same_records(a: Path, b: Path) -> tuple[bool, str]:
    """Whether the baseline's records (`a`) are uvft's (`b`) on what both have. The record schema
    has grown since the baseline (columns: crowd, phrase, polygons, text, regions, language; an
    object's area): every value the baseline wrote must be uvft's, row for row and in order
    (Arrow arrays equal; a list of structs compared field by field on the baseline's fields, with
    the same list lengths), and what only uvft writes must be in uvft's record schema
    (records.record_features). A column or field only the baseline has is a difference."""
    from datasets import load_from_disk

    from pipeline.records import record_features

    da, db = load_from_disk(str(a / "records")), load_from_disk(str(b / "records"))
    if sorted(da) != sorted(db):
        return False, f"splits differ: {sorted(da)} vs {sorted(db)}"
    schema = record_features()
    for split in da:
        x, y = da[split].data.table, db[split].data.table
        if len(x) != len(y):
            return False, f"{split}: {len(x)} vs {len(y)} rows"
        new = [c for c in y.column_names if c not in x.column_names]
        for c in x.column_names:
            if c not in y.column_names or not _same_values(x.column(c), y.column(c)):
                return False, f"{split}: column {c!r} differs"
        if any(c not in schema for c in new) or set(y.column_names) != set(schema):
            return False, f"{split}: uvft's columns are not its record schema's"
    return True, (
        f"identical on everything the baseline writes ({len(x.column_names)} columns, pa arrays equal, "
        f"rows in order); uvft's newer columns ({', '.join(new)}) are its record schema's"
    )


def _same_values(a, b) -> bool:
    """Arrow arrays equal, or (a list of structs that gained fields) equal on `a`'s fields."""
    import pyarrow as pa
    import pyarrow.compute as pc

    a = a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a
    b = b.combine_chunks() if isinstance(b, pa.ChunkedArray) else b
    if a.type == b.type:
        return a.equals(b)
    lists = pa.types.is_list(a.type) and pa.types.is_list(b.type)
    if not (lists and pa.types.is_struct(a.type.value_type) and pa.types.is_struct(b.type.value_type)):
        return False
    if a.null_count != b.null_count or not pc.list_value_length(a).equals(pc.list_value_length(b)):
        return False
    fields, theirs = [f.name for f in a.type.value_type], {f.name for f in b.type.value_type}
    fa, fb = a.flatten(), b.flatten()
    return all(n in theirs and _same_values(fa.field(n), fb.field(n)) for n in fields)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--baseline-ref", default=BASELINE_REF)
    ap.add_argument("--skip-baseline", action="store_true", help="time uvft's build only")
    args = ap.parse_args()

    data = CACHE / f"scale-{args.scale:g}"
    t0 = time.perf_counter()
    generate(data, args.scale)
    gen_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="uvft-build-scale-") as tmp:
        tmp = Path(tmp)
        builds = [("uvft", ROOT)]
        if not args.skip_baseline:
            base = tmp / "baseline"
            base.mkdir()
            archive = subprocess.run(
                ["git", "archive", args.baseline_ref, "pipeline"], cwd=ROOT, check=True, capture_output=True
            ).stdout
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(base, filter="data")
            builds.insert(0, (f"baseline (git {args.baseline_ref})", base))
        results = {}
        for name, code in builds:
            recipe = tmp / f"{len(results)}.yaml"
            recipe.write_text(RECIPE.format(root=data, cache=tmp / f"cache{len(results)}"))
            results[name] = run_build(code, recipe)
            r = results[name]
            print(f"{name}: fresh {r['fresh_s']:.1f} s, peak RSS {r['peak_rss'] / 2**30:.2f} GiB", flush=True)
        same, how = (True, "baseline skipped")
        if len(results) == 2:
            a, b = (Path(r["path"]) for r in results.values())
            same, how = same_records(a, b)

    rows = [
        [
            name,
            r["records"],
            round(r["fresh_s"], 1),
            round(r["peak_rss"] / 2**30, 2),
            round(r["cached_s"], 2),
            "yes" if same else "NO",
        ]
        for name, r in results.items()
    ]
    print(f"data: scale {args.scale:g} at {data} (generated or found in {gen_s:.1f} s); records: {how}")
    headers = ["build", "records", "fresh s", "peak RSS GiB", "cached s", "records identical"]
    if len(results) == 2:
        (b, n) = results.values()
        ratio = (
            f"fresh build {b['fresh_s'] / n['fresh_s']:.2f}x faster than the baseline "
            f"({b['fresh_s']:.1f} s -> {n['fresh_s']:.1f} s), peak RSS {b['peak_rss'] / 2**30:.2f} -> "
            f"{n['peak_rss'] / 2**30:.2f} GiB; records {'identical' if same else 'DIFFER'}"
        )
    else:
        n = results["uvft"]
        ratio = f"fresh build {n['fresh_s']:.1f} s (no baseline run)"
    report("build_scale", headers, rows, ratio, scale=args.scale, records_check=how, results=results)
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Deep nesting in every JSON reader (COCO instances and captions, VQAv2 questions and streamed
annotations, JSONL lines, RefCOCO refs as JSON or pickle and its instances, a JSON label map) is
refused before it is parsed, quickly and in bounded memory: a DataError naming the file (and the
line of a JSONL file) and the byte offset of the first level past the bound. Before the bound, a
VQAv2 annotations file of 2 MB of brackets took the streaming parser past 24 GB, and a value of a
thousand levels made the readers' error messages a RecursionError.

Each depth is read in a fresh interpreter under a 3 GB address-space limit, which reports its own
peak RSS: VmHWM, of its own memory map (ru_maxrss keeps the parent's at the fork, so a child of a
pytest holding 500 MB reports 500 MB; RUSAGE_CHILDREN is the largest of every child of the run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.demo import shapes
from pipeline.sources.nesting import MAX_DEPTH

ROOT = Path(__file__).resolve().parents[2]
PEAK_RSS_MB = 400  # the interpreter with numpy and PIL is ~100 MB; a regression reaches gigabytes
SECONDS = 5.0  # per reader, for files of 2 MB

# read every case in a fresh interpreter; print what each raised, how long it took, and the peak RSS
CHILD = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from pathlib import Path
from pipeline.sources import SourceContext, get
cases = json.loads(Path(sys.argv[1]).read_text())
out = {}
for name, (reader, params) in cases.items():
    params = {k: Path(v) if k not in ("image_pattern", "ref_splits") else v for k, v in params.items()}
    started = time.monotonic()
    try:
        n = len(list(get(reader)(SourceContext(name="s", split="train", prefetch=False), **params)))
        outcome = f"read {n} examples"
    except BaseException as e:
        outcome = f"{type(e).__name__}: {e}"[:400]
    out[name] = [outcome, time.monotonic() - started]
status = Path("/proc/self/status").read_text().split("VmHWM:")
out["peak RSS MB"] = int(status[1].split()[0]) / 1024
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nesting") / "shapes"
    shapes.generate(root, n_train=3, n_val=1, max_shapes=1, seed=3, progress=False)
    return root


def _offset(text: str, limit: int = MAX_DEPTH) -> int:
    """The byte offset of the first bracket past `limit` levels (ASCII text), counted one by one."""
    depth, in_string, escaped = 0, False, False
    for i, c in enumerate(text):
        if in_string:
            escaped, in_string = (False, in_string) if escaped else (c == "\\", c != '"')
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > limit:
                return i
        elif c in "]}":
            depth -= 1
    raise AssertionError("not too deep")


def _pickled_ref_with_deep_split(depth: int) -> bytes:
    """A refs pickle (protocol 2, written by hand: pickle.dumps recurses) of one ref whose `split`
    is a list nested `depth` levels deep, which its error message would repr."""

    def text(s: str) -> bytes:
        return b"X" + len(s).to_bytes(4, "little") + s.encode()

    fields = b"".join(text(k) + b"K\x01" for k in ("ref_id", "ann_id", "image_id"))
    fields += text("sentences") + b"]" + text("split") + b"]" * depth + b"a" * (depth - 1)
    return b"\x80\x02]}(" + fields + b"ua."


def _cases(data: Path, out: Path, depth: int) -> tuple[dict[str, Any], dict[str, str]]:
    """The reader cases (name -> (reader, parameters)) and the error each must raise."""
    deep = "[" * depth + "]" * depth
    annotations = data / "annotations"
    cases: dict[str, Any] = {}
    expected: dict[str, str] = {}

    def write(name: str, doc: Any, *, lines: bool = False) -> tuple[Path, str]:
        text = "\n".join(json.dumps(x) for x in doc) + "\n" if lines else json.dumps(doc)
        text = text.replace('"DEEP"', deep)
        path = out / name
        path.write_text(text)
        return path, text

    def load(name: str) -> Any:
        return json.loads((annotations / name).read_text())

    def too_deep(case: str, path: Path, text: str, record: str = "") -> None:
        expected[case] = (
            f"TooDeep: file {path}{record}: nesting deeper than {MAX_DEPTH} levels at byte offset "
            f"{_offset(text)}; an annotation file nests a handful (COCO's: 5)"
        )

    images = str(data / "images/train")
    inst = load("instances_train.json")
    inst["annotations"][0]["bbox"] = "DEEP"
    path, text = write("instances.json", inst)
    cases["coco_detection"] = ("coco_detection", {"annotations": str(path), "images": images})
    too_deep("coco_detection", path, text)

    caps = load("captions_train.json")
    caps["annotations"][0]["caption"] = "DEEP"
    path, text = write("captions.json", caps)
    cases["coco_captions"] = ("coco_captions", {"annotations": str(path), "images": images})
    too_deep("coco_captions", path, text)

    vqa = {
        "questions": str(annotations / "v2_OpenEnded_shapes_train_questions.json"),
        "annotations": str(annotations / "v2_shapes_train_annotations.json"),
        "images": images,
        "image_pattern": "{image_id:06d}.png",
    }
    questions = load("v2_OpenEnded_shapes_train_questions.json")
    questions["questions"][0]["question"] = "DEEP"
    path, text = write("questions.json", questions)
    cases["vqav2 questions"] = ("vqav2", {**vqa, "questions": str(path)})
    too_deep("vqav2 questions", path, text)
    answers = load("v2_shapes_train_annotations.json")
    answers["annotations"][0]["answers"] = "DEEP"
    path, text = write("answers.json", answers)
    cases["vqav2 annotations (streamed)"] = ("vqav2", {**vqa, "annotations": str(path)})
    too_deep("vqav2 annotations (streamed)", path, text)

    line = {"task": "caption", "image": "images/train/000000.png", "caption": "a shape"}
    path, text = write("all.jsonl", [line, {**line, "caption": "DEEP"}], lines=True)
    cases["jsonl"] = ("jsonl", {"path": str(path), "images": str(data)})
    too_deep("jsonl", path, text, ", record line 2")

    refs = [
        {"ref_id": a["id"], "ann_id": a["id"], "image_id": a["image_id"], "split": "train",
         "sentences": [{"sent": "the shape"}]}
        for a in load("instances_train.json")["annotations"]
    ]  # fmt: skip
    plain_refs, _ = write("refs_plain.json", refs)
    refcoco = {
        "instances": str(annotations / "instances_train.json"),
        "images": images,
        "ref_splits": "train",
    }
    path, text = write("refs.json", [{**refs[0], "split": "DEEP"}, *refs[1:]])
    cases["refcoco refs"] = ("refcoco", {**refcoco, "refs": str(path)})
    too_deep("refcoco refs", path, text)
    inst = load("instances_train.json")
    inst["annotations"][0]["segmentation"] = "DEEP"
    path, text = write("refcoco_instances.json", inst)
    cases["refcoco instances"] = ("refcoco", {**refcoco, "refs": str(plain_refs), "instances": str(path)})
    too_deep("refcoco instances", path, text)
    path = out / "refs.p"
    path.write_bytes(_pickled_ref_with_deep_split(depth))
    cases["refcoco refs pickle"] = ("refcoco", {**refcoco, "refs": str(path)})
    expected["refcoco refs pickle"] = (
        f"TooDeep: file {path}: nesting deeper than {MAX_DEPTH} levels; an annotation nests a handful"
    )

    path, text = write("labels.json", {"circle": "DEEP"})
    cases["image_folder label map"] = (
        "image_folder",
        {"root": str(data / "imagefolder/train"), "label_map_file": str(path)},
    )
    too_deep("image_folder label map", path, text)
    return cases, expected


# 1000 levels: orjson parses them, and an error message's repr of the value was a RecursionError;
# 10000: orjson's own limit; 2 MB: ijson's prefixes past 24 GB
@pytest.mark.parametrize(
    "depth", [1000, 10_000, 1_000_000], ids=["depth 1000", "depth 10000", "2 MB of brackets"]
)
def test_deep_nesting_in_every_json_reader_is_refused_quickly_in_bounded_memory(
    data: Path, tmp_path: Path, depth: int
) -> None:
    cases, expected = _cases(data, tmp_path, depth)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "cases.json")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    peak = out.pop("peak RSS MB")
    print(
        f"depth {depth}: peak RSS {peak:.0f} MB; " + ", ".join(f"{k} {s:.2f}s" for k, (_, s) in out.items())
    )
    assert {case: outcome for case, (outcome, _) in out.items()} == expected
    assert max(seconds for _, seconds in out.values()) < SECONDS
    assert peak < PEAK_RSS_MB

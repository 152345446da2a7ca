"""`uvft check`'s findings and `uvft finetune`'s early checks (pipeline/check.py): the data paths
under data.root (a mistyped root said once), one record read per source, model.id against
model.family (a local folder's config.json; a hub id's config, else its name, with the hub lookup
injected or pointed at a loopback fake so no test waits on the network), the tiny stand-in, and the
verdict. The command line's output and exit codes are tested in tests/test_cli.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from coco_sets import tiny_recipe
from hub_server import fake_hub_fixture  # noqa: F401
from PIL import Image

from pipeline import check
from pipeline.check import NOTE, OK, PROBLEM, Finding, HubAnswer
from pipeline.errors import UvftError
from pipeline.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent


def _dataset(root: Path) -> Path:
    """Two sources of two splits each (COCO detection, ImageFolder), three images; the recipe."""
    (root / "images").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (32, 24), (60 * i, 90, 30)).save(root / "images" / f"{i}.png")
        (root / "classes" / "cat").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16)).save(root / "classes" / "cat" / f"{i}.png")
    coco = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 32, "height": 24} for i in range(3)],
        "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [2, 3, 10.25, 5]}],
        "categories": [{"id": 1, "name": "box"}],
    }
    (root / "instances.json").write_text(json.dumps(coco))
    recipe = tiny_recipe(
        root / "r.yaml",
        root,
        """\
    - name: boxes
      format: coco_detection
      splits:
        train: {annotations: instances.json, images: images}
        val: {annotations: instances.json, images: images}
    - name: kinds
      format: image_folder
      splits: {train: {root: classes}, val: {root: classes}}
""",
    )
    return recipe


@pytest.fixture
def data(tmp_path: Path) -> Path:
    _dataset(tmp_path / "data")
    return tmp_path / "data"


def _no_hub(model_id: str, revision: str | None, timeout: float) -> HubAnswer:
    return HubAnswer(None, f"the hub did not answer within {timeout:g} s, ReadTimeout")


# --- data ----------------------------------------------------------------------------------------


def test_a_dataset_that_is_there(data: Path):
    recipe = load_recipe(data / "r.yaml")
    assert check.data_findings(recipe, read_one=True) == [
        Finding(OK, "data.root", f"data.root {data}: the 6 paths the sources name are there"),
        Finding(
            OK,
            "boxes/train",
            "boxes/train (coco_detection): first example 0 (detection): image 0.png 32x24; objects (1): "
            "box [2.0, 3.0, 12.2, 8.0]; categories (1): 'box'",
        ),
        Finding(
            OK,
            "kinds/train",
            "kinds/train (image_folder): first example cat/0.png (classification): image 0.png 16x16; "
            "label 'cat'; categories (1): 'cat'",
        ),
    ]


def test_a_mistyped_data_root_is_said_once(data: Path):
    recipe = load_recipe(data / "r.yaml", [f"data.root={data}-typo"])
    assert check.data_findings(recipe, read_one=True) == [
        Finding(
            PROBLEM,
            "data.root",
            f"data.root {data}-typo: no such folder (the sources' relative paths are resolved under it)",
        )
    ]


def test_a_data_root_that_holds_none_of_the_paths_is_said_once(data: Path):
    recipe = load_recipe(data / "r.yaml", [f"data.root={data.parent}"])
    assert check.data_findings(recipe) == [
        Finding(
            PROBLEM,
            "data.root",
            f"data.root {data.parent}: none of the 6 paths the sources name is under it (e.g. boxes/train "
            "annotations: instances.json): is it the folder that holds them?",
        )
    ]


def test_a_missing_annotations_file_names_source_split_key_and_path(data: Path):
    recipe = load_recipe(data / "r.yaml", ["data.sources.boxes.splits.val.annotations=instance.json"])
    assert check.data_findings(recipe, read_one=True) == [
        Finding(
            PROBLEM, "boxes/val", f"boxes/val: annotations {data / 'instance.json'}: no such file or folder"
        )
    ]
    # an absolute path is looked for even when data.root is wrong
    absolute = ["data.root=/no/such/root", f"data.sources.kinds.splits.val.root={data}/klasses"]
    findings = check.data_findings(load_recipe(data / "r.yaml", absolute))
    assert [f.message for f in findings][1:] == [f"kinds/val: root {data}/klasses: no such file or folder"]


def test_a_missing_card_is_a_problem(data: Path):
    cards = ["data.sources.kinds.card=data_cards/nope.md", "data.sources.boxes.card=data_cards/nope.md"]
    assert check.data_findings(load_recipe(data / "r.yaml", cards))[-1] == Finding(
        PROBLEM,
        "boxes, kinds",
        "boxes, kinds: card data_cards/nope.md: no such file (relative to the folder uvft runs in)",
    )


def test_reading_one_record_says_what_the_reader_refuses(data: Path):
    (data / "instances.json").write_text('{"images": [], "annotations": [], "categories": [{"id": 1}]}')
    findings = check.data_findings(load_recipe(data / "r.yaml"), read_one=True)
    assert findings[1] == Finding(
        PROBLEM,
        "boxes/train",
        f"boxes/train: file {data / 'instances.json'}, record category 1, field 'name': required key 'name' "
        "is missing",
    )
    folder = ["data.sources.boxes.splits.train.annotations=images"]  # a folder where the file belongs
    findings = check.data_findings(load_recipe(data / "r.yaml", folder), read_one=True)
    assert findings[1] == Finding(
        PROBLEM, "boxes/train", f"boxes/train: file {data / 'images'}: a folder, not a file"
    )
    (data / "instances.json").write_text('{"images": [], "annotations": [], "categories": []}')
    findings = check.data_findings(load_recipe(data / "r.yaml"), read_one=True)
    assert findings[1] == Finding(PROBLEM, "boxes/train", "boxes/train (coco_detection): no examples")


def test_what_the_first_record_needed_is_said(data: Path):
    (data / "images" / "0.png").unlink()
    findings = check.data_findings(load_recipe(data / "r.yaml"), read_one=True)
    assert findings[1].message == (
        "boxes/train (coco_detection): first example 1 (detection): image 1.png 32x24; categories (1): "
        "'box' (on the way: 1 missing image)"
    )


def test_a_demo_set_is_generated_on_first_use_not_missing(tmp_path: Path):
    recipe = load_recipe(ROOT / "recipes/demo.yaml", [f"data.root={tmp_path / 'shapes'}"])
    assert check.data_findings(recipe, read_one=True) == [
        Finding(
            NOTE,
            "data.root",
            f"data.root {tmp_path / 'shapes'}: no demo set there yet: it is generated on first use "
            "(data.demo)",
        )
    ]


def test_a_hub_dataset_is_left_to_the_build(data: Path):
    recipe = load_recipe(
        data / "r.yaml",
        ["data.sources.1={name: hub, format: hf_dataset, splits: {train: {path: me/x, task: vqa}}}"],
    )
    assert check.data_findings(recipe, read_one=True)[-1] == Finding(
        NOTE, "hub/train", "hub/train: hf_dataset is opened by the build (its path may be on the hub)"
    )


# --- the model -----------------------------------------------------------------------------------


def _model(data: Path, *overrides: str, fetch=_no_hub) -> list[Finding]:
    return check.model_findings(load_recipe(data / "r.yaml", list(overrides)), fetch=fetch)


def test_a_local_folder_of_another_family_is_a_mismatch(data: Path, tmp_path: Path):
    folder = tmp_path / "pali"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "paligemma"}))
    assert _model(data, "model.family=florence2", f"model.id={folder}") == [
        Finding(
            PROBLEM,
            "model.id",
            f"model.id {folder}: its {folder / 'config.json'} says 'paligemma', but model.family is "
            "florence2: set model.family: paligemma, or model.id to a florence2 model",
        )
    ]
    assert _model(data, f"model.id={folder}")[0].level == OK
    (folder / "config.json").write_text(json.dumps({"model_type": "llava"}))
    assert _model(data, f"model.id={folder}")[0].message.endswith(
        "says 'llava', but model.family is paligemma: uvft trains florence2, paligemma"
    )
    (folder / "config.json").unlink()
    assert _model(data, f"model.id={folder}") == [
        Finding(PROBLEM, "model.id", f"model.id {folder}: the folder has no config.json")
    ]


def test_a_path_that_is_no_folder(data: Path):
    assert _model(data, "model.id=./no/such/model") == [
        Finding(PROBLEM, "model.id", "model ./no/such/model: no such folder (a hub id is namespace/name)")
    ]


def test_a_hub_id_by_its_config_then_by_its_name(data: Path):
    def config_of(model_type: str):
        return lambda model_id, revision, timeout: HubAnswer({"model_type": model_type}, "the hub")

    pali = "google/paligemma2-3b-pt-224"
    assert _model(data, "model.family=florence2", f"model.id={pali}", fetch=config_of("paligemma")) == [
        Finding(
            PROBLEM,
            "model.id",
            f"model.id {pali}: its config.json (from the hub) says 'paligemma', but model.family is "
            "florence2: set model.family: paligemma, or model.id to a florence2 model",
        )
    ]
    # no answer within the time limit: the name decides, and the line says so
    assert _model(data, "model.family=florence2", f"model.id={pali}") == [
        Finding(
            PROBLEM,
            "model.id",
            f"model.id {pali}: its name says 'paligemma', but model.family is florence2: set model.family: "
            "paligemma, or model.id to a florence2 model (its config was not read: the hub did not answer "
            "within 3 s, ReadTimeout)",
        )
    ]
    florence = _model(data, "model.family=paligemma", "model.id=microsoft/Florence-2-base")
    assert florence[0].level == PROBLEM and "its name says 'florence2'" in florence[0].message
    assert _model(data, "model.family=florence2", "model.id=microsoft/Florence-2-base") == [
        Finding(
            OK,
            "model.id",
            "model.id microsoft/Florence-2-base: its name says florence2, as model.family does (its config "
            "was not read: the hub did not answer within 3 s, ReadTimeout)",
        )
    ]
    assert _model(data, "model.id=me/my-model")[0] == Finding(
        NOTE,
        "model.id",
        "model.id me/my-model: not checked against model.family paligemma: its name says no family (its "
        "config was not read: the hub did not answer within 3 s, ReadTimeout)",
    )
    # the config wins over the name
    assert _model(data, f"model.id={pali}", fetch=config_of("paligemma"))[0].level == OK
    missing = lambda model_id, revision, timeout: HubAnswer(None, "the hub has no such model", True)  # noqa: E731
    assert _model(data, "model.id=me/typo", fetch=missing) == [
        Finding(PROBLEM, "model.id", "model.id me/typo: the hub has no such model")
    ]


def test_the_name_rule():
    assert check.name_family("google/paligemma2-3b-pt-224") == "paligemma"
    assert check.name_family("microsoft/Florence-2-large-ft") == "florence2"
    assert check.name_family("florence-community/Florence_2_base") == "florence2"
    assert check.name_family("me/florence2-paligemma-merge") is None  # both: the name does not say
    assert check.name_family("me/model") is None


def test_hub_config_reads_the_hub_then_its_cache(fake_hub):
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi()
    api.create_repo("me/pali", private=False, token=fake_hub.token)
    api.upload_file(
        path_or_fileobj=b'{"model_type": "paligemma"}',
        path_in_repo="config.json",
        repo_id="me/pali",
        token=fake_hub.token,
    )
    assert check.hub_config("me/pali", None, 3.0) == HubAnswer({"model_type": "paligemma"}, "the hub")
    assert check.hub_config("me/none", None, 3.0) == HubAnswer(
        None,
        "the hub has no such model (or it is private and this machine is not logged in: hf auth login)",
        missing=True,
    )
    api.create_repo("me/empty", private=False, token=fake_hub.token)
    assert check.hub_config("me/empty", None, 3.0) == HubAnswer(
        None, "its hub repo has no config.json (not a transformers model)", missing=True
    )
    hf_hub_download("me/pali", "config.json")
    requests = len(fake_hub.requests)
    assert check.hub_config("me/pali", None, 3.0) == HubAnswer(
        {"model_type": "paligemma"}, "the local hub cache"
    )
    assert len(fake_hub.requests) == requests  # the cache answered: no request


def test_hub_config_gives_up_after_its_timeout_and_never_asks_offline(fake_hub, monkeypatch):
    from huggingface_hub import constants

    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        answer = check.hub_config("me/slow", None, 0.3)
    assert answer == HubAnswer(None, "the hub did not answer within 0.3 s, ReadTimeout")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert check.hub_config("me/slow", None, 0.3) == HubAnswer(
        None, "offline mode (HF_HUB_OFFLINE), and not in the local hub cache"
    )


def test_the_tiny_stand_in_is_said_for_what_it_is():
    recipe = load_recipe(ROOT / "recipes/demo.yaml")
    assert check.model_findings(recipe) == []  # finetune's early checks: nothing to check
    assert check.model_findings(recipe, describe_tiny=True) == [
        Finding(
            NOTE,
            "model.id",
            "model.id null: uvft's tiny stand-in PaliGemma, random weights (~1.1M parameters) given a base "
            "stage of 2800 steps (model.tiny.base_steps) on shapes_captions, shapes_detection: for demos and "
            "tests, not a real model; set model.id to a hub id or a folder to fine-tune one",
        )
    ]
    assert check.tiny_parameters("paligemma", {}) == 1_120_000
    bare = load_recipe(ROOT / "recipes/demo.yaml", ["model.tiny.base_steps=0", "model.family=florence2"])
    assert check.tiny_description(bare).startswith(
        "model.id null: uvft's tiny stand-in Florence-2, random weights (~2.0M parameters) with no base "
        "stage (model.tiny.base_steps: 0): "
    )
    staged = load_recipe(ROOT / "recipes/demo_all_tasks.yaml")
    assert check.tiny_description(staged).startswith(
        "model.id null: uvft's tiny stand-in Florence-2, random weights (~2.0M parameters) given base "
        "stages (model.tiny.base_stages) of 2800 steps on shapes_captions, shapes_detection; then 6000 "
        "steps on every training source: "
    )


# --- the verdict and finetune's early checks ------------------------------------------------------


def test_the_verdict():
    assert check.verdict([Finding(OK, "a", "a"), Finding(NOTE, "b", "b")]) == "ok: ready to train"
    problems = [Finding(PROBLEM, "data.root", "x"), Finding(PROBLEM, "model.id", "y")]
    assert check.verdict(problems) == "2 problems: data.root, model.id"
    assert check.verdict(problems[:1]) == "1 problem: data.root"


def test_preflight_is_one_line(data: Path, tmp_path: Path):
    check.preflight(load_recipe(data / "r.yaml"), fetch=_no_hub)  # nothing wrong: nothing raised
    with pytest.raises(UvftError) as e:
        check.preflight(load_recipe(data / "r.yaml", [f"data.root={data}-typo"]), fetch=_no_hub)
    assert str(e.value) == (
        f"data.root {data}-typo: no such folder (the sources' relative paths are resolved under it)"
    )
    wrong = [f"data.root={data}-typo", "model.family=florence2", "model.id=google/paligemma2-3b-pt-224"]
    with pytest.raises(UvftError) as e:
        check.preflight(load_recipe(data / "r.yaml", wrong), fetch=_no_hub)
    assert str(e.value).startswith("2 problems: model.id google/paligemma2-3b-pt-224: its name says")
    assert "\n" not in str(e.value) and f"; data.root {data}-typo: no such folder" in str(e.value)


# `uvft check` in a fresh interpreter under a 3 GB address-space limit, reporting its exit code and
# its own peak RSS: VmHWM, of its own memory map (ru_maxrss keeps the parent's at the fork)
_CHECK = """
import json, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from pipeline import cli
rc = cli.main(["check", sys.argv[1]])
peak = int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps([rc, peak]))
"""


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("    size: {}", "    size: {hidden: BOMB}"),
        ('options: {image_pattern: "{image_id:06d}.png"}', "options: {image_pattern: BOMB}"),
    ],
    ids=["model.tiny.size", "a source's options"],
)
def test_check_refuses_an_alias_bomb_at_once_in_bounded_memory(tmp_path: Path, old: str, new: str):
    # it built the bomb, then ran out of memory expanding it (35 s and a MemoryError at a 3 GB cap)
    import subprocess
    import sys

    from yaml_bombs import demo_recipe_with_bomb

    path = demo_recipe_with_bomb(tmp_path, old, new)
    proc = subprocess.run(
        [sys.executable, "-c", _CHECK, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    *lines, last = proc.stdout.splitlines()
    rc, peak_mb = json.loads(last)
    message = (
        f"{path}: the YAML expands to more than 100000 values through aliases (&anchor/*alias); "
        "a recipe needs far fewer"
    )
    assert (rc, lines) == (2, [f"problem  {message}", "1 problem: recipe"]), proc.stderr[-2000:]
    print(f"uvft check with a bomb under {old.strip()}: peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 400


def test_a_mask_codec_file_that_is_not_there_is_a_problem_at_once(data: Path, tmp_path: Path):
    """PaliGemma writes masks as codes of `model.mask_vae`: a path to no file fails the first second."""
    missing = tmp_path / "vae-oid.npz"
    recipe = load_recipe(data / "r.yaml", [f"model.mask_vae={missing}"])
    with pytest.raises(UvftError) as e:
        check.preflight(recipe, fetch=_no_hub)
    assert str(e.value) == (
        f"model.mask_vae {missing}: no such file (a .npz or .safetensors in vae-oid.npz's layout; or oid, "
        "or stand-in)"
    )
    missing.write_bytes(b"")
    assert Finding(OK, "model.mask_vae", f"model.mask_vae {missing}: the mask codec's file is there") in (
        check.check(recipe, fetch=_no_hub)
    )
    # Florence-2 writes polygons: the key is not read, so not checked
    florence = load_recipe(
        data / "r.yaml", [f"model.mask_vae={tmp_path / 'none.npz'}", "model.family=florence2"]
    )
    assert check.mask_vae_findings(florence) == []
    assert check.mask_vae_findings(load_recipe(data / "r.yaml", ["model.mask_vae=oid"])) == []

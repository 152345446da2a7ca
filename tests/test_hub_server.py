"""The fake Hub of tests/hub_server.py, driven by the plain huggingface_hub client (no uvft code): repos,
uploads (regular files inline, binaries through LFS "basic", never xet), pull requests, downloads, errors,
and the network going down."""

from __future__ import annotations

import hashlib
import json
import random
import struct
import zlib
from pathlib import Path

import httpx2
import pytest
from hub_server import TOKEN, FakeHub, fake_hub_fixture, patch_hub_client, unused_url  # noqa: F401
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils._runtime import is_xet_available

REPO = "me/tiny-model"

# huggingface_hub's LFS upload passes the file as `data=` (httpx2 wants `content=`): its warning, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")


def _png(width: int = 4, height: int = 3) -> bytes:
    """A valid RGB PNG (signature, IHDR, IDAT, IEND), made with the standard library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    scan = b"".join(
        b"\0" + b"".join(bytes([x * 60 % 256, y * 80 % 256, 200]) for x in range(width))
        for y in range(height)
    )
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(scan))
        + chunk(b"IEND", b"")
    )


def _safetensors(n_bytes: int = 200_000) -> bytes:
    n = n_bytes // 4
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + random.Random(0).randbytes(4 * n)


def _folder(root: Path) -> dict[str, bytes]:
    files = {
        "README.md": b"---\nlicense: apache-2.0\n---\n# tiny\n",
        "notes.txt": "a text file, with UTF-8: d\u00e9j\u00e0 vu\n".encode(),
        "config.json": json.dumps({"model_type": "tiny", "hidden": 8}, indent=2).encode(),
        "model.safetensors": _safetensors(),
        "images/sample.png": _png(),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def _read_tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_whoami_and_bad_token(fake_hub: FakeHub) -> None:
    assert fake_hub.token == TOKEN and fake_hub.user == "me"
    assert HfApi().whoami(token=fake_hub.token)["name"] == "me"
    with pytest.raises(HfHubHTTPError) as err:
        HfApi().whoami(token="hf_wrong")
    assert err.value.response.status_code == 401
    assert fake_hub.requests[-1].header("authorization") == "Bearer hf_wrong"


def test_create_repo(fake_hub: FakeHub) -> None:
    api = HfApi()
    url = api.create_repo(REPO, private=True, token=fake_hub.token)
    assert url.repo_id == REPO and url == f"{fake_hub.url}/{REPO}"
    assert fake_hub.repos[REPO].private is True
    assert fake_hub.repos[REPO].commit_messages == ["initial commit"]
    assert set(fake_hub.files(REPO)) == {".gitattributes"}

    assert api.create_repo(REPO, exist_ok=True, token=fake_hub.token).repo_id == REPO
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(REPO, exist_ok=False, token=fake_hub.token)
    assert err.value.response.status_code == 409

    api.create_repo("me/public", private=False, token=fake_hub.token)
    assert fake_hub.repos["me/public"].private is False

    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("me/other", token="hf_not_a_real_token")
    assert err.value.response.status_code == 401
    assert "me/other" not in fake_hub.repos

    for exist_ok in (False, True):
        with pytest.raises(
            HfHubHTTPError, match="don't have the rights to create a model under the namespace"
        ):
            api.create_repo("someone-else/x", exist_ok=exist_ok, token=fake_hub.token)
    assert [r.status for r in fake_hub.find("POST", "/api/repos/create")[-2:]] == [403, 403]

    # A private repo is invisible without the token, visible with it.
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(REPO, token=False)
    assert api.model_info(REPO, token=fake_hub.token).private is True


def test_upload_folder_lfs_and_download(fake_hub: FakeHub, tmp_path: Path) -> None:
    api = HfApi()
    api.create_repo(REPO, private=True, token=fake_hub.token)
    folder = tmp_path / "out"
    local = _folder(folder)
    n_requests = len(fake_hub.requests)

    info = api.upload_folder(
        repo_id=REPO, folder_path=folder, commit_message="Upload tiny model", token=fake_hub.token
    )

    repo = fake_hub.repos[REPO]
    assert info.oid == repo.refs["main"] and info.commit_url == f"{fake_hub.url}/{REPO}/commit/{info.oid}"
    assert info.pr_url is None
    assert repo.commit_messages[-1] == "Upload tiny model"
    stored = fake_hub.files(REPO)
    assert {k: v for k, v in stored.items() if k != ".gitattributes"} == local  # byte-identical
    assert fake_hub.lfs_paths(REPO) == {"model.safetensors", "images/sample.png"}

    # The wire: preupload said which files go to LFS, the LFS objects were PUT (without the token) and
    # verified, and the NDJSON commit carried text inline (base64) and binaries as lfsFile pointers.
    reqs = fake_hub.requests[n_requests:]
    (preupload,) = [r for r in reqs if "/preupload/" in r.path]
    modes = {f["path"]: f["uploadMode"] for f in preupload.response_json()["files"]}
    assert modes == {
        "README.md": "regular",
        "notes.txt": "regular",
        "config.json": "regular",
        "model.safetensors": "lfs",
        "images/sample.png": "lfs",
    }
    (batch,) = [r for r in reqs if r.path.endswith(".git/info/lfs/objects/batch")]
    assert batch.json()["transfers"] == ["basic", "multipart"] and batch.json()["operation"] == "upload"
    assert batch.response_json()["transfer"] == "basic"
    puts = [r for r in reqs if r.method == "PUT"]
    assert sorted(r.body for r in puts) == sorted([local["model.safetensors"], local["images/sample.png"]])
    assert all(r.header("authorization") is None for r in puts)
    assert len([r for r in reqs if r.path.endswith("/objects/verify")]) == 2
    assert sorted(fake_hub.lfs_uploads) == sorted(
        hashlib.sha256(local[p]).hexdigest() for p in ("model.safetensors", "images/sample.png")
    )
    (commit,) = [r for r in reqs if "/commit/" in r.path]
    assert commit.header("content-type") == "application/x-ndjson"
    lines = commit.ndjson()
    assert lines[0] == {"key": "header", "value": {"summary": "Upload tiny model", "description": ""}}
    by_path = {line["value"]["path"]: line for line in lines[1:]}
    assert {p for p, line in by_path.items() if line["key"] == "lfsFile"} == {
        "model.safetensors",
        "images/sample.png",
    }
    assert (
        by_path["model.safetensors"]["value"]["oid"] == hashlib.sha256(local["model.safetensors"]).hexdigest()
    )
    assert {p for p, line in by_path.items() if line["key"] == "file"} == {
        "README.md",
        "notes.txt",
        "config.json",
    }

    # No xet anywhere: the client was not allowed to use it and nothing xet-ish was asked or offered.
    assert not is_xet_available()
    assert not [r for r in fake_hub.requests if "xet" in r.path.lower()]
    assert not [r for r in fake_hub.requests if any(h.startswith("x-xet") for h in r.headers)]
    assert all(r.header("authorization") in (None, f"Bearer {fake_hub.token}") for r in reqs)

    # Download it all back, byte-identical, through the (tmp) cache.
    snap = Path(snapshot_download(REPO, token=fake_hub.token))
    assert _read_tree(snap) == stored
    path = hf_hub_download(REPO, "model.safetensors", token=fake_hub.token, local_dir=tmp_path / "one")
    assert Path(path).read_bytes() == local["model.safetensors"]
    assert str(snap).startswith(str(tmp_path))  # HF_HUB_CACHE points into tmp_path
    head = fake_hub.find("HEAD", "/resolve/")[-1]
    assert head.status == 200 and head.path.endswith("/model.safetensors")

    with pytest.raises(RepositoryNotFoundError):
        snapshot_download(REPO, token=False, cache_dir=tmp_path / "anon")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.bin", token=fake_hub.token)

    # Uploading the same folder again is a no-op: the client compares the preupload oids and skips the commit.
    n_commits = len(fake_hub.find("POST", "/commit/"))
    api.upload_folder(repo_id=REPO, folder_path=folder, commit_message="again", token=fake_hub.token)
    assert len(fake_hub.find("POST", "/commit/")) == n_commits


def test_pull_request_and_revisions(fake_hub: FakeHub, tmp_path: Path) -> None:
    api = HfApi()
    api.create_repo(REPO, token=fake_hub.token)
    api.upload_file(path_or_fileobj=b"v1\n", path_in_repo="weights.txt", repo_id=REPO, token=fake_hub.token)
    main_before = fake_hub.repos[REPO].refs["main"]

    blob = random.Random(1).randbytes(4096)
    info = api.create_commit(
        REPO,
        [CommitOperationAdd("weights.txt", b"v2\n"), CommitOperationAdd("extra.pt", blob)],
        commit_message="Propose v2",
        create_pr=True,
        token=fake_hub.token,
    )
    assert info.pr_url == f"{fake_hub.url}/{REPO}/discussions/1"
    assert info.pr_revision == "refs/pr/1" and info.pr_num == 1
    repo = fake_hub.repos[REPO]
    assert [(pr.num, pr.ref, pr.title, pr.base) for pr in repo.prs] == [
        (1, "refs/pr/1", "Propose v2", "main")
    ]
    assert repo.refs["main"] == main_before  # main untouched
    assert fake_hub.files(REPO)["weights.txt"] == b"v1\n"
    assert fake_hub.files(REPO, "refs/pr/1")["weights.txt"] == b"v2\n"
    assert fake_hub.files(REPO, "refs/pr/1")["extra.pt"] == blob
    assert "extra.pt" in fake_hub.lfs_paths(REPO, "refs/pr/1")
    assert fake_hub.find("POST", "/commit/")[-1].query["create_pr"] == ["1"]

    # Push to the PR ref, then read it back through the client.
    api.create_commit(
        REPO,
        [CommitOperationAdd("weights.txt", b"v3\n")],
        commit_message="Fix v2",
        revision="refs/pr/1",
        token=fake_hub.token,
    )
    assert fake_hub.find("POST", "/commit/")[-1].path.endswith("/commit/refs%2Fpr%2F1")
    got = hf_hub_download(REPO, "weights.txt", revision="refs/pr/1", token=fake_hub.token)
    assert Path(got).read_bytes() == b"v3\n"
    assert api.model_info(REPO, revision="refs/pr/1").sha == repo.refs["refs/pr/1"]

    # A branch, and an unknown revision.
    api.create_branch(REPO, branch="dev", token=fake_hub.token)
    api.upload_file(
        path_or_fileobj=b"dev\n", path_in_repo="d.txt", repo_id=REPO, revision="dev", token=fake_hub.token
    )
    assert "d.txt" in fake_hub.files(REPO, "dev") and "d.txt" not in fake_hub.files(REPO)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "weights.txt", revision="nope", token=fake_hub.token)
    assert repo.commit_messages == [
        "initial commit",
        "Upload weights.txt with huggingface_hub",
        "Propose v2",
        "Fix v2",
        "Upload d.txt with huggingface_hub",
    ]


def test_network_down(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api = HfApi()
    api.create_repo(REPO, token=fake_hub.token)
    api.upload_file(path_or_fileobj=b"cached\n", path_in_repo="a.txt", repo_id=REPO, token=fake_hub.token)
    first = hf_hub_download(REPO, "a.txt", token=fake_hub.token)

    with fake_hub.down():
        with pytest.raises(httpx2.ConnectError):
            api.whoami(token=fake_hub.token)
        # huggingface_hub falls back to the cache when the Hub cannot be reached.
        assert hf_hub_download(REPO, "a.txt", token=fake_hub.token) == first
    assert api.whoami(token=fake_hub.token)["name"] == "me"  # same URL again after the outage

    patch_hub_client(monkeypatch, unused_url(), tmp_path / "elsewhere")
    with pytest.raises(httpx2.ConnectError):
        HfApi().whoami(token=fake_hub.token)


def test_seed_and_injected_failure(fake_hub: FakeHub) -> None:
    fake_hub.seed("org/base", {"config.json": b"{}", "model.bin": b"\0\1\2"}, private=True)
    assert fake_hub.lfs_paths("org/base") == {"model.bin"}
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("org/base", token=fake_hub.token)  # private, and not ours
    fake_hub.seed("me/pub", {"x.txt": b"x"})
    fake_hub.fail_next("/api/models/me/pub", status=403)
    with pytest.raises(HfHubHTTPError) as err:
        HfApi().model_info("me/pub")
    assert err.value.response.status_code == 403
    assert HfApi().model_info("me/pub").sha == fake_hub.repos["me/pub"].refs["main"]
    assert not fake_hub.errors

"""A small fake Hugging Face Hub for tests: a standard-library HTTP server on 127.0.0.1 that speaks enough
of the Hub's protocol for the *real* `huggingface_hub` client (2.x, httpx2-based) to create repos, upload
(preupload -> LFS batch "basic" -> PUT -> verify -> NDJSON commit), open pull requests and download
(model_info -> tree -> resolve HEAD/GET) against it.

Use it through the `fake_hub` fixture; importing it is the whole set-up (pytest finds it by name)::

    from hub_server import fake_hub_fixture  # noqa: F401

    def test_push(fake_hub):
        HfApi().create_repo("me/x", token=fake_hub.token)
        ...
        assert fake_hub.files("me/x")["config.json"] == b"..."

(`hub_server`, not `tests.hub_server`: tests/ has no __init__.py, so pytest's default "prepend" import mode
puts tests/ itself on sys.path (for tests/conftest.py), not the repo root; `tests.` only resolves under
`python -m pytest`. The fixture object is also exported as `fake_hub`, but importing that name makes ruff
report F811 on every test that takes a `fake_hub` argument.)

or standalone (`with FakeHub() as hub: patch_hub_client(monkeypatch, hub.url, tmp_path)`).

Routes (method, path; `{rev}` is URL-quoted with `safe=""`, so `refs%2Fpr%2F1`)::

    GET    /api/whoami-v2
    POST   /api/repos/create                        {"name", "organization", "visibility"|"private", "type"}
    DELETE /api/repos/delete
    POST   /api/validate-yaml
    GET    /api/models/{ns}/{name}[/revision/{rev}]  model_info (siblings, sha; ?blobs=true adds sizes/lfs)
    GET    /api/models/{ns}/{name}/tree/{rev}[/{path}]  ?recursive=true&expand=
    POST   /api/models/{ns}/{name}/paths-info/{rev}
    GET    /api/models/{ns}/{name}/refs
    POST   /api/models/{ns}/{name}/preupload/{rev}  ?create_pr=1
    POST   /api/models/{ns}/{name}/commit/{rev}     ?create_pr=1   (application/x-ndjson)
    POST   /api/models/{ns}/{name}/branch/{branch}  DELETE too
    PUT    /api/models/{ns}/{name}/settings
    POST   /{ns}/{name}.git/info/lfs/objects/batch
    POST   /{ns}/{name}.git/info/lfs/objects/verify
    PUT    /__fake_lfs__/upload/{upload_id}          (LFS "basic" upload target, no auth, like a signed URL)
    HEAD   /{ns}/{name}/resolve/{rev}/{path}        GET too (Range: bytes=N- supported)

Anything else is answered 404 (and recorded). Xet is never offered: the server sends no `X-Xet-*` header,
no `xet-auth` link and no `xetHash`, and answers the LFS batch with `"transfer": "basic"`. Note that in
huggingface_hub 2.x the *upload* route (xet or LFS) is chosen client-side only, from `is_xet_available()`
(`hf_xet` installed and `constants.HF_HUB_DISABLE_XET` false), so `patch_hub_client` sets that constant.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import itertools
import json
import re
import secrets
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

TOKEN = "hf_FAKEtok3n_do_not_leak_0123456789"
USER = "me"
HOST = "127.0.0.1"
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub stores any file of 10 MB or more in LFS
LFS_UPLOAD_PREFIX = "/__fake_lfs__/upload/"

# The patterns of the .gitattributes the Hub writes in the first commit of a new model repo (abridged).
DEFAULT_LFS_PATTERNS = (
    "*.7z",
    "*.arrow",
    "*.bin",
    "*.bz2",
    "*.ckpt",
    "*.ftz",
    "*.gz",
    "*.h5",
    "*.joblib",
    "*.lfs.*",
    "*.mlmodel",
    "*.model",
    "*.msgpack",
    "*.npy",
    "*.npz",
    "*.onnx",
    "*.ot",
    "*.parquet",
    "*.pb",
    "*.pickle",
    "*.pkl",
    "*.pt",
    "*.pth",
    "*.rar",
    "*.safetensors",
    "saved_model/**/*",
    "*.tar.*",
    "*.tar",
    "*.tflite",
    "*.tgz",
    "*.wasm",
    "*.xz",
    "*.zip",
    "*.zst",
    "*tfevents*",
)
DEFAULT_GITATTRIBUTES = "".join(
    f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in DEFAULT_LFS_PATTERNS
).encode()

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_OID_RE = re.compile(r"^[0-9a-f]{64}$")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what `git hash-object` prints), the Hub's ETag of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def unused_url() -> str:
    """The URL of a local port nothing listens on: point the client at it to simulate "network down"
    (requests fail with `httpx2.ConnectError`, which huggingface_hub treats as no connection)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    return f"http://{HOST}:{port}"


# --------------------------------------------------------------------------------------------- data model


@dataclass
class StoredFile:
    content: bytes
    lfs: bool

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def pointer(self) -> bytes:
        return lfs_pointer(self.sha256, self.size)

    @property
    def git_oid(self) -> str:
        """The blob id in the git tree: of the content, or of the LFS pointer for LFS files."""
        return git_blob_sha1(self.pointer if self.lfs else self.content)

    @property
    def etag(self) -> str:
        """What the Hub sends as (X-Linked-)ETag and preupload `oid`: sha256 for LFS files, else git sha1."""
        return self.sha256 if self.lfs else git_blob_sha1(self.content)


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    description: str
    author: str
    date: str
    files: dict[str, StoredFile]


@dataclass
class PullRequest:
    num: int
    ref: str  # "refs/pr/<num>"
    title: str
    base: str  # the revision the PR was opened against
    author: str
    url: str
    status: str = "open"


@dataclass
class Repo:
    repo_id: str
    owner: str
    private: bool
    created_at: str
    repo_type: str = "model"
    refs: dict[str, str] = field(default_factory=dict)  # "main", "dev", "refs/pr/1" -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)  # commit oids, in creation order
    prs: list[PullRequest] = field(default_factory=list)

    @property
    def commit_messages(self) -> list[str]:
        """The titles of all commits, oldest first (the first is the Hub's "initial commit")."""
        return [self.commits[oid].title for oid in self.log]

    def resolve(self, revision: str) -> str | None:
        """Commit oid of a ref name or (prefix of a) commit oid; None if unknown."""
        if revision in self.refs:
            return self.refs[revision]
        if revision.startswith("refs/heads/") and revision[11:] in self.refs:
            return self.refs[revision[11:]]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            hits = [oid for oid in self.commits if oid.startswith(revision)]
            if len(hits) == 1:
                return hits[0]
        return None

    def head(self, revision: str = "main") -> Commit:
        oid = self.resolve(revision)
        if oid is None:
            raise KeyError(f"{self.repo_id}: unknown revision {revision!r}")
        return self.commits[oid]

    def files(self, revision: str = "main") -> dict[str, bytes]:
        return {p: f.content for p, f in self.head(revision).files.items()}

    def lfs_paths(self, revision: str = "main") -> set[str]:
        return {p for p, f in self.head(revision).files.items() if f.lfs}


@dataclass
class RecordedRequest:
    method: str
    path: str  # raw (still percent-encoded) path, without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes  # de-chunked if it came with Transfer-Encoding: chunked
    target: str = ""  # the request target as sent: path and query string
    status: int | None = None  # the status the server answered
    response_body: bytes = b""

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        return json.loads(self.body)

    def ndjson(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]

    def response_json(self) -> Any:
        return json.loads(self.response_body)


@dataclass
class _Token:
    user: str
    role: str  # "write" or "read"


@dataclass
class _Failure:
    path_contains: str
    method: str | None
    status: int
    message: str
    times: int


class _HttpError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}
        self.body = body


def _repo_not_found(user: str | None) -> _HttpError:
    # The Hub answers 401 to anonymous callers and 404 to logged-in ones, both with X-Error-Code RepoNotFound
    # (which huggingface_hub maps to RepositoryNotFoundError).
    return _HttpError(401 if user is None else 404, "Repository not found", code="RepoNotFound")


def _revision_not_found(revision: str) -> _HttpError:
    return _HttpError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")


@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def _json(data: Any, status: int = 200, content_type: str = "application/json") -> _Response:
    return _Response(status, json.dumps(data).encode(), content_type=content_type)


# --------------------------------------------------------------------------------------------- the server


class FakeHub:
    """The fake Hub. State (repos, LFS objects, recorded requests) lives here and survives stop()/start()."""

    def __init__(
        self,
        token: str = TOKEN,
        user: str = USER,
        *,
        orgs: tuple[str, ...] = (),
        read_tokens: dict[str, str] | None = None,
    ) -> None:
        self.token = token
        self.user = user
        self.orgs = tuple(orgs)
        self.tokens: dict[str, _Token] = {token: _Token(user, "write")}
        for tok, name in (read_tokens or {}).items():
            self.tokens[tok] = _Token(name, "read")
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content
        self.lfs_uploads: list[str] = []  # sha256 of every object PUT to the LFS upload target
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []  # tracebacks of bugs in this server (answered with status 599)
        self._pending_uploads: dict[str, tuple[str, int]] = {}  # upload id -> (sha256, size)
        self._failures: list[_Failure] = []
        self._lock = threading.RLock()
        self._counter = itertools.count(1)
        self._port = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()

    # -- lifecycle

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("FakeHub not started")
        return f"http://{HOST}:{self._port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> FakeHub:
        """Start serving (again): after stop() it rebinds the same port, so patched endpoints still work."""
        if self._httpd is not None:
            return self
        httpd = _Server((HOST, self._port), _Handler)
        httpd.hub = self
        self._port = httpd.server_address[1]
        self._httpd = httpd
        serve = {"poll_interval": 0.05}  # so that stop() returns quickly
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs=serve, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open keep-alive connections: the client then gets connection errors,
        as with the network down. Also drops huggingface_hub's pooled connections."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            with self._lock:
                conns = list(self._conns)
            for conn in conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            httpd.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
        _close_hf_session()

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """`with hub.down(): ...` simulates a network outage, then serves again on the same URL."""
        self.stop()
        try:
            yield
        finally:
            self.start()
            _close_hf_session()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection and set-up helpers for tests

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """path -> bytes of the repo at a branch, PR ref (`refs/pr/1`) or commit oid."""
        with self._lock:
            return self.repos[repo_id].files(revision)

    def lfs_paths(self, repo_id: str, revision: str = "main") -> set[str]:
        with self._lock:
            return self.repos[repo_id].lfs_paths(revision)

    def find(self, method: str | None = None, path_contains: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method)
                and (path_contains is None or path_contains in r.path)
            ]

    def fail_next(
        self,
        path_contains: str,
        status: int = 503,
        *,
        times: int = 1,
        method: str | None = None,
        message: str = "",
    ) -> None:
        """Answer the next `times` requests whose path contains `path_contains` with `status`.
        (Beware: huggingface_hub retries 5xx/429 on most endpoints with backoff, 1+2+4+8+8 s.)"""
        with self._lock:
            self._failures.append(
                _Failure(path_contains, method, status, message or f"Injected {status}", times)
            )

    def add_token(self, token: str, user: str, role: str = "write") -> None:
        with self._lock:
            self.tokens[token] = _Token(user, role)

    def seed(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        private: bool = False,
        owner: str | None = None,
        message: str = "seed",
        lfs: set[str] | None = None,
    ) -> Repo:
        """Create (or add a commit on main of) a repo without going through the client."""
        with self._lock:
            repo = self.repos.get(repo_id) or self._create_repo(
                repo_id, owner or repo_id.split("/")[0], private
            )
            base = repo.head("main")
            new = dict(base.files)
            for path, content in files.items():
                is_lfs = (
                    self._decide_lfs(base.files, path, content[:512], len(content))
                    if lfs is None
                    else path in lfs
                )
                new[path] = StoredFile(content, is_lfs)
                if is_lfs:
                    self.lfs_objects[hashlib.sha256(content).hexdigest()] = content
            self._add_commit(repo, "main", base.oid, new, message, "", repo.owner)
            return repo

    # -- internals: state

    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(rec)

    def _new_oid(self, *parts: str) -> str:
        seed = f"{next(self._counter)}:{time.time_ns()}:" + ":".join(parts)
        return hashlib.sha1(seed.encode()).hexdigest()

    def _create_repo(self, repo_id: str, owner: str, private: bool) -> Repo:
        repo = Repo(repo_id=repo_id, owner=owner, private=private, created_at=_now())
        self.repos[repo_id] = repo
        gitattributes = {".gitattributes": StoredFile(DEFAULT_GITATTRIBUTES, False)}
        self._add_commit(repo, "main", None, gitattributes, "initial commit", "", owner)
        return repo

    def _add_commit(
        self,
        repo: Repo,
        ref: str,
        parent: str | None,
        files: dict[str, StoredFile],
        title: str,
        description: str,
        author: str,
    ) -> Commit:
        oid = self._new_oid(repo.repo_id, ref, title)
        commit = Commit(oid, parent, title, description, author, _now(), files)
        repo.commits[oid] = commit
        repo.log.append(oid)
        repo.refs[ref] = oid
        return commit

    @staticmethod
    def _decide_lfs(files: dict[str, StoredFile], path: str, sample: bytes, size: int) -> bool:
        """The Hub's rule: LFS for files of 10 MB or more, for binary content (NUL in the first 512 bytes,
        or not UTF-8), and for paths matching a `filter=lfs` pattern of the repo's .gitattributes."""
        if size >= LFS_SIZE_THRESHOLD or b"\0" in sample:
            return True
        try:
            sample.decode("utf-8")
        except UnicodeDecodeError as err:
            if err.start < len(sample) - 4:  # a multi-byte character cut at the end of the sample is fine
                return True
        attrs = files.get(".gitattributes")
        text = (attrs.content if attrs is not None else DEFAULT_GITATTRIBUTES).decode("utf-8", "replace")
        name = path.rsplit("/", 1)[-1]
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and "filter=lfs" in parts[1:]:
                pattern = parts[0]
                if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(path, pattern):
                    return True
        return False

    # -- internals: auth

    def _caller(self, rec: RecordedRequest) -> _Token | None:
        auth = rec.header("authorization")
        if not auth:
            return None
        scheme, _, tok = auth.partition(" ")
        token = self.tokens.get(tok.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            raise _HttpError(401, "Invalid credentials in Authorization header")
        return token

    def _can_write_ns(self, token: _Token, namespace: str) -> bool:
        return token.role == "write" and (
            namespace == token.user or (token.user == self.user and namespace in self.orgs)
        )

    def _readable(self, rec: RecordedRequest, repo_id: str) -> tuple[Repo, _Token | None]:
        token = self._caller(rec)
        repo = self.repos.get(repo_id)
        user = token.user if token else None
        if repo is None or (repo.private and (token is None or not self._can_read_private(token, repo))):
            raise _repo_not_found(user)
        return repo, token

    def _can_read_private(self, token: _Token, repo: Repo) -> bool:
        return repo.owner == token.user or (token.user == self.user and repo.owner in self.orgs)

    def _writable(self, rec: RecordedRequest, repo_id: str, *, pr: bool = False) -> tuple[Repo, _Token]:
        """Write access; with `pr`, any logged-in user who can see the repo may (open and) push to a PR."""
        token = self._caller(rec)
        if token is None:
            raise _HttpError(401, "You must be authenticated to write to a repo (no token sent)")
        repo, _ = self._readable(rec, repo_id)
        if not pr and not self._can_write_ns(token, repo.owner):
            raise _HttpError(403, f"You don't have write access to {repo_id}")
        return repo, token

    # -- internals: routing

    def _dispatch(self, rec: RecordedRequest) -> _Response:
        for failure in self._failures:
            if (
                failure.times > 0
                and failure.path_contains in rec.path
                and failure.method in (None, rec.method)
            ):
                failure.times -= 1
                raise _HttpError(failure.status, failure.message)
        for method, pattern, handler_name in _ROUTES:
            if rec.method != method and not (method == "GET" and rec.method == "HEAD"):
                continue
            match = pattern.match(rec.path)
            if match:
                args = [unquote(g) if g is not None else None for g in match.groups()]
                return getattr(self, handler_name)(rec, *args)
        raise _HttpError(404, "Sorry, we can't find the page you are looking for.")

    # -- handlers: account and repos

    def _h_whoami(self, rec: RecordedRequest) -> _Response:
        token = self._caller(rec)
        if token is None:
            raise _HttpError(401, "Invalid credentials in Authorization header")
        orgs = [{"type": "org", "name": o, "fullname": o, "roleInOrg": "admin"} for o in self.orgs]
        return _json(
            {
                "type": "user",
                "id": hashlib.md5(token.user.encode()).hexdigest()[:24],
                "name": token.user,
                "fullname": token.user,
                "email": f"{token.user}@example.invalid",
                "emailVerified": True,
                "canPay": False,
                "isPro": False,
                "periodEnd": None,
                "avatarUrl": "",
                "orgs": orgs if token.user == self.user else [],
                "auth": {
                    "type": "access_token",
                    "accessToken": {"displayName": "fake-hub", "role": token.role, "createdAt": _now()},
                },
            }
        )

    def _h_create_repo(self, rec: RecordedRequest) -> _Response:
        token = self._caller(rec)
        if token is None:
            raise _HttpError(401, "You must be authenticated to create a repo (no token sent)")
        payload = rec.json()
        name = payload.get("name") or ""
        namespace = payload.get("organization") or token.user
        repo_type = payload.get("type") or "model"
        if repo_type != "model":
            raise _HttpError(400, f"The fake hub only hosts model repos, not {repo_type!r}")
        if not self._can_write_ns(token, namespace):
            raise _HttpError(
                403, f'You don\'t have the rights to create a model under the namespace "{namespace}"'
            )
        if not _NAME_RE.match(name) or name.endswith(".git") or ".." in name:
            raise _HttpError(400, f"Invalid repo name: {name!r}")
        repo_id = f"{namespace}/{name}"
        url = f"{self.url}/{repo_id}"
        if repo_id in self.repos:
            raise _HttpError(409, "You already created this model repo", body={"url": url})
        visibility = payload.get("visibility")
        private = visibility == "private" if visibility is not None else bool(payload.get("private", False))
        self._create_repo(repo_id, namespace, private)
        return _json({"url": url, "name": repo_id, "id": hashlib.md5(repo_id.encode()).hexdigest()[:24]})

    def _h_delete_repo(self, rec: RecordedRequest) -> _Response:
        payload = rec.json()
        token = self._caller(rec)
        namespace = payload.get("organization") or (token.user if token else "")
        repo_id = f"{namespace}/{payload.get('name')}"
        self._writable(rec, repo_id)
        del self.repos[repo_id]
        return _json({})

    def _h_settings(self, rec: RecordedRequest, ns: str, name: str) -> _Response:
        repo, _ = self._writable(rec, f"{ns}/{name}")
        payload = rec.json()
        if "visibility" in payload:
            repo.private = payload["visibility"] == "private"
        elif "private" in payload:
            repo.private = bool(payload["private"])
        return _json({})

    def _h_validate_yaml(self, rec: RecordedRequest) -> _Response:
        return _json({"errors": [], "warnings": []})

    # -- handlers: read

    def _tree_entry(self, path: str, f: StoredFile, commit: Commit | None = None) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": f.git_oid, "size": f.size, "path": path}
        if f.lfs:
            entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(f.pointer)}
        if commit is not None:
            entry["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
        return entry

    def _dir_entry(self, path: str, commit: Commit, expand: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "type": "directory",
            "oid": hashlib.sha1(f"{commit.oid}:{path}".encode()).hexdigest(),
            "size": 0,
            "path": path,
        }
        if expand:
            entry["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
        return entry

    def _h_model_info(
        self, rec: RecordedRequest, ns: str, name: str, revision: str | None = None
    ) -> _Response:
        repo, _ = self._readable(rec, f"{ns}/{name}")
        revision = revision or "main"
        oid = repo.resolve(revision)
        if oid is None:
            raise _revision_not_found(revision)
        commit = repo.commits[oid]
        blobs = rec.query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path, f in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=f.size, blobId=f.git_oid)
                if f.lfs:
                    sibling["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": len(f.pointer)}
            siblings.append(sibling)
        return _json(
            {
                "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "author": repo.owner,
                "sha": oid,
                "lastModified": commit.date,
                "createdAt": repo.created_at,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
                "spaces": [],
                "usedStorage": sum(f.size for f in commit.files.values()),
            }
        )

    def _h_tree(self, rec: RecordedRequest, ns: str, name: str, revision: str, path: str | None) -> _Response:
        repo, _ = self._readable(rec, f"{ns}/{name}")
        oid = repo.resolve(revision)
        if oid is None:
            raise _revision_not_found(revision)
        commit = repo.commits[oid]
        recursive = rec.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        expand = rec.query.get("expand", ["false"])[0].lower() in ("1", "true")
        base = (path or "").strip("/")
        prefix = f"{base}/" if base else ""
        under = {p: f for p, f in commit.files.items() if p.startswith(prefix)}
        if base and not under:
            raise _HttpError(404, f"{base} does not exist on {revision}", code="EntryNotFound")
        entries: dict[str, dict[str, Any]] = {}
        for p, f in under.items():
            rel = p[len(prefix) :].split("/")
            for depth in range(1, len(rel)):  # parent directories of the file, below `base`
                if depth > 1 and not recursive:
                    break
                d = prefix + "/".join(rel[:depth])
                entries.setdefault(d, self._dir_entry(d, commit, expand))
            if recursive or len(rel) == 1:
                entries[p] = self._tree_entry(p, f, commit if expand else None)
        ordered = sorted(entries.values(), key=lambda e: (e["type"] != "directory", e["path"]))
        return _json(ordered)

    def _h_paths_info(self, rec: RecordedRequest, ns: str, name: str, revision: str) -> _Response:
        repo, _ = self._readable(rec, f"{ns}/{name}")
        oid = repo.resolve(revision)
        if oid is None:
            raise _revision_not_found(revision)
        commit = repo.commits[oid]
        if "json" in (rec.header("content-type") or ""):
            form = rec.json()
            paths, expand = list(form.get("paths", [])), bool(form.get("expand"))
        else:
            form = parse_qs(rec.body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), form.get("expand", ["False"])[0].lower() == "true"
        out = []
        for p in paths:
            p = p.strip("/")
            if p in commit.files:
                out.append(self._tree_entry(p, commit.files[p], commit if expand else None))
            elif any(q.startswith(p + "/") for q in commit.files):
                out.append(self._dir_entry(p, commit, expand))
        return _json(out)

    def _h_refs(self, rec: RecordedRequest, ns: str, name: str) -> _Response:
        repo, _ = self._readable(rec, f"{ns}/{name}")
        with_prs = rec.query.get("include_prs", ["0"])[0] in ("1", "true", "True")
        branches = [
            {"name": n, "ref": f"refs/heads/{n}", "targetCommit": o}
            for n, o in repo.refs.items()
            if not n.startswith("refs/")
        ]
        prs = [
            {"name": n, "ref": n, "targetCommit": o} for n, o in repo.refs.items() if n.startswith("refs/pr/")
        ]
        return _json(
            {"branches": branches, "converts": [], "tags": [], "pullRequests": prs if with_prs else []}
        )

    def _h_resolve(self, rec: RecordedRequest, ns: str, name: str, revision: str, path: str) -> _Response:
        repo, _ = self._readable(rec, f"{ns}/{name}")
        oid = repo.resolve(revision)
        if oid is None:
            raise _revision_not_found(revision)
        f = repo.commits[oid].files.get(path)
        if f is None:
            raise _HttpError(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": oid})
        headers = {"X-Repo-Commit": oid, "ETag": f'"{f.etag}"', "Accept-Ranges": "bytes"}
        if f.lfs:
            headers.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)})
        content, status = f.content, 200
        byte_range = rec.header("range")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", byte_range or "")
        if m:
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else f.size - 1
            if start >= f.size:
                raise _HttpError(416, "Range Not Satisfiable", headers={"Content-Range": f"bytes */{f.size}"})
            content, status = f.content[start : end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{min(end, f.size - 1)}/{f.size}"
        return _Response(status, content, headers, content_type="application/octet-stream")

    # -- handlers: write

    def _h_preupload(self, rec: RecordedRequest, ns: str, name: str, revision: str) -> _Response:
        create_pr = rec.query.get("create_pr", ["0"])[0] == "1"
        repo, _ = self._writable(rec, f"{ns}/{name}", pr=create_pr)
        oid = repo.resolve(revision)
        if oid is None:
            raise _revision_not_found(revision)
        current = repo.commits[oid].files
        out = []
        for item in rec.json().get("files", []):
            path, size = item["path"], int(item["size"])
            sample = base64.b64decode(item.get("sample", ""))
            is_lfs = self._decide_lfs(current, path, sample, size)
            entry: dict[str, Any] = {
                "path": path,
                "uploadMode": "lfs" if is_lfs else "regular",
                "shouldIgnore": False,
            }
            if path in current:
                entry["oid"] = current[path].etag
            out.append(entry)
        return _json({"files": out, "commitOid": oid})

    def _h_lfs_batch(self, rec: RecordedRequest, ns: str, name: str) -> _Response:
        repo_id = f"{ns}/{name}"
        payload = rec.json()
        ref = (payload.get("ref") or {}).get("name")
        # Without a ref (create_pr=True), anyone logged in who can see the repo may upload objects for a PR.
        repo, _ = self._writable(rec, repo_id, pr=ref is None or ref.startswith("refs/pr/"))
        if payload.get("operation") != "upload":
            raise _HttpError(400, "The fake hub's LFS batch endpoint only supports operation=upload")
        if "basic" not in (payload.get("transfers") or ["basic"]):
            raise _HttpError(400, f"No supported transfer among {payload.get('transfers')}")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj.get("oid"), obj.get("size")
            if not (isinstance(oid, str) and _OID_RE.match(oid) and isinstance(size, int)):
                objects.append(
                    {"oid": str(oid), "size": int(size or 0), "error": {"code": 422, "message": "bad"}}
                )
                continue
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in self.lfs_objects:
                upload_id = secrets.token_hex(16)
                self._pending_uploads[upload_id] = (oid, size)
                entry["actions"] = {
                    "upload": {"href": f"{self.url}{LFS_UPLOAD_PREFIX}{upload_id}", "expires_in": 3600},
                    "verify": {"href": f"{self.url}/{repo.repo_id}.git/info/lfs/objects/verify"},
                }
            objects.append(entry)
        return _json(
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
            content_type="application/vnd.git-lfs+json",
        )

    def _h_lfs_put(self, rec: RecordedRequest, upload_id: str) -> _Response:
        pending = self._pending_uploads.get(upload_id)
        if pending is None:
            raise _HttpError(404, "Unknown or expired upload URL")
        oid, size = pending
        if len(rec.body) != size or hashlib.sha256(rec.body).hexdigest() != oid:
            raise _HttpError(400, f"Uploaded content does not match oid {oid} / size {size}")
        del self._pending_uploads[upload_id]
        self.lfs_objects[oid] = rec.body
        self.lfs_uploads.append(oid)
        return _Response(
            200, b"", {"ETag": f'"{hashlib.md5(rec.body).hexdigest()}"'}, content_type="text/plain"
        )

    def _h_lfs_verify(self, rec: RecordedRequest, ns: str, name: str) -> _Response:
        self._writable(rec, f"{ns}/{name}", pr=True)
        payload = rec.json()
        content = self.lfs_objects.get(payload.get("oid", ""))
        if content is None or len(content) != payload.get("size"):
            raise _HttpError(404, "Object not found", body={"message": "Object not found"})
        return _json({"success": True}, content_type="application/vnd.git-lfs+json")

    def _h_commit(self, rec: RecordedRequest, ns: str, name: str, revision: str) -> _Response:
        repo_id = f"{ns}/{name}"
        create_pr = rec.query.get("create_pr", ["0"])[0] == "1"
        repo, token = self._writable(rec, repo_id, pr=create_pr or revision.startswith("refs/pr/"))
        if revision not in repo.refs:
            raise _revision_not_found(revision)
        base = repo.commits[repo.refs[revision]]
        if "ndjson" not in (rec.header("content-type") or ""):
            raise _HttpError(400, "The fake hub only accepts application/x-ndjson commits")
        lines = rec.ndjson()
        if not lines or lines[0].get("key") != "header":
            raise _HttpError(400, "The first line of a commit must be its header")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and parent != base.oid:
            raise _HttpError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(base.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = value.get("path", "")
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise _HttpError(400, f"Unsupported encoding {value.get('encoding')!r} for {path}")
                files[path] = StoredFile(base64.b64decode(value["content"]), False)
            elif key == "lfsFile":
                content = self.lfs_objects.get(value.get("oid", ""))
                if content is None:
                    raise _HttpError(400, f"LFS object {value.get('oid')} of {path} was never uploaded")
                files[path] = StoredFile(content, True)
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise _HttpError(404, "A file with this name doesn't exist", code="EntryNotFound")
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                doomed = [p for p in files if p.startswith(prefix)]
                if not doomed:
                    raise _HttpError(404, "A folder with this name doesn't exist", code="EntryNotFound")
                for p in doomed:
                    del files[p]
            else:
                raise _HttpError(400, f"Unknown commit operation {key!r}")
        title, description = header.get("summary") or "", header.get("description") or ""
        out: dict[str, Any] = {"success": True, "hookOutput": ""}
        if create_pr:
            num = len(repo.prs) + 1
            ref = f"refs/pr/{num}"
            commit = self._add_commit(repo, ref, base.oid, files, title, description, token.user)
            pr_url = f"{self.url}/{repo_id}/discussions/{num}"
            repo.prs.append(PullRequest(num, ref, title, revision, token.user, pr_url))
            out["pullRequestUrl"] = pr_url
        else:
            commit = self._add_commit(repo, revision, base.oid, files, title, description, token.user)
        out.update(commitOid=commit.oid, commitUrl=f"{self.url}/{repo_id}/commit/{commit.oid}")
        return _json(out)

    def _h_branch(self, rec: RecordedRequest, ns: str, name: str, branch: str) -> _Response:
        repo, _ = self._writable(rec, f"{ns}/{name}")
        if rec.method == "DELETE":
            if branch == "main" or branch not in repo.refs:
                raise _revision_not_found(branch)
            del repo.refs[branch]
            return _json({})
        if branch in repo.refs:
            raise _HttpError(409, "Reference already exists")
        start = (rec.json() if rec.body else {}).get("startingPoint") or "main"
        oid = repo.resolve(start)
        if oid is None:
            raise _revision_not_found(start)
        repo.refs[branch] = oid
        return _json({})


_S = r"([^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(p), h)
    for m, p, h in [
        ("GET", r"^/api/whoami-v2$", "_h_whoami"),
        ("POST", r"^/api/repos/create$", "_h_create_repo"),
        ("DELETE", r"^/api/repos/delete$", "_h_delete_repo"),
        ("POST", r"^/api/validate-yaml$", "_h_validate_yaml"),
        ("GET", rf"^/api/models/{_S}/{_S}$", "_h_model_info"),
        ("GET", rf"^/api/models/{_S}/{_S}/revision/(.+)$", "_h_model_info"),
        ("GET", rf"^/api/models/{_S}/{_S}/tree/{_S}(?:/(.*))?$", "_h_tree"),
        ("POST", rf"^/api/models/{_S}/{_S}/paths-info/{_S}$", "_h_paths_info"),
        ("GET", rf"^/api/models/{_S}/{_S}/refs$", "_h_refs"),
        ("POST", rf"^/api/models/{_S}/{_S}/preupload/{_S}$", "_h_preupload"),
        ("POST", rf"^/api/models/{_S}/{_S}/commit/{_S}$", "_h_commit"),
        ("POST", rf"^/api/models/{_S}/{_S}/branch/{_S}$", "_h_branch"),
        ("DELETE", rf"^/api/models/{_S}/{_S}/branch/{_S}$", "_h_branch"),
        ("PUT", rf"^/api/models/{_S}/{_S}/settings$", "_h_settings"),
        ("POST", rf"^/{_S}/{_S}\.git/info/lfs/objects/batch$", "_h_lfs_batch"),
        ("POST", rf"^/{_S}/{_S}\.git/info/lfs/objects/verify$", "_h_lfs_verify"),
        ("PUT", rf"^{LFS_UPLOAD_PREFIX}([0-9a-f]+)$", "_h_lfs_put"),
        ("GET", rf"^/{_S}/{_S}/resolve/{_S}/(.+)$", "_h_resolve"),
    ]
]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # keep-alive handler threads must not block stop()
    allow_reuse_address = True  # rebind the same port after stop()
    hub: FakeHub

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can hang without a network.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = HOST, self.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the Hub (every response carries a Content-Length)
    server_version = "FakeHub/1.0"
    timeout = 60  # idle keep-alive connections end after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.hub._lock:
            self.server.hub._conns.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.hub._lock:
            self.server.hub._conns.discard(self.connection)

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # connections cut by stop() or by the client
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        hub = self.server.hub
        split = urlsplit(self.path)
        rec = RecordedRequest(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self._read_body(),
            target=self.path,
        )
        hub._record(rec)
        try:
            with hub._lock:
                resp = hub._dispatch(rec)
        except _HttpError as err:
            body = {"error": err.message, **(err.body or {})}
            resp = _json(body, err.status)
            resp.headers.update(err.headers)
            resp.headers["X-Error-Message"] = err.message
            if err.code:
                resp.headers["X-Error-Code"] = err.code
        except Exception:
            tb = traceback.format_exc()
            hub.errors.append(tb)
            # 599, not 500: huggingface_hub retries 5xx with long backoffs; a bug here should fail fast.
            resp = _json({"error": f"fake hub bug:\n{tb}"}, 599)
        rec.status, rec.response_body = resp.status, resp.body
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        for name, value in resp.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve


# ------------------------------------------------------------------------------------- client patching


def _close_hf_session() -> None:
    mod = sys.modules.get("huggingface_hub.utils._http")
    if mod is not None:
        mod.close_session()


def patch_hub_client(monkeypatch: pytest.MonkeyPatch, url: str, hf_home: str | Path) -> None:
    """Point huggingface_hub (already imported or not) at `url`, with its home, caches and token file under
    `hf_home`, telemetry and xet off, offline mode off and no token from the environment. Everything is
    undone by `monkeypatch`."""
    import huggingface_hub
    from huggingface_hub import constants, hf_api
    from huggingface_hub.utils import _http

    home = Path(hf_home)
    hub_cache, assets, xet = home / "hub", home / "assets", home / "xet"
    for d in (hub_cache, assets, xet):
        d.mkdir(parents=True, exist_ok=True)

    env = {
        "HF_ENDPOINT": url,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(hub_cache),
        "HF_ASSETS_CACHE": str(assets),
        "HF_XET_CACHE": str(xet),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_OFFLINE": "0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in (
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_OIDC_RESOURCE",
        "HF_OIDC_ID_TOKEN",
        "TRANSFORMERS_OFFLINE",
    ):
        monkeypatch.delenv(name, raising=False)

    # Module-level copies made at import time.
    values = {
        "ENDPOINT": url,
        "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {HOST},
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(hub_cache),
        "HUGGINGFACE_HUB_CACHE": str(hub_cache),
        "HF_ASSETS_CACHE": str(assets),
        "HUGGINGFACE_ASSETS_CACHE": str(assets),
        "HF_XET_CACHE": str(xet),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_XET": True,
    }
    for name, value in values.items():
        monkeypatch.setattr(constants, name, value, raising=False)
    monkeypatch.setattr(_http, "_HUB_ORIGINS", _http._HUB_ORIGINS | {_http._url_origin(url)})
    monkeypatch.setattr(hf_api.api, "endpoint", url)  # the HfApi behind huggingface_hub.create_repo & co.
    if "HUGGINGFACE_CO_URL_TEMPLATE" in vars(huggingface_hub):  # lazily exported copy, once accessed
        monkeypatch.setattr(
            huggingface_hub, "HUGGINGFACE_CO_URL_TEMPLATE", values["HUGGINGFACE_CO_URL_TEMPLATE"]
        )
    copies = {
        "huggingface_hub.utils._git_credential": {"ENDPOINT": url},
        "huggingface_hub.cli.auth": {"ENDPOINT": url},
        "huggingface_hub.utils._cache_manager": {"HF_HUB_CACHE": str(hub_cache)},
        "huggingface_hub.utils._cache_assets": {"HF_ASSETS_CACHE": str(assets)},
        "datasets.config": {
            "HF_ENDPOINT": url,
            "HUB_DATASETS_URL": url + "/datasets/{repo_id}/resolve/{revision}/{path}",
        },
    }
    for module_name, attrs in copies.items():
        module = sys.modules.get(module_name)
        if module is not None:
            for name, value in attrs.items():
                if hasattr(module, name):
                    monkeypatch.setattr(module, name, value)
    _close_hf_session()  # no pooled connection to anything else


@pytest.fixture(name="fake_hub")
def fake_hub_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """A running FakeHub (token `TOKEN`, user "me") with huggingface_hub pointed at it and its home in
    tmp_path/"hf_home". Yields the server: `.url`, `.token`, `.user`, `.requests`, `.files(...)`, `.repos`."""
    hub = FakeHub(token=TOKEN, user=USER).start()
    try:
        patch_hub_client(monkeypatch, hub.url, tmp_path / "hf_home")
        yield hub
    finally:
        hub.stop()


# The same fixture object under the name pytest knows it by (importing this one makes ruff report F811 on
# each test that takes a `fake_hub` argument; import `fake_hub_fixture` to avoid that).
fake_hub = fake_hub_fixture

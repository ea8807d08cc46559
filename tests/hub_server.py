"""A loopback fake of the Hugging Face Hub, just large enough for `huggingface_hub`'s upload and download paths.

The server speaks the HTTP API that the installed `huggingface_hub` client (2.x) calls for:

- `GET  /api/whoami-v2`                                    who the bearer token belongs to
- `POST /api/repos/create`                                 create a model repo (409 when it exists)
- `POST /api/validate-yaml`                                README metadata check made by `upload_folder`
- `GET  /api/agent-harnesses`                              registry read by the client's agent detection (empty)
- `GET  /api/models/{repo}` and `/api/models/{repo}/revision/{rev}`   `model_info` / `repo_info` (sha, siblings)
- `GET  /api/models/{repo}/tree/{rev}[/{path}]`            `list_repo_tree`, used by `snapshot_download`
- `GET  /api/models/{repo}/refs`, `/api/models/{repo}/commits/{rev}`  `list_repo_refs` / `list_repo_commits`
- `POST /api/models/{repo}/preupload/{rev}`                answers `uploadMode: "regular"` for every file, so the
                                                           client inlines the content in the commit and never
                                                           takes its Xet or LFS paths
- `POST /api/models/{repo}/commit/{rev}`                   NDJSON: a `header` line, then `file` (base64),
                                                           `deletedFile` and `deletedFolder` lines
- `POST /api/models/{repo}/branch/{branch}`                `create_branch` (409 when it exists)
- `POST /api/models/{repo}/discussions`, `GET .../discussions/{num}`  pull requests (`create_pr=True`)
- `HEAD|GET /{repo}/resolve/{rev}/{path}`                  file metadata and content, with `X-Repo-Commit`,
                                                           `ETag` (the git blob sha1) and `Content-Length`

Revisions are branch names, `refs/pr/N` and 40-hex commit shas. Errors carry the `X-Error-Code` header that
`huggingface_hub.utils.hf_raise_for_status` turns into `RepositoryNotFoundError`, `RevisionNotFoundError` or
`RemoteEntryNotFoundError`. Blobs are stored under a temporary directory; repo metadata lives in memory.

The server binds to 127.0.0.1 on an ephemeral port only. `FakeHub.fail(...)` injects HTTP errors on chosen
routes, for tests of failure handling. Request lines are logged at DEBUG level; headers (and so tokens) never are.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

logger = logging.getLogger(__name__)

DEFAULT_USER = "test-user"
DEFAULT_ORGS = ("org",)
_SHA_RE = re.compile(r"[0-9a-f]{40}")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob, as the Hub reports it for regular (non-LFS) files."""
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Blob:
    """A stored file version: its git oid, sha256 and size. The bytes live on disk under `<root>/blobs/`."""

    oid: str
    sha256: str
    size: int


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    date: str
    files: dict[str, Blob]


@dataclass
class Discussion:
    num: int
    title: str
    description: str
    is_pull_request: bool
    created_at: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # "main", "dev", "refs/pr/1" -> commit oid
    discussions: list[Discussion] = field(default_factory=list)


class HubHTTPError(Exception):
    """Raised inside a handler to answer with an error status, Hub-style headers and a JSON body."""

    def __init__(self, status: int, message: str, error_code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = headers or {}


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern
    status: int
    remaining: int


class FakeHub:
    """An in-process fake Hub server. Use as a context manager, or call `start()` and `stop()`.

    Args:
        root: Folder for the stored blobs (a fresh temporary folder when omitted, removed by `stop()`).
        token: When set, the only accepted bearer token: writes need it, and a wrong token gets 401. Reads of
            public repos work without a token, as on the Hub.
        user: The user name `whoami` reports and the default namespace of `create_repo`.
    """

    def __init__(self, root: str | Path | None = None, *, token: str | None = None, user: str = DEFAULT_USER):
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="fake-hub-")
        self.root = Path(root) if root is not None else Path(self._tmp.name)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.token = token
        self.user = user
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, in order
        self.unhandled: list[tuple[str, str]] = []  # requests no route matched (answered 404)
        self._failures: list[_Failure] = []
        self._lock = threading.RLock()
        self._commit_counter = 0
        self._server: ThreadingHTTPServer | None = None
        self._address: tuple[str, int] | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        if self._address is None:
            raise RuntimeError("the fake Hub was never started")
        host, port = self._address
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake_hub = hub

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._address = server.server_address[:2]
        self._thread = threading.Thread(target=server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        logger.debug("fake Hub listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection (clients then get connection errors)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for conn in list(self._connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._connections.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None
        # `url` still names the (now closed) address, so a client pointed at it gets "connection refused".
        self._server = None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ test helpers

    def fail(self, method: str, path_regex: str, status: int = 500, times: int = 1) -> None:
        """Answer the next `times` requests whose method and path match with HTTP `status`."""
        with self._lock:
            self._failures.append(_Failure(method.upper(), re.compile(path_regex), status, times))

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def file_bytes(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        """The content of `path` at `revision`, read straight from the store (for assertions)."""
        with self._lock:
            repo = self.repos[repo_id]
            blob = repo.commits[self._resolve(repo, revision)].files[path]
        return self._blob_path(blob).read_bytes()

    def head(self, repo_id: str, revision: str = "main") -> str:
        with self._lock:
            return self._resolve(self.repos[repo_id], revision)

    # ------------------------------------------------------------------ store

    def _blob_path(self, blob: Blob) -> Path:
        return self.root / "blobs" / blob.sha256

    def _store_blob(self, data: bytes) -> Blob:
        blob = Blob(oid=git_blob_sha1(data), sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        path = self._blob_path(blob)
        if not path.exists():
            tmp = path.with_suffix(".incomplete")
            tmp.write_bytes(data)
            tmp.replace(path)
        return blob

    def _new_commit(self, repo: Repo, parent: str | None, files: dict[str, Blob], title: str, message: str) -> str:
        self._commit_counter += 1
        digest = hashlib.sha1()
        digest.update(f"{repo.repo_id}\n{parent}\n{title}\n{message}\n{self._commit_counter}\n".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{files[path].oid}\n".encode())
        oid = digest.hexdigest()
        repo.commits[oid] = Commit(oid, parent, title, message, _now(), dict(files))
        return oid

    @staticmethod
    def _resolve(repo: Repo, revision: str) -> str:
        if revision in repo.refs:
            return repo.refs[revision]
        if revision.startswith("refs/heads/") and revision[len("refs/heads/") :] in repo.refs:
            return repo.refs[revision[len("refs/heads/") :]]
        if _SHA_RE.fullmatch(revision) and revision in repo.commits:
            return revision
        raise HubHTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to the `FakeHub` store. One instance per connection (HTTP/1.1 keep-alive)."""

    fake_hub: FakeHub
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"

    # -------------------------------------------------------------- plumbing

    def setup(self) -> None:
        super().setup()
        with self.fake_hub._lock:
            self.fake_hub._connections.add(self.connection)

    def finish(self) -> None:
        with self.fake_hub._lock:
            self.fake_hub._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        # The request line only: no headers, so no token, ever reaches a log.
        logger.debug("fake Hub: " + format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, *, content_type: str | None = None
    ) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers, content_type="application/json")

    def _error(self, err: HubHTTPError) -> None:
        headers = dict(err.headers)
        if err.error_code:
            headers["X-Error-Code"] = err.error_code
        headers["X-Error-Message"] = err.message
        self._json({"error": err.message}, err.status, headers)

    # -------------------------------------------------------------- auth

    def _bearer(self) -> str | None:
        value = self.headers.get("Authorization", "")
        return value[len("Bearer ") :].strip() if value.startswith("Bearer ") else None

    def _check_auth(self, *, write: bool) -> None:
        expected = self.fake_hub.token
        given = self._bearer()
        if expected is None:
            return
        if given is not None and given != expected:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        if write and given is None:
            raise HubHTTPError(401, "You must be authenticated to access this resource")

    def _authorised(self) -> bool:
        return self.fake_hub.token is None or self._bearer() == self.fake_hub.token

    def _repo(self, repo_id: str) -> Repo:
        repo = self.fake_hub.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorised()):
            raise HubHTTPError(401, "Repository not found", "RepoNotFound")
        return repo

    # -------------------------------------------------------------- routing

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        raw_path = split.path
        query = {key: values[-1] for key, values in parse_qs(split.query).items()}
        body = self._read_body() if method in ("POST", "PUT", "DELETE") else b""
        hub = self.fake_hub
        with hub._lock:
            hub.requests.append((method, raw_path))
            for failure in hub._failures:
                if failure.remaining > 0 and failure.method == method and failure.pattern.search(raw_path):
                    failure.remaining -= 1
                    self._json({"error": "injected failure"}, failure.status, {"X-Error-Message": "injected failure"})
                    return
        # Split before unquoting: revisions such as `refs%2Fpr%2F1` are one quoted segment.
        parts = [unquote(part) for part in raw_path.split("/")[1:]]
        try:
            with hub._lock:
                if not self._route(method, parts, query, body):
                    hub.unhandled.append((method, raw_path))
                    logger.warning("fake Hub: no route for %s %s", method, raw_path)
                    raise HubHTTPError(404, f"no route for {method} {raw_path}")
        except HubHTTPError as err:
            self._error(err)
        except (ValueError, KeyError, TypeError) as err:
            self._error(HubHTTPError(400, f"bad request: {err}"))

    def _route(self, method: str, parts: list[str], query: dict[str, str], body: bytes) -> bool:
        if parts[:2] == ["api", "whoami-v2"] and method == "GET":
            self._whoami()
        elif parts[:3] == ["api", "repos", "create"] and method == "POST":
            self._create_repo(json.loads(body or b"{}"))
        elif parts[:2] == ["api", "agent-harnesses"] and method == "GET":
            # Fetched once a day by huggingface_hub's agent detection (progress-display choices): an empty registry.
            self._json({"standardEnvVars": [], "harnesses": {}})
        elif parts[:2] == ["api", "validate-yaml"] and method == "POST":
            self._validate_yaml(json.loads(body or b"{}"))
        elif len(parts) >= 4 and parts[:2] == ["api", "models"]:
            repo_id, rest = f"{parts[2]}/{parts[3]}", parts[4:]
            return self._route_model_api(method, repo_id, rest, query, body)
        elif len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            self._resolve_file(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        else:
            return False
        return True

    def _route_model_api(self, method: str, repo_id: str, rest: list[str], query: dict[str, str], body: bytes) -> bool:
        if not rest and method == "GET":
            self._model_info(repo_id, "main")
        elif len(rest) == 2 and rest[0] == "revision" and method == "GET":
            self._model_info(repo_id, rest[1])
        elif len(rest) >= 2 and rest[0] == "tree" and method == "GET":
            self._tree(repo_id, rest[1], "/".join(rest[2:]), query)
        elif rest == ["refs"] and method == "GET":
            self._refs(repo_id, query)
        elif len(rest) == 2 and rest[0] == "commits" and method == "GET":
            self._commits(repo_id, rest[1])
        elif len(rest) == 2 and rest[0] == "preupload" and method == "POST":
            self._preupload(repo_id, rest[1], json.loads(body or b"{}"))
        elif len(rest) == 2 and rest[0] == "commit" and method == "POST":
            self._commit(repo_id, rest[1], body, create_pr=query.get("create_pr") == "1")
        elif len(rest) == 2 and rest[0] == "branch" and method == "POST":
            self._create_branch(repo_id, rest[1], json.loads(body or b"{}"))
        elif rest == ["discussions"] and method == "POST":
            self._create_discussion(repo_id, json.loads(body or b"{}"))
        elif len(rest) == 2 and rest[0] == "discussions" and method == "GET":
            self._discussion(repo_id, int(rest[1]))
        else:
            return False
        return True

    # -------------------------------------------------------------- endpoints: account and repos

    def _whoami(self) -> None:
        if self._bearer() is None:
            raise HubHTTPError(401, "Invalid username or password.")
        self._check_auth(write=False)
        hub = self.fake_hub
        self._json(
            {
                "type": "user",
                "id": "0" * 24,
                "name": hub.user,
                "fullname": hub.user,
                "orgs": [{"type": "org", "name": org, "id": "1" * 24} for org in DEFAULT_ORGS],
                "auth": {"type": "access_token", "accessToken": {"displayName": "fake", "role": "write"}},
            }
        )

    def _create_repo(self, payload: dict) -> None:
        self._check_auth(write=True)
        repo_type = payload.get("type") or "model"
        if repo_type != "model":
            raise HubHTTPError(400, f"the fake Hub only holds model repos, not {repo_type!r}")
        namespace = payload.get("organization") or self.fake_hub.user
        repo_id = f"{namespace}/{payload['name']}"
        hub = self.fake_hub
        url = f"{hub.url}/{repo_id}"
        if repo_id in hub.repos:
            self._json({"error": "You already created this model repo", "url": url}, 409)
            return
        private = payload.get("private") is True or payload.get("visibility") == "private"
        repo = Repo(repo_id=repo_id, private=private, created_at=_now())
        # Like the Hub: a new repo has one commit holding `.gitattributes`.
        attributes = hub._store_blob(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
        repo.refs["main"] = hub._new_commit(repo, None, {".gitattributes": attributes}, "initial commit", "")
        hub.repos[repo_id] = repo
        self._json({"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    def _validate_yaml(self, payload: dict) -> None:
        content = payload.get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
        errors = []
        if match:
            try:
                metadata = yaml.safe_load(match.group(1))
                if metadata is not None and not isinstance(metadata, dict):
                    errors.append({"message": "metadata must be a YAML mapping"})
            except yaml.YAMLError as err:
                errors.append({"message": f"invalid YAML: {err}"})
        if errors:
            self._json({"errors": errors, "warnings": []}, 400)
        else:
            self._json({"errors": [], "warnings": []})

    def _model_info(self, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_id)
        oid = self.fake_hub._resolve(repo, revision)
        commit = repo.commits[oid]
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }
        readme = commit.files.get("README.md")
        if readme is not None:
            metadata = _front_matter(self.fake_hub._blob_path(readme).read_text(encoding="utf-8"))
            if metadata:
                info["cardData"] = metadata
                info["tags"] = list(metadata.get("tags") or [])
                for key in ("library_name", "pipeline_tag", "model-index"):
                    if key in metadata:
                        info[key] = metadata[key]
        self._json(info)

    def _tree(self, repo_id: str, revision: str, path: str, query: dict[str, str]) -> None:
        repo = self._repo(repo_id)
        commit = repo.commits[self.fake_hub._resolve(repo, revision)]
        recursive = query.get("recursive", "false").lower() in ("1", "true")
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        if prefix and not any(name.startswith(prefix) for name in commit.files):
            raise HubHTTPError(404, f"{path} does not exist at {revision}", "EntryNotFound")
        entries: list[dict[str, Any]] = []
        folders: set[str] = set()
        for name in sorted(commit.files):
            if not name.startswith(prefix):
                continue
            relative = name[len(prefix) :]
            if not recursive and "/" in relative:
                folders.add(prefix + relative.split("/")[0])
                continue
            if recursive:
                parents = relative.split("/")[:-1]
                for depth in range(1, len(parents) + 1):
                    folders.add(prefix + "/".join(parents[:depth]))
            blob = commit.files[name]
            entries.append({"type": "file", "oid": blob.oid, "size": blob.size, "path": name})
        for folder in sorted(folders):
            oid = hashlib.sha1(folder.encode()).hexdigest()
            entries.append({"type": "directory", "oid": oid, "size": 0, "path": folder})
        self._json(entries)

    def _refs(self, repo_id: str, query: dict[str, str]) -> None:
        repo = self._repo(repo_id)

        def ref(name: str) -> dict[str, str]:
            full = name if name.startswith("refs/") else f"refs/heads/{name}"
            return {"name": name, "ref": full, "targetCommit": repo.refs[name]}

        payload: dict[str, Any] = {
            "branches": [ref(name) for name in sorted(repo.refs) if not name.startswith("refs/pr/")],
            "tags": [],
            "converts": [],
        }
        if query.get("include_prs"):
            payload["pullRequests"] = [ref(name) for name in sorted(repo.refs) if name.startswith("refs/pr/")]
        self._json(payload)

    def _commits(self, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_id)
        oid: str | None = self.fake_hub._resolve(repo, revision)
        items = []
        while oid is not None:
            commit = repo.commits[oid]
            items.append(
                {
                    "id": commit.oid,
                    "title": commit.title,
                    "message": commit.message,
                    "authors": [{"user": self.fake_hub.user}],
                    "date": commit.date,
                }
            )
            oid = commit.parent
        self._json(items)

    # -------------------------------------------------------------- endpoints: uploads

    def _writable_branch(self, repo: Repo, revision: str) -> str:
        if revision.startswith("refs/heads/"):
            revision = revision[len("refs/heads/") :]
        if _SHA_RE.fullmatch(revision) and revision not in repo.refs:
            raise HubHTTPError(400, f"Cannot commit to a commit sha ({revision}): name a branch")
        if revision not in repo.refs:
            raise HubHTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return revision

    def _preupload(self, repo_id: str, revision: str, payload: dict) -> None:
        self._check_auth(write=True)
        repo = self._repo(repo_id)
        commit = repo.commits[self.fake_hub._resolve(repo, revision)]
        files = []
        for item in payload.get("files", []):
            existing = commit.files.get(item["path"])
            files.append(
                {
                    "path": item["path"],
                    # Always "regular": the client then inlines base64 content in the commit call, and neither
                    # its Xet (`hf_xet`) nor its LFS batch upload path is taken.
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": existing.oid if existing is not None else None,
                }
            )
        self._json({"files": files, "commitOid": commit.oid})

    def _commit(self, repo_id: str, revision: str, body: bytes, *, create_pr: bool) -> None:
        self._check_auth(write=True)
        hub = self.fake_hub
        repo = self._repo(repo_id)
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubHTTPError(400, "the first NDJSON line of a commit must be its header")
        header = lines[0]["value"]
        branch = self._writable_branch(repo, revision)
        parent = repo.refs[branch]
        if header.get("parentCommit") and header["parentCommit"] != parent:
            raise HubHTTPError(412, f"parentCommit {header['parentCommit']} is not the head of {branch} ({parent})")
        files = dict(repo.commits[parent].files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = value.get("path", "")
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubHTTPError(400, f"unsupported encoding {value.get('encoding')!r} for {path}")
                files[path] = hub._store_blob(base64.b64decode(value["content"]))
            elif key == "deletedFile":
                if path not in files:
                    raise HubHTTPError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                for name in [name for name in files if name.startswith(prefix)]:
                    del files[name]
            elif key == "lfsFile":
                # Never requested: preupload answers "regular" for every file.
                raise HubHTTPError(422, f"the fake Hub stores no LFS objects (got {path})")
            else:
                raise HubHTTPError(400, f"unknown commit operation {key!r}")
        pr_url = None
        if create_pr:
            discussion = self._open_pull_request(repo, header.get("summary", ""), header.get("description", ""))
            branch = f"refs/pr/{discussion.num}"
            pr_url = f"{hub.url}/{repo_id}/discussions/{discussion.num}"
        oid = hub._new_commit(repo, parent, files, header.get("summary", ""), header.get("description", ""))
        repo.refs[branch] = oid
        self._json(
            {
                "success": True,
                "commitOid": oid,
                "commitUrl": f"{hub.url}/{repo_id}/commit/{oid}",
                "hookOutput": "",
                "pullRequestUrl": pr_url,
            }
        )

    def _create_branch(self, repo_id: str, branch: str, payload: dict) -> None:
        self._check_auth(write=True)
        repo = self._repo(repo_id)
        if branch.startswith("refs/") or _SHA_RE.fullmatch(branch):
            raise HubHTTPError(400, f"Invalid reference for a branch: {branch}")
        if branch in repo.refs:
            raise HubHTTPError(409, f"Reference already exists: refs/heads/{branch}")
        start = payload.get("startingPoint") or "main"
        repo.refs[branch] = self.fake_hub._resolve(repo, start)
        self._json({})

    def _open_pull_request(self, repo: Repo, title: str, description: str) -> Discussion:
        discussion = Discussion(len(repo.discussions) + 1, title, description, True, _now())
        repo.discussions.append(discussion)
        repo.refs[f"refs/pr/{discussion.num}"] = repo.refs["main"]
        return discussion

    def _create_discussion(self, repo_id: str, payload: dict) -> None:
        self._check_auth(write=True)
        repo = self._repo(repo_id)
        if payload.get("pullRequest"):
            discussion = self._open_pull_request(repo, payload.get("title", ""), payload.get("description", ""))
        else:
            discussion = Discussion(len(repo.discussions) + 1, payload.get("title", ""), "", False, _now())
            repo.discussions.append(discussion)
        self._json({"num": discussion.num, "url": f"{self.fake_hub.url}/{repo_id}/discussions/{discussion.num}"})

    def _discussion(self, repo_id: str, num: int) -> None:
        repo = self._repo(repo_id)
        if not 1 <= num <= len(repo.discussions):
            raise HubHTTPError(404, f"Discussion {num} not found")
        discussion = repo.discussions[num - 1]
        self._json(
            {
                "num": discussion.num,
                "title": discussion.title,
                "author": {"name": self.fake_hub.user},
                "createdAt": discussion.created_at,
                "status": "open",
                "repo": {"name": repo_id, "type": "model"},
                "isPullRequest": discussion.is_pull_request,
                "events": [],
                "changes": {"base": "refs/heads/main"},
                "filesWithConflicts": [],
                "diff": "",
            }
        )

    # -------------------------------------------------------------- endpoints: downloads

    def _resolve_file(self, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo(repo_id)
        oid = self.fake_hub._resolve(repo, revision)
        blob = repo.commits[oid].files.get(path)
        if blob is None:
            raise HubHTTPError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": oid})
        data = b"" if self.command == "HEAD" else self.fake_hub._blob_path(blob).read_bytes()
        headers = {
            "X-Repo-Commit": oid,
            "ETag": f'"{blob.oid}"',
            "Content-Length": str(blob.size),
            "Accept-Ranges": "none",
        }
        self._send(200, data, headers, content_type="application/octet-stream")


def _front_matter(text: str) -> dict | None:
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        return None
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


__all__ = ["Blob", "Commit", "FakeHub", "Repo", "git_blob_sha1"]

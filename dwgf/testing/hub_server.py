"""A Hugging Face Hub look-alike on 127.0.0.1: model and dataset repos at fixed commits, over real HTTP.

:class:`HubServer` serves folders (or in-memory files) as hub repos with the endpoints and headers that
``huggingface_hub`` (2.x) uses for ``snapshot_download`` / ``hf_hub_download`` / ``HfApi.repo_info``:

* ``GET /api/{models,datasets}/{repo}[/revision/{rev}]``: repo info ``{"id", "sha", "siblings"}``;
* ``GET /api/{models,datasets}/{repo}/tree/{rev}``: the recursive file listing (``oid`` = git blob sha1,
  ``lfs.oid`` = sha256);
* ``HEAD|GET /{repo}/resolve/{rev}/{path}`` (models) and ``/datasets/{repo}/resolve/...`` (datasets);
* ``HEAD|GET /lfs/{sha256}`` on a second ("CDN") port: large-file bytes, with ``Range`` (206) for resumed downloads.

Every resolve response carries ``X-Repo-Commit``; a small file answers 200 with ``ETag: "<git sha1>"``; a large
(LFS) file answers 302 to the CDN port with ``X-Linked-Etag: "<sha256>"`` and ``X-Linked-Size`` - the CDN is a
different origin, so the client takes the metadata from the redirect and downloads from the CDN, as it does
against huggingface.co. Unknown repos, revisions and files answer 404 with ``X-Error-Code`` ``RepoNotFound`` /
``RevisionNotFound`` / ``EntryNotFound``. No response ever carries an ``X-Xet-*`` header or a ``xetHash``, so
``huggingface_hub`` never switches to the Xet protocol (it would need a Xet storage service); every request
lands in :attr:`HubServer.requests`, and tests assert that none went to a Xet route.

Faults for tests, per file (:meth:`HubServer.corrupt`, :meth:`HubServer.truncate`, :meth:`HubServer.drop_once`,
:meth:`HubServer.stall`): serve other bytes of the same size under the original hashes; send only the first K
bytes as a complete response (``Content-Length: K``); cut the connection after K bytes once, so that the client
must resume with ``Range``; or send K bytes and hang, so that a test can kill the client mid-file.

Only 127.0.0.1 is bound; :meth:`HubServer.stop` (or leaving the ``with`` block) shuts both ports down.
Command line, to mirror a pre-seeded folder as a hub for machines that cannot reach huggingface.co::

    python -m dwgf.testing.hub_server --model Manojb/stable-diffusion-2-1-base=/data/sd21 \\
        --dataset isometricneko/FFHQ512-val-1000=/data/ffhq-lmdb --port 8123
    HF_ENDPOINT=http://127.0.0.1:8123 snakemake -c 1 --config suite=paper
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

#: suffixes served as LFS (large-file) objects, as the hub's default .gitattributes does; any file over 10 MB too
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".mdb", ".lmdb", ".png", ".jpg", ".jpeg", ".zip")
LFS_MIN_SIZE = 10 * 1024 * 1024
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file's bytes: sha1(b"blob <size>\\0" + data) (the hub's ETag of a small file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    repo_type: str  # "model" | "dataset"
    repo_id: str
    commit: str
    files: dict[str, bytes]
    branches: dict[str, str] = field(default_factory=dict)

    def is_lfs(self, path: str) -> bool:
        return path.lower().endswith(LFS_SUFFIXES) or len(self.files[path]) >= LFS_MIN_SIZE

    def resolve(self, revision: str) -> str | None:
        if revision == self.commit or self.branches.get(revision) == self.commit:
            return self.commit
        return None


class HubServer:
    """Hub repos at fixed commits on 127.0.0.1 (an API port and a CDN port); see the module docstring."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[dict[str, Any]] = []
        self._faults: dict[tuple[str, str, str], tuple[str, int]] = {}
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._servers: list[http.server.ThreadingHTTPServer] = []

    # -- repos -------------------------------------------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        files: str | Path | dict[str, bytes],
        repo_type: str = "model",
        commit: str | None = None,
    ) -> str:
        """Serve ``files`` (a folder, read now, or {path: bytes}) as ``repo_id`` at ``commit``; return the commit.

        Without ``commit`` it is derived from the content (sha1 of the sorted paths and sha256s), so the same
        files always get the same commit. Branch ``main`` points at it.
        """
        if repo_type not in ("model", "dataset"):
            raise ValueError(f"repo_type must be 'model' or 'dataset', got {repo_type!r}")
        if not isinstance(files, dict):
            folder = Path(files)
            if not folder.is_dir():
                raise FileNotFoundError(f"folder {str(folder)!r} to serve as {repo_id} does not exist")
            files = {
                p.relative_to(folder).as_posix(): p.read_bytes()
                for p in sorted(folder.rglob("*"))
                if p.is_file() and ".cache" not in p.relative_to(folder).parts
            }
        if commit is None:
            listing = "".join(f"{path}\0{hashlib.sha256(data).hexdigest()}\n" for path, data in sorted(files.items()))
            commit = hashlib.sha1(f"{repo_type}/{repo_id}\n{listing}".encode()).hexdigest()
        if not _COMMIT.match(commit):
            raise ValueError(f"commit must be 40 lowercase hex digits, got {commit!r}")
        repo = Repo(repo_type, repo_id, commit, dict(files), {"main": commit})
        with self._lock:
            self.repos[(repo_type, repo_id)] = repo
            for data in files.values():
                self._blobs[hashlib.sha256(data).hexdigest()] = data
        return commit

    def corrupt(self, repo_id: str, path: str, repo_type: str = "model") -> None:
        """Serve ``path`` with its middle byte flipped (same size, same advertised hashes)."""
        self._faults[(repo_type, repo_id, path)] = ("corrupt", 0)

    def truncate(self, repo_id: str, path: str, nbytes: int, repo_type: str = "model") -> None:
        """Always serve only the first ``nbytes`` of ``path``, as a complete response of that length."""
        self._faults[(repo_type, repo_id, path)] = ("truncate", int(nbytes))

    def drop_once(self, repo_id: str, path: str, nbytes: int, repo_type: str = "model") -> None:
        """Cut the connection after ``nbytes`` of the next full download of ``path``; later requests succeed."""
        self._faults[(repo_type, repo_id, path)] = ("drop_once", int(nbytes))

    def stall(self, repo_id: str, path: str, nbytes: int, repo_type: str = "model") -> None:
        """Send ``nbytes`` of every download of ``path``, then hang (until the client gives up or is killed)."""
        self._faults[(repo_type, repo_id, path)] = ("stall", int(nbytes))

    def clear_faults(self) -> None:
        """Serve every file as it is again."""
        self._faults.clear()

    # -- server ------------------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``: the value for ``HF_ENDPOINT``."""
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def start(self, port: int = 0) -> HubServer:
        """Bind 127.0.0.1:``port`` (0 = any free port) for the API and a free port for the CDN; serve in threads."""
        for role, chosen in (("api", port), ("cdn", 0)):
            handler = type(f"_{role}Handler", (_Handler,), {"hub": self, "role": role})
            server = http.server.ThreadingHTTPServer(("127.0.0.1", chosen), handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, name=f"hub-{role}", daemon=True).start()
            self._servers.append(server)
        return self

    def stop(self) -> None:
        self._faults.clear()  # releases stalled downloads
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler -----------------------------------------------------------------------------------
    def _payload(self, repo: Repo, path: str) -> tuple[bytes, str | None, int]:
        """(bytes to serve, fault kind or None, fault parameter) for one download of ``path``."""
        data = repo.files[path]
        with self._lock:
            fault = self._faults.get((repo.repo_type, repo.repo_id, path))
            if fault and fault[0] == "drop_once":
                del self._faults[(repo.repo_type, repo.repo_id, path)]
        if fault is None:
            return data, None, 0
        kind, value = fault
        if kind == "corrupt":
            middle = len(data) // 2
            return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :], kind, 0
        return data, kind, value

    def _file_by_sha256(self, digest: str) -> tuple[Repo, str] | None:
        for repo in self.repos.values():
            for path, data in repo.files.items():
                if repo.is_lfs(path) and hashlib.sha256(data).hexdigest() == digest:
                    return repo, path
        return None


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer
    role: str

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        return None

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch(head=False)

    # -- routing -----------------------------------------------------------------------------------------------
    def _dispatch(self, head: bool) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        self.hub.requests.append(
            {"role": self.role, "method": self.command, "path": path, "range": self.headers.get("Range")}
        )
        if self.role == "cdn":
            match = re.fullmatch(r"/lfs/([0-9a-f]{64})", path)
            found = self.hub._file_by_sha256(match.group(1)) if match else None
            if found is None:
                return self._error(404, "EntryNotFound")
            return self._send_file(*found, head=head)
        if path.startswith("/api/"):
            return self._api(path[len("/api/") :])
        match = re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if match is None:
            return self._error(404, "RepoNotFound")
        repo_type = "dataset" if match.group(1) else "model"
        repo = self.hub.repos.get((repo_type, match.group(2)))
        if repo is None:
            return self._error(404, "RepoNotFound")
        commit = repo.resolve(match.group(3))
        if commit is None:
            return self._error(404, "RevisionNotFound")
        file_path = match.group(4)
        if file_path not in repo.files:
            return self._error(404, "EntryNotFound", {"X-Repo-Commit": commit})
        data = repo.files[file_path]
        if repo.is_lfs(file_path):
            digest = hashlib.sha256(data).hexdigest()
            headers = {
                "X-Repo-Commit": commit,
                "X-Linked-Etag": f'"{digest}"',
                "X-Linked-Size": str(len(data)),
                "ETag": f'"{git_blob_sha1(data)}"',
                "Location": f"{self.hub.cdn}/lfs/{digest}",
                "Content-Length": "0",
            }
            return self._respond(302, headers, b"")
        return self._send_file(repo, file_path, head=head, extra={"X-Repo-Commit": commit})

    def _api(self, rest: str) -> None:
        match = re.fullmatch(r"(models|datasets)/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+)(/.*)?)?", rest)
        if match is None:
            return self._error(404, "RepoNotFound")
        repo = self.hub.repos.get((match.group(1)[:-1], match.group(2)))
        if repo is None:
            return self._error(404, "RepoNotFound")
        commit = repo.resolve(match.group(4) or "main")
        if commit is None:
            return self._error(404, "RevisionNotFound")
        if match.group(3) == "tree":
            entries: list[dict[str, Any]] = []
            folders = sorted({"/".join(p.split("/")[:i]) for p in repo.files for i in range(1, p.count("/") + 1)})
            for folder in folders:
                entries.append({"type": "directory", "path": folder, "oid": hashlib.sha1(folder.encode()).hexdigest()})
            for file_path, data in sorted(repo.files.items()):
                entry: dict[str, Any] = {"type": "file", "path": file_path, "size": len(data)}
                entry["oid"] = git_blob_sha1(data)
                if repo.is_lfs(file_path):
                    entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                entries.append(entry)
            return self._json(entries)
        info = {
            "id": repo.repo_id,
            "sha": commit,
            "private": False,
            "siblings": [{"rfilename": name} for name in sorted(repo.files)],
        }
        return self._json(info)

    # -- responses ---------------------------------------------------------------------------------------------
    def _send_file(self, repo: Repo, file_path: str, head: bool, extra: dict[str, str] | None = None) -> None:
        data = repo.files[file_path]
        headers = dict(extra or {})
        if repo.is_lfs(file_path):
            headers["ETag"] = f'"{hashlib.sha256(data).hexdigest()}"'
        else:
            headers["ETag"] = f'"{git_blob_sha1(data)}"'
        headers["Accept-Ranges"] = "bytes"
        if head:
            headers["Content-Length"] = str(len(data))
            return self._respond(200, headers, b"")
        body, fault, value = self.hub._payload(repo, file_path)
        start, status = 0, 200
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if wanted:
            start, status = int(wanted.group(1)), 206
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        body = body[start:]
        if fault == "truncate":
            body = body[: max(value - start, 0)]
            headers.pop("Content-Range", None)
        headers["Content-Length"] = str(len(body))
        if fault == "drop_once":
            self._respond(status, headers, body[:value], close=True)
            return
        if fault == "stall":
            self._respond(status, headers, body[:value])
            self.wfile.flush()
            while self.hub._faults.get((repo.repo_type, repo.repo_id, file_path), ("",))[0] == "stall":
                time.sleep(0.05)
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self._respond(status, headers, body)

    def _json(self, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self._respond(200, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body)

    def _error(self, status: int, code: str, extra: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": code}).encode()
        headers = {"X-Error-Code": code, "Content-Type": "application/json", "Content-Length": str(len(body))}
        self._respond(status, {**headers, **(extra or {})}, body)

    def _respond(self, status: int, headers: dict[str, str], body: bytes, close: bool = False) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        if close:  # a dropped connection: the client saw fewer bytes than Content-Length promised
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)


class ForwardProxy:
    """A plain-HTTP forward proxy on 127.0.0.1 (what ``HTTP_PROXY`` points at), for testing proxied downloads.

    It relays absolute-form requests (``GET http://host:port/path``) to their host, or to ``aliases[host]``
    (``{"hub.invalid": "127.0.0.1:8123"}``: a hub name that only the proxy can resolve), streams the answer back
    unchanged, and lists every relayed URL in :attr:`requests`.
    """

    def __init__(self, aliases: dict[str, str] | None = None):
        self.aliases = dict(aliases or {})
        self.requests: list[str] = []
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the proxy first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ForwardProxy:
        handler = type("_ProxyHandler", (_ProxyHandler,), {"proxy": self})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="hub-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ForwardProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: ForwardProxy

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return None

    def do_HEAD(self) -> None:  # noqa: N802
        self._relay()

    def do_GET(self) -> None:  # noqa: N802
        self._relay()

    def _relay(self) -> None:
        import http.client

        url = urlsplit(self.path)
        if not url.scheme or not url.netloc:
            self.send_error(400, "a forward proxy needs absolute-form request targets")
            return
        self.proxy.requests.append(self.path)
        target = self.proxy.aliases.get(url.hostname or "", url.netloc)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
        upstream = http.client.HTTPConnection(target, timeout=60)
        try:
            upstream.request(self.command, url.path + (f"?{url.query}" if url.query else ""), headers=headers)
            answer = upstream.getresponse()
            body = answer.read()
        except OSError as error:
            self.send_error(502, f"upstream {target}: {error}")
            return
        finally:
            upstream.close()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("connection", "transfer-encoding", "keep-alive"):
                self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="serve local folders as Hugging Face Hub repos on 127.0.0.1")
    parser.add_argument("--model", action="append", default=[], metavar="REPO_ID=FOLDER[@COMMIT]")
    parser.add_argument("--dataset", action="append", default=[], metavar="REPO_ID=FOLDER[@COMMIT]")
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args(argv)
    server = HubServer()
    for repo_type, specs in (("model", args.model), ("dataset", args.dataset)):
        for spec in specs:
            repo_id, _, target = spec.partition("=")
            folder, _, commit = target.partition("@")
            if not repo_id or not folder:
                parser.error(f"--{repo_type} expects REPO_ID=FOLDER[@COMMIT], got {spec!r}")
            commit = server.add_repo(repo_id, folder, repo_type, commit or None)
            print(f"{repo_type} {repo_id} at revision {commit}", flush=True)
    server.start(args.port)
    print(f"serving on {server.endpoint} (set HF_ENDPOINT={server.endpoint}); Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A stand-in for the Hugging Face Hub's upload API on 127.0.0.1, for `medln push` tests: it
speaks what huggingface_hub's create_repo / create_branch / upload_folder send (repo creation,
branch creation, README metadata validation, preupload, the LFS batch API with single-part
"basic" uploads, the NDJSON commit) and records what it received: the requests with their
Authorization header, and each commit's files as bytes. Xet storage is not spoken: clients
run with HF_HUB_DISABLE_XET=1, and LFS files arrive by the "basic" transfer.
A plain module (tests/ is on sys.path), like appserver.py."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    requests: list[dict] = field(default_factory=list)  # method, path, authorization, json body
    repos: dict[str, dict] = field(default_factory=dict)  # repo_id -> create payload
    branches: list[tuple[str, str]] = field(default_factory=list)  # (repo_id, branch)
    lfs: dict[str, bytes] = field(default_factory=dict)  # sha256 -> bytes PUT
    commits: list[dict] = field(default_factory=list)  # repo_id, revision, summary, files {path: bytes}


def _handler(received: Received, endpoint: list[str]):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _reply(self, status: int, body: dict | None = None):
            data = json.dumps(body or {}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_PUT(self):
            body = self._body()
            received.requests.append({"method": "PUT", "path": self.path,
                                      "authorization": self.headers.get("Authorization")})
            match = re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", self.path)
            if not match or hashlib.sha256(body).hexdigest() != match.group(1):
                return self._reply(400, {"error": "sha256 does not match"})
            received.lfs[match.group(1)] = body
            self._reply(200)

        def do_POST(self):
            raw = self._body()
            path = self.path.split("?")[0]
            is_commit = re.fullmatch(r"/api/models/(.+/.+)/commit/(.+)", path)
            body = None if is_commit else json.loads(raw or b"{}")
            received.requests.append({"method": "POST", "path": path, "authorization": self.headers.get("Authorization"),
                                      "json": body})
            if path == "/api/repos/create":
                repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
                received.repos[repo_id] = body
                return self._reply(200, {"url": f"{endpoint[0]}/{repo_id}", "name": repo_id, "id": repo_id})
            if path == "/api/validate-yaml":
                return self._reply(200, {"errors": [], "warnings": []})
            if match := re.fullmatch(r"/api/models/(.+/.+)/branch/(.+)", path):
                received.branches.append((match.group(1), match.group(2)))
                return self._reply(200)
            if re.fullmatch(r"/api/models/(.+/.+)/preupload/(.+)", path):
                files = [{"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(".safetensors") else "regular",
                          "shouldIgnore": False, "oid": None} for f in body["files"]]
                return self._reply(200, {"files": files})
            if re.fullmatch(r"/(.+/.+)\.git/info/lfs/objects/batch", path):
                objects = [{"oid": o["oid"], "size": o["size"], "authenticated": True,
                            "actions": {"upload": {"href": f"{endpoint[0]}/lfs-upload/{o['oid']}"}}}
                           for o in body["objects"]]
                return self._reply(200, {"transfer": "basic", "objects": objects})
            if is_commit:
                lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
                files: dict[str, bytes] = {}
                header = {}
                for line in lines:
                    value = line["value"]
                    if line["key"] == "header":
                        header = value
                    elif line["key"] == "file":
                        files[value["path"]] = base64.b64decode(value["content"])
                    elif line["key"] == "lfsFile":
                        if value["oid"] not in received.lfs:
                            return self._reply(400, {"error": f"LFS object {value['oid']} was never uploaded"})
                        files[value["path"]] = received.lfs[value["oid"]]
                sha = hashlib.sha1(raw).hexdigest()
                received.commits.append({"repo_id": is_commit.group(1), "revision": is_commit.group(2),
                                         "summary": header.get("summary"), "files": files})
                return self._reply(200, {"commitUrl": f"{endpoint[0]}/{is_commit.group(1)}/commit/{sha}",
                                         "commitOid": sha, "success": True})
            self._reply(404, {"error": f"the stand-in does not serve {path}"})

        def do_GET(self):
            received.requests.append({"method": "GET", "path": self.path, "authorization": self.headers.get("Authorization")})
            self._reply(404, {"error": f"the stand-in does not serve {self.path}"})

    return Handler


@contextmanager
def stand_in_hub():
    """(endpoint URL, Received) while the block runs."""
    received = Received()
    endpoint: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(received, endpoint))
    endpoint.append(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint[0], received
    finally:
        server.shutdown()
        server.server_close()

"""A stand-in for the Hugging Face Hub on 127.0.0.1: a model folder served as one repository.

It answers what huggingface_hub's hf_hub_download asks (HEAD and GET of
/{repo}/resolve/{revision}/{file}, with the commit and ETag headers it reads); every other
request, such as the /api/ listings transformers tries, gets a 404, which transformers
tolerates. Point HF_ENDPOINT at the URL that serving() yields. Each request is recorded with
when it started and ended.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.server
import pathlib
import threading
import time
from collections.abc import Iterator

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclasses.dataclass
class HubRequest:
    method: str
    file: str | None  # the repository file asked for, None for other paths
    started: float
    ended: float = 0.0


@dataclasses.dataclass
class FakeHub:
    folder: pathlib.Path
    repo: str = "org/tiny-bert"
    slow_files: dict[str, float] = dataclasses.field(default_factory=dict)  # name -> seconds
    requests: list[HubRequest] = dataclasses.field(default_factory=list)
    url: str = ""  # while serving

    def file_for(self, path: str) -> str | None:
        prefix = f"/{self.repo}/resolve/"
        if not path.startswith(prefix):
            return None
        _revision, _, name = path[len(prefix) :].partition("?")[0].partition("/")
        return name

    @contextlib.contextmanager
    def serving(self) -> Iterator[str]:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self, with_body: bool) -> None:
                request = HubRequest(self.command, hub.file_for(self.path), time.monotonic())
                hub.requests.append(request)
                path = hub.folder / request.file if request.file else None
                if path is None or not path.is_file():
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    content = path.read_bytes()
                    time.sleep(hub.slow_files.get(request.file, 0.0) if with_body else 0.0)
                    self.send_response(200)
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    if with_body:
                        self.wfile.write(content)
                request.ended = time.monotonic()

            def do_HEAD(self) -> None:
                self.answer(with_body=False)

            def do_GET(self) -> None:
                self.answer(with_body=True)

            def log_message(self, *args) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self.url
        finally:
            server.shutdown()
            server.server_close()

    def asked(self, method: str, file: str) -> list[HubRequest]:
        return [r for r in self.requests if (r.method, r.file) == (method, file)]

"""Tests for download_glue_data.py against a loopback HTTP server laid out like the real one.

No network: every download goes to a ThreadingHTTPServer on 127.0.0.1 that serves a temp
folder and can inject failures per path (an HTTP status, a connection closed mid-body, a
stall). The tests that compare with the real GLUE files in ../shared skip without them.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO

import download_glue_data as dg

SHARED = Path(__file__).resolve().parents[2] / "shared"
needs_shared = pytest.mark.skipif(
    not (SHARED / "glue_raw" / "MRPC").is_dir(), reason="needs ../shared GLUE files"
)

STALL_S = 1.0  # how long a "stall" fault keeps the client waiting; > the patched timeout
SPLITS = ("train.tsv", "dev.tsv", "test.tsv")
MNLI_SPLITS = (
    "train.tsv",
    "dev_matched.tsv",
    "dev_mismatched.tsv",
    "test_matched.tsv",
    "test_mismatched.tsv",
)
RTE_ZIP = "glue/data/RTE.zip"
AX_TSV = "glue/data/AX.tsv"
RTE_FILES = {
    "train.tsv": b"index\tsentence1\tsentence2\tlabel\n0\tA dog ran.\tAn animal ran.\tentailment\n",
    "dev.tsv": b"index\tsentence1\tsentence2\tlabel\n0\tIt is hot.\tIt is cold.\tnot_entailment\n",
    "test.tsv": b"index\tsentence1\tsentence2\n0\tBirds fly.\tSome birds fly.\n",
}
AX_BYTES = b"index\tsentence1\tsentence2\n0\tThe cat sat.\tA cat sat.\n1\tNo.\tYes."

# Synthetic MRPC raw files: UTF-8 BOM headers as in SentEval's copies, one CRLF row, and a
# dev id given in reverse order (which must not match).
BOM = "\ufeff"
RAW_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
MRPC_RAW_TRAIN = (
    BOM
    + RAW_HEADER
    + "1\t101\t102\tA cat sat .\tThe cat sat .\n"
    + "0\t201\t202\tIt rained .\tIt was sunny .\r\n"
    + "1\t301\t302\tShe left early .\tShe departed early .\n"
    + "0\t401\t402\tPrices rose .\tPrices fell .\n"
).encode()
MRPC_RAW_TEST = (
    BOM + RAW_HEADER + "1\t501\t502\tGood .\tFine .\n" + "0\t601\t602\tUp .\tDown .\n"
).encode()
MRPC_DEV_IDS = b"201\t202\n302\t301\n401\t402\n999\t998\n"
MRPC_EXPECTED = {
    "train.tsv": (
        BOM
        + RAW_HEADER
        + "1\t101\t102\tA cat sat .\tThe cat sat .\n"
        + "1\t301\t302\tShe left early .\tShe departed early .\n"
    ).encode(),
    "dev.tsv": (
        BOM
        + RAW_HEADER
        + "0\t201\t202\tIt rained .\tIt was sunny .\n"
        + "0\t401\t402\tPrices rose .\tPrices fell .\n"
    ).encode(),
    "test.tsv": (
        b"index\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        b"0\t501\t502\tGood .\tFine .\n"
        b"1\t601\t602\tUp .\tDown .\n"
    ),
}


# ----------------------------------------------------------------------- the server


@dataclass
class GlueServer:
    """Serves ``root`` at ``base_url``; counts requests and injects faults per URL path."""

    root: Path
    base_url: str = ""
    hits: Counter[str] = field(default_factory=Counter)
    faults: dict[str, list[int | str]] = field(default_factory=dict)

    def publish(self, path: str, data: bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def fail(self, path: str, *faults: int | str) -> None:
        """Answer the next requests for ``path`` with an HTTP status, "close", "half" or "stall"."""
        self.faults[path] = list(faults)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    def reset(self) -> None:
        shutil.rmtree(self.root)
        self.root.mkdir()
        self.hits.clear()
        self.faults.clear()


class _Handler(http.server.SimpleHTTPRequestHandler):
    glue: GlueServer

    def do_GET(self) -> None:
        path = self.path.lstrip("/")
        self.glue.hits[path] += 1
        pending = self.glue.faults.get(path)
        fault = pending.pop(0) if pending else None
        if fault == "close":  # promise 1000 bytes, send 10, hang up
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"PK" + b"\0" * 8)
            self.close_connection = True
            return
        if fault == "half":  # send half the body, then hold the connection for STALL_S
            body = (self.glue.root / path).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            time.sleep(STALL_S)
            self.close_connection = True
            return
        if fault == "stall":
            time.sleep(STALL_S)
        elif isinstance(fault, int):
            self.send_error(fault)
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that timed out leaves a broken pipe behind; that is expected


@pytest.fixture(scope="session")
def _server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlueServer]:
    glue = GlueServer(tmp_path_factory.mktemp("www"))
    handler = type("Handler", (_Handler,), {"glue": glue})
    httpd = _QuietServer(("127.0.0.1", 0), functools.partial(handler, directory=str(glue.root)))
    glue.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield glue
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def server(_server: GlueServer, monkeypatch: pytest.MonkeyPatch) -> GlueServer:
    _server.reset()
    monkeypatch.setattr(dg, "BACKOFF_S", 0.0)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv(dg.BASE_URL_ENV, raising=False)
    return _server


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "glue_data"


# ---------------------------------------------------------------------------- helpers


def task_zip(
    folder: str, files: dict[str, bytes], stored: bool = False, outside: tuple[str, ...] = ()
) -> bytes:
    """A GLUE-style zip: ``files`` under ``folder/``, plus empty members at ``outside``."""
    buf = io.BytesIO()
    compression = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in files.items():
            zf.writestr(f"{folder}/{name}", data)
        for name in outside:
            zf.writestr(name, b"")
    return buf.getvalue()


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) by relative path."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def entries(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, to catch leftovers such as empty temp dirs."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def rte_tree() -> dict[str, bytes]:
    return {f"RTE/{name}": data for name, data in RTE_FILES.items()}


def publish_mrpc_raw(server: GlueServer) -> None:
    server.publish(dg.MRPC_TRAIN, MRPC_RAW_TRAIN)
    server.publish(dg.MRPC_TEST, MRPC_RAW_TEST)
    server.publish(dg.MRPC_DEV_IDS, MRPC_DEV_IDS)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------- 1. zip tasks and AX


def test_cli_downloads_zip_task_and_diagnostic(
    server: GlueServer, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.publish(RTE_ZIP, task_zip("RTE", RTE_FILES))
    server.publish(AX_TSV, AX_BYTES)
    argv = ["--data_dir", str(data_dir), "--tasks", "RTE,diagnostic"]
    assert dg.main([*argv, "--base_url", server.base_url]) == 0
    assert tree(data_dir) == {**rte_tree(), "diagnostic/diagnostic.tsv": AX_BYTES}
    assert entries(data_dir) == sorted(["RTE", "diagnostic", *tree(data_dir)])
    assert capsys.readouterr().out.splitlines() == [
        "Downloading and extracting RTE...",
        "\tCompleted!",
        "Downloading and extracting diagnostic...",
        "\tCompleted!",
    ]


@pytest.mark.parametrize(
    ("task", "remote", "folder", "files"),
    [
        ("CoLA", "glue/data/CoLA.zip", "CoLA", SPLITS),
        ("SST", "glue/data/SST-2.zip", "SST-2", SPLITS),
        ("SST-2", "glue/data/SST-2.zip", "SST-2", SPLITS),
        ("QQP", "glue/data/QQP-clean.zip", "QQP", SPLITS),
        ("STS-B", "glue/data/STS-B.zip", "STS-B", SPLITS),
        ("MNLI", "glue/data/MNLI.zip", "MNLI", MNLI_SPLITS),
        ("SNLI", "glue/data/SNLI.zip", "SNLI", SPLITS),
        ("QNLI", "glue/data/QNLIv2.zip", "QNLI", SPLITS),
        ("WNLI", "glue/data/WNLI.zip", "WNLI", SPLITS),
    ],
)
def test_each_zip_task_uses_its_archive_and_folder(
    server: GlueServer,
    data_dir: Path,
    task: str,
    remote: str,
    folder: str,
    files: tuple[str, ...],
) -> None:
    contents = {name: f"{folder} {name}\n".encode() for name in files}
    junk = (f"__MACOSX/{folder}/._train.tsv", "README.txt")  # must not be extracted
    server.publish(remote, task_zip(folder, {**contents, "original/notes.txt": b"x"}, outside=junk))
    assert not dg.task_is_complete(task, data_dir)
    assert dg.ensure_task_data(task, data_dir, base_url=server.base_url) == data_dir / folder
    expected = {f"{folder}/{n}": data for n, data in contents.items()}
    assert entries(data_dir) == sorted(
        [folder, f"{folder}/original", *expected, f"{folder}/original/notes.txt"]
    )
    assert tree(data_dir) == {**expected, f"{folder}/original/notes.txt": b"x"}
    assert dg.task_is_complete(task, data_dir)
    assert server.hits == Counter({remote: 1})


# ------------------------------------------------------------------------------ 2. MRPC


def test_mrpc_built_from_served_raw_files(
    server: GlueServer, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_mrpc_raw(server)
    argv = ["--data_dir", str(data_dir), "--tasks", "MRPC", "--base_url", server.base_url]
    assert dg.main(argv) == 0
    built = tree(data_dir / "MRPC")
    assert {name: built[name] for name in MRPC_EXPECTED} == MRPC_EXPECTED
    assert built["dev_ids.tsv"] == MRPC_DEV_IDS
    assert sorted(built) == [
        "dev.tsv",
        "dev_ids.tsv",
        "msr_paraphrase_test.txt",
        "msr_paraphrase_train.txt",
        "test.tsv",
        "train.tsv",
    ]
    assert entries(data_dir) == ["MRPC", *(f"MRPC/{name}" for name in sorted(built))]
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Processing MRPC..." and out[-1] == "\tCompleted!"


@pytest.mark.parametrize("local_ids", [None, "mrpc_dev_ids.tsv", "dev_ids.tsv"])
def test_mrpc_from_path_to_mrpc(
    server: GlueServer, data_dir: Path, tmp_path: Path, local_ids: str | None
) -> None:
    """Raw files come from the folder; dev ids too when it has them, else from the server."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "msr_paraphrase_train.txt").write_bytes(MRPC_RAW_TRAIN)
    (raw / "msr_paraphrase_test.txt").write_bytes(MRPC_RAW_TEST)
    if local_ids:
        (raw / local_ids).write_bytes(MRPC_DEV_IDS)
    server.publish(dg.MRPC_DEV_IDS, MRPC_DEV_IDS)
    dg.ensure_task_data("MRPC", data_dir, path_to_mrpc=str(raw), base_url=server.base_url)
    assert tree(data_dir / "MRPC") == {**MRPC_EXPECTED, "dev_ids.tsv": MRPC_DEV_IDS}
    assert server.hits.total() == (0 if local_ids else 1)


def test_mrpc_path_without_raw_files_is_a_clear_error(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="msr_paraphrase_train.txt"):
        dg.ensure_task_data("MRPC", data_dir, path_to_mrpc=str(tmp_path), base_url="http://x")
    assert entries(data_dir) == []


@needs_shared
@pytest.mark.parametrize("source", ["served", "path_to_mrpc"])
def test_mrpc_matches_classic_glue_files(
    server: GlueServer, data_dir: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    raw = SHARED / "glue_raw" / "MRPC"
    if source == "served":  # real files over HTTP, checked against the published sha256s
        server.publish(dg.MRPC_TRAIN, (raw / "msr_paraphrase_train.txt").read_bytes())
        server.publish(dg.MRPC_TEST, (raw / "msr_paraphrase_test.txt").read_bytes())
        server.publish(dg.MRPC_DEV_IDS, (raw / "mrpc_dev_ids.tsv").read_bytes())
        known = {
            url.replace(dg.DEFAULT_BASE_URL, server.base_url): entry
            for url, entry in dg.KNOWN_DOWNLOADS.items()
        }
        monkeypatch.setattr(dg, "KNOWN_DOWNLOADS", known)
        dg.ensure_task_data("MRPC", data_dir, base_url=server.base_url)
        assert server.hits.total() == 3
    else:  # fully offline: the folder also holds mrpc_dev_ids.tsv
        dg.ensure_task_data("MRPC", data_dir, path_to_mrpc=str(raw), base_url=closed_port_url())
    for name in SPLITS:
        expected = (SHARED / "glue_data" / "MRPC" / name).read_bytes()
        assert (data_dir / "MRPC" / name).read_bytes() == expected, name


@needs_shared
def test_diagnostic_matches_published_checksum(
    server: GlueServer, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = (SHARED / "glue_data" / "diagnostic" / "diagnostic.tsv").read_bytes()
    server.publish(AX_TSV, real)
    entry = dg.KNOWN_DOWNLOADS[f"{dg.DEFAULT_BASE_URL}/{AX_TSV}"]
    monkeypatch.setitem(dg.KNOWN_DOWNLOADS, server.url(AX_TSV), entry)
    dg.ensure_task_data("AX", data_dir, base_url=server.base_url)
    assert (data_dir / "diagnostic" / "diagnostic.tsv").read_bytes() == real


# -------------------------------------------------------------- 3. complete tasks skip


@pytest.mark.parametrize("task", ["RTE", "MRPC", "diagnostic"])
def test_complete_task_is_skipped_without_requests(
    server: GlueServer, data_dir: Path, capsys: pytest.CaptureFixture[str], task: str
) -> None:
    server.publish(RTE_ZIP, task_zip("RTE", RTE_FILES))
    server.publish(AX_TSV, AX_BYTES)
    publish_mrpc_raw(server)
    first = dg.ensure_task_data(task, data_dir, base_url=server.base_url)
    assert server.hits.total() > 0
    server.hits.clear()
    before = tree(data_dir)
    capsys.readouterr()
    assert dg.ensure_task_data(task, data_dir, base_url=server.base_url) == first
    assert server.hits.total() == 0
    assert tree(data_dir) == before
    assert capsys.readouterr().out.startswith(f"Skipping {task}")


def test_incomplete_task_folder_is_replaced(server: GlueServer, data_dir: Path) -> None:
    (data_dir / "RTE").mkdir(parents=True)
    (data_dir / "RTE" / "train.tsv").write_bytes(b"stale")
    assert not dg.task_is_complete("RTE", data_dir)
    server.publish(RTE_ZIP, task_zip("RTE", RTE_FILES))
    dg.ensure_task_data("RTE", data_dir, base_url=server.base_url)
    assert tree(data_dir) == rte_tree()


def test_folder_completed_meanwhile_by_another_process_is_kept(
    server: GlueServer, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.publish(RTE_ZIP, task_zip("RTE", RTE_FILES))
    download = dg._download

    def download_while_another_worker_finishes(url: str, dest: Path) -> None:
        download(url, dest)
        for name in SPLITS:
            (data_dir / "RTE").mkdir(exist_ok=True)
            (data_dir / "RTE" / name).write_bytes(b"theirs")

    monkeypatch.setattr(dg, "_download", download_while_another_worker_finishes)
    dg.ensure_task_data("RTE", data_dir, base_url=server.base_url)
    assert entries(data_dir) == ["RTE", *(f"RTE/{name}" for name in sorted(SPLITS))]
    assert set(tree(data_dir).values()) == {b"theirs"}


def test_reinstalling_over_a_complete_folder_never_hides_a_file(tmp_path: Path) -> None:
    """Nodes sharing a data_dir may each install the task; one that has already seen it
    complete must keep finding every file, whole, while the others install theirs."""
    dest = tmp_path / "RTE"
    dest.mkdir()
    for name, body in RTE_FILES.items():
        (dest / name).write_bytes(body)
    done, seen = threading.Event(), []

    def read_while_installing() -> None:
        while not done.is_set():
            try:
                seen.append({name: (dest / name).read_bytes() for name in RTE_FILES})
            except OSError as error:
                seen.append(error)

    reader = threading.Thread(target=read_while_installing)
    reader.start()
    try:
        for round_ in range(200):
            built = tmp_path / f"built{round_}"
            built.mkdir()
            for name, body in RTE_FILES.items():
                (built / name).write_bytes(body)
            dg._install(built, dest)
    finally:
        done.set()
        reader.join()
    assert seen and all(files == RTE_FILES for files in seen)
    assert tree(dest) == RTE_FILES


# ------------------------------------------------------------------ 4. corrupt archives


def _crc_broken_zip() -> bytes:
    good = task_zip("RTE", RTE_FILES, stored=True)
    return good.replace(b"A dog ran.", b"A cat ran.")


@pytest.mark.parametrize(
    ("archive", "complaint"),
    [
        (task_zip("RTE", RTE_FILES)[:300], "not a readable zip"),
        (_crc_broken_zip(), "CRC"),
        (task_zip("RTE", {"train.tsv": b"a\n", "dev.tsv": b"b\n"}), "RTE/test.tsv"),
        (b"<html>Access denied</html>", "not a readable zip"),
    ],
    ids=["truncated", "bad-crc", "missing-split", "not-a-zip"],
)
def test_bad_archive_leaves_nothing_then_good_one_installs(
    server: GlueServer, data_dir: Path, archive: bytes, complaint: str
) -> None:
    server.publish(RTE_ZIP, archive)
    with pytest.raises(dg.DownloadError, match="RTE.zip") as err:
        dg.ensure_task_data("RTE", data_dir, base_url=server.base_url)
    assert complaint in str(err.value)
    assert entries(data_dir) == []
    server.publish(RTE_ZIP, task_zip("RTE", RTE_FILES))
    dg.ensure_task_data("RTE", data_dir, base_url=server.base_url)
    assert tree(data_dir) == rte_tree()


# -------------------------------------------------------------------- 5. HTTP failures


@pytest.mark.parametrize("status", [404, 403])
def test_client_error_is_not_retried(server: GlueServer, data_dir: Path, status: int) -> None:
    server.publish(RTE_ZIP, task_zip("RTE", RTE_FILES))
    server.fail(RTE_ZIP, status)
    with pytest.raises(dg.DownloadError) as err:
        dg.ensure_task_data("RTE", data_dir, base_url=server.base_url)
    assert server.url(RTE_ZIP) in str(err.value) and f"HTTP {status}" in str(err.value)
    assert server.hits == Counter({RTE_ZIP: 1})
    assert entries(data_dir) == []


@pytest.mark.parametrize("faults", [(503,), (500,), (429,), ("close",), (503, "close")], ids=str)
def test_transient_failures_are_retried(
    server: GlueServer, data_dir: Path, faults: tuple[int | str, ...]
) -> None:
    server.publish(RTE_ZIP, task_zip("RTE", RTE_FILES))
    server.fail(RTE_ZIP, *faults)
    dg.ensure_task_data("RTE", data_dir, base_url=server.base_url)
    assert tree(data_dir) == rte_tree()
    assert server.hits == Counter({RTE_ZIP: len(faults) + 1})


def test_retries_are_bounded(
    server: GlueServer, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dg, "MAX_ATTEMPTS", 3)
    server.publish(RTE_ZIP, task_zip("RTE", RTE_FILES))
    server.fail(RTE_ZIP, 503, 503, 503)
    with pytest.raises(dg.DownloadError, match="after 3 attempts: HTTP 503") as err:
        dg.ensure_task_data("RTE", data_dir, base_url=server.base_url)
    assert server.url(RTE_ZIP) in str(err.value)
    assert server.hits == Counter({RTE_ZIP: 3})
    assert entries(data_dir) == []


def test_refused_connection_says_network_unreachable(
    server: GlueServer, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dg, "MAX_ATTEMPTS", 2)
    base = closed_port_url()
    with pytest.raises(dg.DownloadError) as err:
        dg.ensure_task_data("RTE", data_dir, base_url=base)
    message = str(err.value)
    assert f"{base}/{RTE_ZIP}" in message
    assert "could not connect" in message and "network may be unreachable" in message
    assert "--path-to-mrpc" in message and "bind-mount" in message
    assert entries(data_dir) == []


def test_stalled_server_times_out(
    server: GlueServer, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dg, "TIMEOUT_S", 0.2)
    monkeypatch.setattr(dg, "MAX_ATTEMPTS", 2)
    server.publish(AX_TSV, AX_BYTES)
    server.fail(AX_TSV, "stall", "stall")
    started = time.monotonic()
    with pytest.raises(dg.DownloadError, match="timed out"):
        dg.ensure_task_data("diagnostic", data_dir, base_url=server.base_url)
    assert time.monotonic() - started < 2 * STALL_S
    assert server.hits == Counter({AX_TSV: 2})
    assert entries(data_dir) == []


def test_download_killed_midway_is_not_trusted_and_the_next_run_installs(
    server: GlueServer, data_dir: Path
) -> None:
    server.publish(RTE_ZIP, task_zip("RTE", RTE_FILES))
    server.fail(RTE_ZIP, "half")
    command = [sys.executable, "download_glue_data.py", "--data_dir", str(data_dir)]
    command += ["--tasks", "RTE", "--base_url", server.base_url]
    run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(data_dir.glob(".RTE.*/RTE.zip")) and time.monotonic() < deadline:
        time.sleep(0.005)
    run.kill()  # SIGKILL while the archive is arriving
    assert run.wait() == -signal.SIGKILL
    assert not dg.task_is_complete("RTE", data_dir) and not (data_dir / "RTE").exists()
    assert all(name.startswith(".RTE.") for name in entries(data_dir))  # only its staging
    dg.ensure_task_data("RTE", data_dir, base_url=server.base_url)
    assert tree(data_dir / "RTE") == RTE_FILES
    assert server.hits == Counter({RTE_ZIP: 2})


# -------------------------------------------------------------- 6. task names, base URL


def test_unknown_task_cli_lists_choices(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        dg.main(["--data_dir", str(data_dir), "--tasks", "RTE,Foo"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'Foo'" in err and all(task in err for task in dg.TASKS)
    assert not data_dir.exists()


def test_unknown_task_module_raises_value_error(data_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"Unknown GLUE task 'Foo'.*CoLA, SST, MRPC"):
        dg.ensure_task_data("Foo", data_dir)


@pytest.mark.parametrize(
    ("name", "task"),
    [("SST-2", "SST"), ("sts-b", "STS"), ("AX", "diagnostic"), ("mrpc", "MRPC")],
)
def test_task_aliases(name: str, task: str) -> None:
    assert dg.canonical_task(name) == task


def test_cli_all_means_every_task(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    seen: list[str] = []
    monkeypatch.setattr(dg, "ensure_task_data", lambda task, *args: seen.append(task))
    assert dg.main(["--data_dir", str(data_dir), "--tasks", "all"]) == 0
    assert seen == list(dg.TASKS)
    assert dg.TASKS == (
        "CoLA", "SST", "MRPC", "QQP", "STS", "MNLI", "SNLI", "QNLI", "RTE", "WNLI", "diagnostic",
    )  # fmt: skip


def test_base_url_from_env(
    server: GlueServer, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.publish(RTE_ZIP, task_zip("RTE", RTE_FILES))
    monkeypatch.setenv("GLUE_BASE_URL", server.base_url + "/")
    dg.ensure_task_data("RTE", data_dir)
    assert server.hits == Counter({RTE_ZIP: 1})


def test_base_url_flag_beats_env(
    server: GlueServer, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.publish(RTE_ZIP, task_zip("RTE", RTE_FILES))
    monkeypatch.setenv("GLUE_BASE_URL", closed_port_url())
    argv = ["--data_dir", str(data_dir), "--tasks", "RTE", "--base_url", server.base_url]
    assert dg.main(argv) == 0
    assert tree(data_dir) == rte_tree()


def test_cli_reports_download_error(
    server: GlueServer, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--data_dir", str(data_dir), "--tasks", "RTE", "--base_url", server.base_url]
    assert dg.main(argv) == 1
    assert capsys.readouterr().err.startswith(f"error: Downloading {server.url(RTE_ZIP)}")


def test_default_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLUE_BASE_URL", raising=False)
    assert dg._resolve_base_url(None) == "https://dl.fbaipublicfiles.com"


# -------------------------------------------------------------------- 7. known sha256


@pytest.mark.parametrize(
    ("task", "remote", "data"),
    [("RTE", RTE_ZIP, task_zip("RTE", RTE_FILES)), ("diagnostic", AX_TSV, AX_BYTES)],
)
@pytest.mark.parametrize("wrong", ["sha256", "size"])
def test_checksum_mismatch_installs_nothing(
    server: GlueServer,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    task: str,
    remote: str,
    data: bytes,
    wrong: str,
) -> None:
    server.publish(remote, data)
    size, sha256 = len(data), hashlib.sha256(data).hexdigest()
    bad = (size, "0" * 64) if wrong == "sha256" else (size + 1, sha256)
    monkeypatch.setitem(dg.KNOWN_DOWNLOADS, server.url(remote), bad)
    with pytest.raises(dg.DownloadError, match="published checksum") as err:
        dg.ensure_task_data(task, data_dir, base_url=server.base_url)
    assert Path(remote).name in str(err.value) and sha256 in str(err.value)
    assert entries(data_dir) == []
    monkeypatch.setitem(dg.KNOWN_DOWNLOADS, server.url(remote), (size, sha256))
    dg.ensure_task_data(task, data_dir, base_url=server.base_url)
    assert dg.task_is_complete(task, data_dir)


def test_known_checksums_cover_every_published_file() -> None:
    remotes = [f"glue/data/{n}" for n in ("CoLA.zip", "SST-2.zip", "QQP-clean.zip")]
    remotes += [f"glue/data/{n}" for n in ("STS-B.zip", "MNLI.zip", "QNLIv2.zip", "RTE.zip")]
    remotes += ["glue/data/WNLI.zip", AX_TSV, dg.MRPC_DEV_IDS, dg.MRPC_TRAIN, dg.MRPC_TEST]
    expected = {f"https://dl.fbaipublicfiles.com/{r}" for r in remotes}
    assert set(dg.KNOWN_DOWNLOADS) == expected
    for size, sha256 in dg.KNOWN_DOWNLOADS.values():
        assert size > 0 and len(sha256) == 64 and int(sha256, 16) >= 0

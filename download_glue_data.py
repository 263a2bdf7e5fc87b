"""Download the GLUE data into the layout of the classic ``download_glue_data.py``.

Each task lands in ``<data_dir>/<folder>/`` (CoLA, SST-2, MRPC, QQP, STS-B, MNLI, SNLI,
QNLI, RTE, WNLI; the diagnostic set as ``diagnostic/diagnostic.tsv``). MRPC is rebuilt
from the SentEval copies of the Microsoft files and GLUE's dev ids exactly as the original
script did, so ``MRPC/{train,dev,test}.tsv`` are byte-identical to the classic ones.

Downloads are streamed with a timeout and retried with backoff on transient failures
(connection errors, timeouts, HTTP 5xx and 429). Files with a published size and sha256
(``KNOWN_DOWNLOADS``) are checked, and zip archives are tested before anything is
extracted. Every task is staged in a temporary folder inside ``data_dir`` and moved into
place in one rename, so a task folder is either complete or absent. Complete tasks are
skipped; an incomplete task folder is replaced.

Commands::

    python download_glue_data.py --data-dir glue_data --tasks all
    python download_glue_data.py --data-dir glue_data --tasks CoLA,MRPC,RTE
    python download_glue_data.py --data-dir glue_data --tasks MRPC --path-to-mrpc DIR
    python download_glue_data.py --data-dir glue_data --tasks RTE --base-url URL

``DIR`` holds ``msr_paraphrase_train.txt`` and ``msr_paraphrase_test.txt`` and, optionally,
``mrpc_dev_ids.tsv`` or ``dev_ids.tsv`` (then MRPC needs no network at all). The server
defaults to ``$GLUE_BASE_URL``, else https://dl.fbaipublicfiles.com; ``--base-url`` wins.

As a module: ``ensure_task_data("RTE", "glue_data")`` returns ``glue_data/RTE``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import requests
import tqdm

import constants

DEFAULT_BASE_URL = "https://dl.fbaipublicfiles.com"
BASE_URL_ENV = "GLUE_BASE_URL"

# Network behaviour.
TIMEOUT_S: float = 60.0  # connect and per-read timeout of one request, seconds
MAX_ATTEMPTS = 4  # tries per file before giving up on transient failures
BACKOFF_S: float = 1.0  # wait before the first retry, seconds; doubled for each further one
CHUNK_BYTES = 1 << 20  # streaming chunk size
_RETRY_STATUSES = frozenset({429})  # retried on top of every 5xx

MRPC_DEV_IDS = "glue/data/mrpc_dev_ids.tsv"
MRPC_TRAIN = "senteval/senteval_data/msr_paraphrase_train.txt"
MRPC_TEST = "senteval/senteval_data/msr_paraphrase_test.txt"
_MRPC_LOCAL_DEV_IDS = ("mrpc_dev_ids.tsv", "dev_ids.tsv")  # looked for in --path-to-mrpc
_MRPC_TEST_HEADER = "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n"

_OFFLINE_HINT = (
    " The network may be unreachable from here. Download the data on a machine with access"
    " and copy or bind-mount it as the data_dir (<data_dir>/<TASK>/*.tsv), or, for MRPC,"
    " pass --path-to-mrpc DIR holding msr_paraphrase_train.txt, msr_paraphrase_test.txt"
    " and mrpc_dev_ids.tsv."
)


@dataclass(frozen=True)
class _Task:
    folder: str  # folder under data_dir, also the top folder inside the zip
    files: tuple[str, ...]  # files that make the task folder complete
    remote: str  # path below the base URL: a zip, or the one TSV to fetch ("" for MRPC)


def _glue_task(name: str) -> _Task:
    """A GLUE task's folder, files and download, as constants.TASKS has them."""
    task = constants.TASKS[name]
    splits = (task.train, *task.dev.values(), *task.test.values())
    files = tuple(s.path.split("/", 1)[1] for s in splits if s.path.startswith(f"{name}/"))
    return _Task(name, files, task.download)


# The original script's task names, in its order. SNLI is no GLUE task (no trial reads it), and
# the diagnostic set is MNLI's third test file, served on its own.
_TASKS: dict[str, _Task] = {
    "CoLA": _glue_task("CoLA"),
    "SST": _glue_task("SST-2"),
    "MRPC": _glue_task("MRPC"),  # built from MRPC_* files by _build_mrpc
    "QQP": _glue_task("QQP"),
    "STS": _glue_task("STS-B"),
    "MNLI": _glue_task("MNLI"),
    "SNLI": _Task("SNLI", ("train.tsv", "dev.tsv", "test.tsv"), "glue/data/SNLI.zip"),
    "QNLI": _glue_task("QNLI"),
    "RTE": _glue_task("RTE"),
    "WNLI": _glue_task("WNLI"),
    "diagnostic": _Task("diagnostic", ("diagnostic.tsv",), "glue/data/AX.tsv"),
}
TASKS: tuple[str, ...] = tuple(_TASKS)
_ALIASES = {"SST-2": "SST", "STS-B": "STS", "AX": "diagnostic"}
_LOOKUP = {t.lower(): t for t in TASKS} | {a.lower(): t for a, t in _ALIASES.items()}

# Size in bytes and sha256 of the published files, keyed by URL; from the
# `download_checksums` of Hugging Face datasets' glue/dataset_infos.json. SNLI has none.
KNOWN_DOWNLOADS: dict[str, tuple[int, str]] = {
    f"{DEFAULT_BASE_URL}/{path}": (size, sha256)
    for path, size, sha256 in (
        (
            "glue/data/CoLA.zip",
            376971,
            "f212fcd832b8f7b435fb991f101abf89f96b933ab400603bf198960dfc32cbff",
        ),
        (
            "glue/data/SST-2.zip",
            7439277,
            "d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa",
        ),
        (
            "glue/data/QQP-clean.zip",
            41696084,
            "40e7c862c04eb26ee04b67fd900e76c45c6ba8e6d8fab4f8f1f8072a1a3fbae0",
        ),
        (
            "glue/data/STS-B.zip",
            802872,
            "e60a6393de5a8b5b9bac5020a1554b54e3691f9d600b775bd131e613ac179c85",
        ),
        (
            "glue/data/MNLI.zip",
            312783507,
            "e7c1d896d26ed6caf700110645df426cc2d8ebf02a5ab743d5a5c68ac1c83633",
        ),
        (
            "glue/data/QNLIv2.zip",
            10627589,
            "e634e78627a29adaecd4f955359b22bf5e70f2cbd93b493f2d624138a0c0e5f5",
        ),
        (
            "glue/data/RTE.zip",
            697150,
            "6bf86de103ecd335f3441bd43574d23fef87ecc695977a63b82d5efb206556ee",
        ),
        (
            "glue/data/WNLI.zip",
            28999,
            "ae0e8e4d16f4d46d4a0a566ec7ecceccfd3fbfaa4a7a4b4e02848c0f2561ac46",
        ),
        (
            "glue/data/AX.tsv",
            222257,
            "0e13510b1bb14436ff7e2ee82338f0efb0133ecf2e73507a697dc210db3f05fd",
        ),
        (
            MRPC_DEV_IDS,
            6222,
            "971d7767d81b997fd9060ade0ec23c4fc31cbb226a55d1bd4a1bac474eb81dc7",
        ),
        (
            MRPC_TRAIN,
            1047044,
            "60a9b09084528f0673eedee2b69cb941920f0b8cd0eeccefc464a98768457f89",
        ),
        (
            MRPC_TEST,
            441275,
            "a04e271090879aaba6423d65b94950c089298587d9c084bf9cd7439bd785f784",
        ),
    )
}


class DownloadError(RuntimeError):
    """A file could not be fetched, or what arrived failed verification."""


class _TransientError(Exception):
    """A failure worth retrying (connection, timeout, truncated body, HTTP 5xx/429)."""


# ----------------------------------------------------------------------------- tasks


def canonical_task(task: str) -> str:
    """Map a CLI name, folder name or alias (any case) to its name in ``TASKS``."""
    try:
        return _LOOKUP[task.lower()]
    except KeyError:
        raise ValueError(
            f"Unknown GLUE task {task!r}. Choose from {', '.join(TASKS)}"
            f" (aliases: {', '.join(_ALIASES)})."
        ) from None


def task_is_complete(task: str, data_dir: str | os.PathLike[str]) -> bool:
    """Whether ``<data_dir>/<folder>`` already holds every file the task needs."""
    spec = _TASKS[canonical_task(task)]
    folder = Path(data_dir) / spec.folder
    return all((folder / name).is_file() for name in spec.files)


def ensure_task_data(
    task: str,
    data_dir: str | os.PathLike[str],
    path_to_mrpc: str = "",
    base_url: str | None = None,
) -> Path:
    """Download ``task`` into ``data_dir`` unless it is complete; return its folder."""
    name = canonical_task(task)
    spec = _TASKS[name]
    data_dir = Path(data_dir)
    dest = data_dir / spec.folder
    if task_is_complete(name, data_dir):
        print(f"Skipping {name}: {dest} is already complete.")
        return dest
    data_dir.mkdir(parents=True, exist_ok=True)
    base = _resolve_base_url(base_url)
    print(f"Processing {name}..." if name == "MRPC" else f"Downloading and extracting {name}...")
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.folder}.", suffix=".tmp", dir=data_dir))
    try:
        built = staging / spec.folder
        if name == "MRPC":
            _build_mrpc(built, base, path_to_mrpc)
        elif spec.remote.endswith(".zip"):
            _fetch_zip_task(spec, base, staging)
        else:
            built.mkdir()
            _download(f"{base}/{spec.remote}", built / spec.files[0])
        if not task_is_complete(name, data_dir):  # another process may have finished first
            _install(built, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print("\tCompleted!")
    return dest


def _resolve_base_url(base_url: str | None) -> str:
    return (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


def _install(built: Path, dest: Path) -> None:
    """Move a fully built task folder into place.

    Over an existing folder (incomplete, or completed meanwhile by another node sharing the
    data_dir) it moves file by file with os.replace, so a process that has seen the task
    complete never finds one of its files missing or partial.
    """
    try:
        os.rename(built, dest)  # fails unless dest is absent or an empty folder
        return
    except OSError:
        if not dest.is_dir():
            raise
    for path in sorted(built.rglob("*")):
        if path.is_file():
            target = dest / path.relative_to(built)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)


def _fetch_zip_task(spec: _Task, base: str, staging: Path) -> None:
    """Download, verify and extract the task's zip; its folder ends up in ``staging``."""
    url = f"{base}/{spec.remote}"
    archive = staging / Path(spec.remote).name
    _download(url, archive)
    _check_zip(archive, url, spec)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(staging)


def _check_zip(archive: Path, url: str, spec: _Task) -> None:
    """Test every member's CRC and that the task's TSVs are in its folder."""
    try:
        with zipfile.ZipFile(archive) as zf:
            bad_member = zf.testzip()
            names = zf.namelist()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise DownloadError(
            f"{archive.name} from {url} is not a readable zip archive ({exc}); it may be"
            " truncated or corrupt. Nothing was installed; run again to retry."
        ) from exc
    if bad_member is not None:
        raise DownloadError(
            f"{archive.name} from {url} is corrupt: member {bad_member} fails its CRC check."
            " Nothing was installed; run again to retry."
        )
    missing = sorted({f"{spec.folder}/{f}" for f in spec.files} - set(names))
    if missing:
        raise DownloadError(
            f"{archive.name} from {url} lacks {', '.join(missing)}; the server's layout may"
            " have changed. Nothing was installed."
        )


# ------------------------------------------------------------------------------ MRPC


def _build_mrpc(out: Path, base: str, path_to_mrpc: str) -> None:
    """Build MRPC/{train,dev,test}.tsv in ``out`` the way the original script did."""
    out.mkdir()
    if path_to_mrpc:
        train_raw, test_raw = _local_mrpc_raw(Path(path_to_mrpc))
    else:
        print(f"Local MRPC data not specified, downloading data from {base}/{MRPC_TRAIN}")
        train_raw, test_raw = out / Path(MRPC_TRAIN).name, out / Path(MRPC_TEST).name
        _download(f"{base}/{MRPC_TRAIN}", train_raw)
        _download(f"{base}/{MRPC_TEST}", test_raw)
    _fetch_mrpc_dev_ids(out / "dev_ids.tsv", base, path_to_mrpc)
    with open(out / "dev_ids.tsv", encoding="utf8") as fh:
        dev_ids = {tuple(line.strip().split("\t")) for line in fh}
    _split_mrpc_train(train_raw, dev_ids, out)
    _write_mrpc_test(test_raw, out / "test.tsv")


def _local_mrpc_raw(folder: Path) -> tuple[Path, Path]:
    paths = folder / Path(MRPC_TRAIN).name, folder / Path(MRPC_TEST).name
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"--path-to-mrpc {folder} must hold msr_paraphrase_train.txt and"
            f" msr_paraphrase_test.txt; missing: {', '.join(missing)}."
        )
    return paths


def _fetch_mrpc_dev_ids(dest: Path, base: str, path_to_mrpc: str) -> None:
    """Copy the dev ids from ``path_to_mrpc`` when they are there, else download them."""
    if path_to_mrpc:
        for name in _MRPC_LOCAL_DEV_IDS:
            local = Path(path_to_mrpc) / name
            if local.is_file():
                shutil.copyfile(local, dest)
                return
    _download(f"{base}/{MRPC_DEV_IDS}", dest)


def _split_mrpc_train(raw: Path, dev_ids: set[tuple[str, ...]], out: Path) -> None:
    with (
        open(raw, encoding="utf8") as src,
        open(out / "train.tsv", "w", encoding="utf8", newline="") as train,
        open(out / "dev.tsv", "w", encoding="utf8", newline="") as dev,
    ):
        header = src.readline()
        train.write(header)
        dev.write(header)
        for row in src:
            label, id1, id2, s1, s2 = row.strip().split("\t")
            target = dev if (id1, id2) in dev_ids else train
            target.write(f"{label}\t{id1}\t{id2}\t{s1}\t{s2}\n")


def _write_mrpc_test(raw: Path, dest: Path) -> None:
    with (
        open(raw, encoding="utf8") as src,
        open(dest, "w", encoding="utf8", newline="") as test,
    ):
        src.readline()
        test.write(_MRPC_TEST_HEADER)
        for idx, row in enumerate(src):
            _label, id1, id2, s1, s2 = row.strip().split("\t")
            test.write(f"{idx}\t{id1}\t{id2}\t{s1}\t{s2}\n")


# -------------------------------------------------------------------------- download


def _download(url: str, dest: Path) -> None:
    """Fetch ``url`` into ``dest``, retrying transient failures; verify known files."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            size, sha256 = _fetch_once(url, dest)
        except _TransientError as exc:
            if attempt == MAX_ATTEMPTS:
                raise _give_up(url, exc) from exc
            time.sleep(BACKOFF_S * 2 ** (attempt - 1))
        else:
            _verify(url, dest, size, sha256)
            return


def _fetch_once(url: str, dest: Path) -> tuple[int, str]:
    """One streamed GET into ``dest``; return the byte count and sha256 of the body."""
    digest, size = hashlib.sha256(), 0
    try:
        with requests.get(url, stream=True, timeout=TIMEOUT_S) as resp:
            _check_status(url, resp)
            total = int(resp.headers.get("content-length", 0)) or None
            name = url.rsplit("/", 1)[-1]
            bar_args = {"unit": "B", "unit_scale": True, "leave": False, "disable": None}
            with open(dest, "wb") as fh, tqdm.tqdm(total=total, desc=name, **bar_args) as bar:
                for chunk in resp.iter_content(CHUNK_BYTES):
                    fh.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
    except (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
    ) as exc:
        raise _TransientError(str(exc)) from exc
    return size, digest.hexdigest()


def _check_status(url: str, resp: requests.Response) -> None:
    code = resp.status_code
    if code >= 500 or code in _RETRY_STATUSES:
        raise _TransientError(f"HTTP {code} {resp.reason}")
    if code != 200:
        raise DownloadError(f"Downloading {url} failed: HTTP {code} {resp.reason}.")


def _give_up(url: str, exc: _TransientError) -> DownloadError:
    cause = exc.__cause__
    network = isinstance(cause, (requests.ConnectionError, requests.Timeout))
    hint = _OFFLINE_HINT if network else ""
    what = "could not connect or timed out" if network else "failed"
    return DownloadError(f"Downloading {url} {what} after {MAX_ATTEMPTS} attempts: {exc}.{hint}")


def _verify(url: str, dest: Path, size: int, sha256: str) -> None:
    """Compare a download with ``KNOWN_DOWNLOADS``; files without an entry pass."""
    if url not in KNOWN_DOWNLOADS:
        return
    want_size, want_sha256 = KNOWN_DOWNLOADS[url]
    if (size, sha256) != (want_size, want_sha256):
        raise DownloadError(
            f"{dest.name} from {url} does not match its published checksum: got {size}"
            f" bytes, sha256 {sha256}; expected {want_size} bytes, sha256 {want_sha256}."
            " The download was corrupted or the file on the server changed. Nothing was"
            " installed."
        )


# ------------------------------------------------------------------------------- CLI


def _parse_tasks(parser: argparse.ArgumentParser, spec: str) -> list[str]:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if "all" in names:
        return list(TASKS)
    try:
        return list(dict.fromkeys(canonical_task(n) for n in names))
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Hyphens, as every CLI here spells its flags; the original underscores still work.
    parser.add_argument(
        "--data-dir", "--data_dir", default="glue_data", help="directory to save data to"
    )
    parser.add_argument(
        "--tasks",
        default="all",
        help=f"comma-separated tasks ({','.join(TASKS)}) or 'all'",
    )
    parser.add_argument(
        "--path-to-mrpc",
        "--path_to_mrpc",
        default="",
        help="directory holding msr_paraphrase_train.txt and msr_paraphrase_test.txt"
        " (and optionally mrpc_dev_ids.tsv); downloaded when not given",
    )
    parser.add_argument(
        "--base-url",
        "--base_url",
        default=None,
        help=f"server to download from (default: ${BASE_URL_ENV}, else {DEFAULT_BASE_URL})",
    )
    args = parser.parse_args(argv)
    for task in _parse_tasks(parser, args.tasks):
        try:
            ensure_task_data(task, args.data_dir, args.path_to_mrpc, args.base_url)
        except (DownloadError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

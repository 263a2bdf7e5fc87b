"""A task's files read as rows: UTF-8 text, tab- or comma-separated (or JSON lines), each row's
fields by column number or name, every mistake a DataError naming the file and line. Nothing
here loads torch: own data's labels are read from its training file before torch loads
(custom_task.infer_labels), and data.py featurizes what it reads.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import pathlib
import re
from collections.abc import Iterator

from constants import Split

logger = logging.getLogger(__name__)

# Control characters other than tab and line ends. Real text holds them: CoLA's train.tsv has
# backspaces inside three sentences and STS-B's a 0x12 where an apostrophe was. They are read
# as text (BERT's tokenizers drop them); only NUL marks a file as binary.
CONTROL = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]")
SEPARATED = {"csv": "comma-separated", "tsv": "tab-separated", "tsv_noquote": "tab-separated"}
# What read_fields' columns are called in data.custom; only custom files name their columns.
COLUMN_KEYS = ("text_a", "text_b", "label", "index")


class DataError(ValueError):
    """A data file that cannot be read as its task says; the message names the file and line."""


def read_text(path: pathlib.Path) -> str:
    """The file's text: UTF-8 (a BOM dropped), and no NUL byte, which only binary files hold."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 text (byte {raw[e.start]:#04x}); save the file as UTF-8"
        ) from None
    nul = text.find("\0")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise DataError(
            f"{path}:{line}: byte 0x00, which no text holds: this is a binary file, not a text file"
        )
    _note_control_characters(path, text)
    return text


def _note_control_characters(path: pathlib.Path, text: str) -> None:
    first = CONTROL.search(text)
    if first:
        line = text.count("\n", 0, first.start()) + 1
        count = len(CONTROL.findall(text, first.start()))
        logger.warning(
            f"{path}: {count} control character(s) read as text, the first "
            f"({ord(first.group()):#04x}) on line {line}"
        )


def read_rows(
    path: pathlib.Path, header: bool, skip_malformed: bool = False, format: str = "tsv_noquote"
) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) of a delimited file; every row must have the first row's width.

    GLUE files are tab-separated with no quoting (quotes are text), may start with a BOM
    (MRPC) and are read the same with LF or CRLF line ends. Rows of another width are an
    error, or are skipped with a warning where the task allows it (QQP). A row's line number
    is the line it starts on (a quoted field may span lines).
    """
    rows = delimited_rows(path, format)
    width, skipped = None, 0
    for line_number, row in rows:
        if width is None:
            width = len(row)
            if header:
                continue
        if len(row) == width:
            yield line_number, row
        elif skip_malformed:
            skipped += 1
        else:
            raise DataError(
                f"{path}:{line_number}: expected {width} {SEPARATED[format]} columns "
                f"(as in line 1), found {len(row)}"
            )
    if width is None:
        raise DataError(f"{path}: the file is empty")
    if skipped:
        logger.warning(f"{path}: skipped {skipped} malformed rows")


def delimited_rows(path: pathlib.Path, format: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of every row of a CSV or TSV file."""
    quoting = csv.QUOTE_NONE if format == "tsv_noquote" else csv.QUOTE_MINIMAL
    delimiter = "," if format == "csv" else "\t"
    lines = io.StringIO(read_text(path), newline="")
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting, strict=True)
    start = 1
    try:
        for row in reader:
            yield start, row
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{path}:{start}: {e}") from None


def read_fields(
    path: pathlib.Path, split: Split, skip_malformed: bool = False
) -> Iterator[tuple[int, list[str | None]]]:
    """(line number, [text_a, text_b, label, index]) of each row, None for columns the split
    does not have; columns named (not numbered) are looked up in the header or JSON object."""
    columns = [split.text_a, split.text_b, split.label, split.index]
    if split.format == "jsonl":
        yield from _jsonl_fields(path, columns)
        return
    rows = read_rows(path, False, skip_malformed, split.format)
    if isinstance(split.text_a, str):
        _, header = next(rows)
        columns = _column_indices(path, header, columns)
    elif split.header:
        next(rows)
    for line_number, row in rows:
        yield line_number, [row[c] if c is not None else None for c in columns]


def _column_indices(path: pathlib.Path, header: list[str], names: list) -> list[int | None]:
    missing = [name for name in names if name is not None and name not in header]
    if missing:
        raise DataError(
            f"{path}:1: no column {_named(names, missing)} in the header; "
            f"the columns are {', '.join(map(repr, header))}"
        )
    return [header.index(name) if name is not None else None for name in names]


def _jsonl_fields(path: pathlib.Path, keys: list) -> Iterator[tuple[int, list[str | None]]]:
    for line_number, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{line_number}: not JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{line_number}: expected a JSON object, found {line[:40]!r}")
        missing = [key for key in keys if key is not None and key not in record]
        if missing:
            raise DataError(
                f"{path}:{line_number}: no key {_named(keys, missing)}; "
                f"the keys are {', '.join(map(repr, record))}"
            )
        yield line_number, [_json_value(record, k, path, line_number) for k in keys]


def _named(columns: list, missing: list[str]) -> str:
    """The missing columns with the data.custom keys that name them: 'q2' (data.custom.text_b)."""
    keys = dict(zip(columns, COLUMN_KEYS, strict=True))
    return ", ".join(f"{name!r} (data.custom.{keys[name]})" for name in missing)


def _json_value(record: dict, key: str | None, path: pathlib.Path, line: int) -> str | None:
    """A JSON string as it is, a number or boolean as JSON writes it (1, 0.5, true)."""
    if key is None:
        return None
    value = record[key]
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (list, dict)):
        raise DataError(f"{path}:{line}: {key!r} is {json.dumps(value)[:40]}, not text or a number")
    return json.dumps(value)

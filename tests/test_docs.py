"""The documentation: README.md, docs/*.md and bench/README.md.

Every relative link reaches a file (and a `#anchor` a heading of it), the README stays one page,
and the README's hyperparameter table lists exactly the trial's keys with their defaults. Reads
files only: no model, no network, and no import of determined, torch or transformers (the
settings module the hyperparameter table is checked against imports none of them).
"""

from __future__ import annotations

import pathlib
import re

import pytest
import yaml

pytestmark = pytest.mark.smoke

REPO = pathlib.Path(__file__).resolve().parent.parent
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "bench" / "README.md"]
README_MAX_LINES = 200

LINK = re.compile(r"(?<!\\)!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+\1")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append(line)
    return lines


def links(text: str) -> list[str]:
    found = []
    for line in prose_lines(text):
        # A code span holds no link, but may be a link's text: [`a.py`](a.py).
        found += LINK.findall(CODE_SPAN.sub("code", line))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
    """Every heading's anchor in a Markdown file, repeats numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    result = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def test_slug_is_githubs():
    assert slug("Validation, checkpoint and report periods") == (
        "validation-checkpoint-and-report-periods"
    )
    assert slug("`packing` and CUDA graphs: 2x") == "packing-and-cuda-graphs-2x"
    assert slug("The whole of GLUE") == "the-whole-of-glue"


def test_links_are_found():
    text = "[a](x.md) ![b](img.png) [`c.py`](c.py#top) `[d](no.md)`\n```\n[e](no.md)\n```\n"
    assert links(text) == ["x.md", "img.png", "c.py#top"]


def test_pages_exist():
    for page in PAGES:
        assert page.is_file(), page


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: pathlib.Path):
    broken = []
    for target in links(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with that anchor in {file.name}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_readme_is_one_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def trial_hyperparameters() -> tuple[tuple[str, ...], dict]:
    """The required hyperparameters and the optional ones' defaults: settings.Hyperparameters'."""
    from bert_glue.trial import settings  # torch-free

    return settings.REQUIRED_HPARAMS, settings.OPTIONAL_HPARAMS


def readme_hyperparameter_table(column: int = 1) -> dict[str, str]:
    """key -> its cell in a column (1: default, 2: meaning) of the README's table under
    `## Hyperparameters`."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Hyperparameters\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert header == ["key", "default", "meaning"], header
    table = {}
    for row in rows[2:]:  # after the header and its |---| line
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        match = re.fullmatch(r"`([a-z_]+)`", cells[0])
        assert match, f"a row's key must be one `name`: {row}"
        assert len(cells) == 3, f"a row has three cells: {row}"
        assert match.group(1) not in table, f"{match.group(1)} twice"
        table[match.group(1)] = cells[column]
    return table


def same_value(a, b) -> bool:
    return type(a) is type(b) and a == b


def test_readme_hyperparameters_match_the_trial():
    required, optional = trial_hyperparameters()
    table = readme_hyperparameter_table()
    assert sorted(table) == sorted((*required, *optional)), (
        f"missing from README: {sorted(set(required) | set(optional) - set(table))}; "
        f"not the trial's: {sorted(set(table) - set(required) - set(optional))}"
    )
    for key in required:
        assert table[key] == "required", f"{key}: {table[key]!r}, expected required"
    for key, default in optional.items():
        cell = table[key]
        assert re.fullmatch(r"`[^`]+`", cell), f"{key}: default {cell!r} is not one `value`"
        shown = yaml.safe_load(cell.strip("`"))  # as the YAML config would read it
        assert same_value(shown, default), f"{key}: README {shown!r}, trial {default!r}"


def test_readme_says_what_each_hyperparameters_field_says_of_it():
    """The meaning column is each field's help (settings.key), word for word."""
    import dataclasses

    from bert_glue.trial import settings

    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(settings.Hyperparameters)}
    assert readme_hyperparameter_table(column=2) == helps

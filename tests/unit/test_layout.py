"""The project's shape: the classic example and thin command lines at the root, the rest in
bert_glue/. Read as source, nothing imported."""

from __future__ import annotations

import ast

import pytest
from conftest import REPO

CLASSIC = {"model_def.py", "data.py", "constants.py", "download_glue_data.py"}
CLIS = {"predict.py", "export.py", "glue_report.py"}
MODEL_DEF_MAX_LINES = 250


def test_the_root_holds_the_classic_example_and_the_command_lines():
    assert {path.name for path in REPO.glob("*.py")} == CLASSIC | CLIS


@pytest.mark.parametrize("name", sorted(CLIS))
def test_a_command_line_is_its_arguments_and_one_call(name: str):
    tree = ast.parse((REPO / name).read_text(encoding="utf-8"))
    defined = [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    ]
    assert defined == ["main"], f"{name}: move {defined} into bert_glue/"


def test_the_trial_reads_as_the_recipe():
    lines = (REPO / "model_def.py").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MODEL_DEF_MAX_LINES, f"model_def.py has {len(lines)} lines"

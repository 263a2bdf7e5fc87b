"""The project's shape: the classic example and thin command lines at the root, the rest in
bert_glue/. Read as source, nothing imported."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from conftest import REPO

CLASSIC = {"model_def.py", "data.py", "constants.py", "download_glue_data.py"}
CLIS = {"predict.py", "export.py", "glue_report.py"}


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


@pytest.mark.parametrize("name", sorted(CLIS | {"model_def.py", "download_glue_data.py"}))
def test_help_answers_before_torch_loads(name: str):
    probe = (
        f"import runpy, sys; sys.argv = [{name!r}, '--help']\n"
        f"try:\n    runpy.run_path({name!r}, run_name='__main__')\n"
        "except SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert f"usage: {name}" in done.stdout, done.stderr[-2000:]
    assert done.stdout.strip().endswith("exit 0 False")

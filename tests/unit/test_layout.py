"""The project's shape: the classic example and thin command lines at the root, the rest in
bert_glue/. Read as source, nothing imported."""

from __future__ import annotations

import ast
import os
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


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["hyperparameters.learning_rat=1e-5"], "did you mean hyperparameters.learning_rate?"),
        (["hyperparameters.precision=fp64"], "hyperparameters.precision"),
        (["data.data_dir=no_such_folder", "data.download_data=false"], "GLUE MRPC data not found"),
    ],
    ids=["misspelt key", "bad lever", "missing data folder"],
)
def test_a_mistake_answers_before_torch_loads(overrides: list[str], message: str, tmp_path):
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['model_def.py', 'const.yaml', *{overrides!r}]\n"
        "try:\n    runpy.run_path('model_def.py', run_name='__main__')\n"
        "except SystemExit as e:\n    print(e.code)\n    print('torch', 'torch' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DET_TASK_ID"}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, env=env, timeout=60
    )
    *_, error, torch_loaded = done.stdout.strip().splitlines()
    assert error.startswith("error: ") and message in error, done.stdout + done.stderr[-2000:]
    assert torch_loaded == "torch False"
    assert done.stderr == ""  # one line, nothing else

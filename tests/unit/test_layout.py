"""The project's shape: the classic example and thin command lines at the root, the rest in
bert_glue/. Read as source, nothing imported."""

from __future__ import annotations

import ast
import os
import re
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


PRODUCT = sorted(
    path
    for path in [*REPO.glob("*.py"), *(REPO / "bert_glue").rglob("*.py"), *REPO.glob("bench/*.py")]
)
SETTINGS = REPO / "bert_glue" / "trial" / "settings.py"


def project_imports(path) -> set[str]:
    """The project modules a file imports (bert_glue.x.y, or a module at the root), anywhere in
    it: `from bert_glue.trial import a, b` names two."""
    roots = {p.stem for p in REPO.glob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in {"bert_glue", *roots}}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in roots:
                found.add(node.module)
            elif node.module.startswith("bert_glue"):
                for alias in node.names:
                    module = f"{node.module}.{alias.name}"
                    is_module = (REPO / (module.replace(".", "/") + ".py")).is_file()
                    found.add(module if is_module else node.module)
    return found


def folder_imports(folder: str) -> set[tuple[str, str]]:
    """(file, module) for every project module a file of bert_glue/<folder> imports."""
    return {
        (path.name, module)
        for path in (REPO / "bert_glue" / folder).glob("*.py")
        for module in project_imports(path)
    }


def test_settings_are_read_by_name_in_the_settings_module_only():
    reads = [
        f"{path.relative_to(REPO)}:{number}"
        for path in PRODUCT
        if path != SETTINGS
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\b(hp|hparams|cfg)\[", line)
    ]
    assert reads == []


def test_model_classes_are_read_by_name():
    indexed = [
        str(path.relative_to(REPO))
        for path in PRODUCT
        if re.search(r"(get_model_classes\([^)]*\)|model_classes)\[", path.read_text())
    ]
    assert indexed == []


def test_the_trial_is_built_from_trial_modules_only():
    """model_def.py imports what the trial is built from (bert_glue/trial/, one job a module,
    the data and the task table), Determined 0.38.1's workarounds and, of the local launcher,
    only its command line: checked before torch, then handed on. Never results/."""
    modules = project_imports(REPO / "model_def.py")
    outside = {m for m in modules if not m.startswith("bert_glue.trial.")}
    assert outside == {
        "constants",
        "data",
        "bert_glue.determined_0_38.workarounds",
        "bert_glue.local.cli",
    }, sorted(modules)


@pytest.mark.parametrize(
    ("folder", "never"),
    [("trial", ("bert_glue.local", "bert_glue.results")), ("results", ("bert_glue.local",))],
)
def test_layers_point_one_way_down(folder: str, never: tuple[str, ...]):
    assert {(f, m) for f, m in folder_imports(folder) if m.startswith(never)} == set()
    assert all(m != "model_def" for _, m in folder_imports(folder))


def test_one_call_fits_the_trial_on_a_cluster_and_locally():
    calls = [
        f"{path.relative_to(REPO)}:{number}"
        for path in PRODUCT
        if path.parent.name != "bench"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bTrainer\(", line)
    ]
    assert len(calls) == 1 and calls[0].startswith("model_def.py:"), calls


def test_the_settings_module_loads_neither_torch_nor_transformers():
    probe = (
        "import sys\nfrom bert_glue.trial import settings\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr[-2000:]


def test_the_settings_module_is_the_schema_alone():
    """settings.py reads a config already loaded: it loads no YAML and applies no overrides (a
    local run's file is bert_glue/local/config.py's), and finds no data files (the task does)."""
    tree = ast.parse(SETTINGS.read_text(encoding="utf-8"))
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        for name in (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module]
            if isinstance(node, ast.ImportFrom) and node.module
            else []
        )
    }
    assert "yaml" not in imported
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    assert not defined & {"load_config", "apply_override", "local_hparams", "missing_files"}


# Each folder's floor, lowest first: a module may import its own folder's and those below.
FLOORS = {
    "constants": 0,
    "bert_glue.container": 0,
    "bert_glue.determined_0_38": 0,
    "bert_glue.trial": 1,
    "download_glue_data": 1,
    "data": 2,
    "bert_glue.results": 3,
    "bert_glue.local": 4,
    "model_def": 5,
}


def floor(module: str) -> int | None:
    return next(
        (
            n
            for name, n in FLOORS.items()
            if module.split(".")[: len(name.split("."))] == name.split(".")
        ),
        None,
    )


def test_no_arrow_runs_back_up():
    """No module imports one of a floor above its own: the trial's modules never data.py (nor
    results/, local/, model_def), data.py never results/ or local/, results/ never local/."""
    up = []
    for path in PRODUCT:
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        here = floor(module)
        if here is None:
            continue
        up += [f"{module} -> {m}" for m in project_imports(path) if (floor(m) or 0) > here]
    assert up == []

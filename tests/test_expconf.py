"""Tests for tests/expconf.py, and the project's experiment configs checked with it.

1. Determined's own cross-language schema test cases (``determined_schemas/test_cases/v0``) run
   through :mod:`expconf`, the way the master's ``schema_test.go`` runs them.
2. Every ``*.yaml`` in the repository root must pass the master's sanity check, and its
   completeness check once the master has filled in what it fills in (see
   :func:`as_master_would_fill`).
3. Hand-written bad configs, so that these tests can fail.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import expconf
import pytest
import yaml
from expconf import EXPERIMENT_SCHEMA, completeness_errors, sanity_errors
from jsonschema import Draft7Validator

REPO_ROOT = Path(__file__).resolve().parents[1]
CASES_DIR = Path(__file__).resolve().parent / "determined_schemas" / "test_cases" / "v0"

# --- 1. Determined's schema test cases -----------------------------------------------------------

# The keys schema_test.go knows. Validation: sane_as, complete_as (lists of schema ids that must
# give no errors), sanity_errors, completeness_errors ({schema id: [regexes]}: there must be errors
# and each regex must match (re.search, like Go's regexp.MatchString) one of them).
# Not validation: default_as/defaulted (schemas.WithDefaults) and merge_as/merge_src/merged
# (schemas.Merge); of the latter, only the sanity of case and merge_src is validation. The master's
# defaulting and merging are not reimplemented here, so those parts of a case are not checked.
VALIDATION_KEYS = {"sane_as", "complete_as", "sanity_errors", "completeness_errors"}
DEFAULTS_KEYS = {"default_as", "defaulted"}
MERGE_KEYS = {"merge_as", "merge_src", "merged"}
KNOWN_KEYS = {"name", "case"} | VALIDATION_KEYS | DEFAULTS_KEYS | MERGE_KEYS


def _load_cases() -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        for case in yaml.safe_load(path.read_text()) or []:
            cases.append((f"{path.name}::{case['name']}", case))
    return cases


CASES = _load_cases()
VALIDATION_CASES = [
    pytest.param(case, id=cid)
    for cid, case in CASES
    if case.keys() & (VALIDATION_KEYS | {"merge_as"})
]


def test_case_files_are_understood() -> None:
    assert len(CASES) > 100, f"found only {len(CASES)} cases under {CASES_DIR}"
    ids = [cid for cid, _ in CASES]
    assert len(ids) == len(set(ids)), "duplicate case names"
    for cid, case in CASES:
        assert case.keys() <= KNOWN_KEYS, f"{cid}: unknown keys {case.keys() - KNOWN_KEYS}"
        assert case.keys() - {"name", "case"}, f"{cid}: checks nothing"


def _check_errors(case: dict[str, Any], key: str, check: Any, problems: list[str]) -> None:
    for schema_id, patterns in (case.get(key) or {}).items():
        errors = check(case["case"], schema_id)
        if not errors:
            problems.append(f"{key}: {schema_id}: expected errors, got none")
        for pattern in patterns:
            if not any(re.search(pattern, error) for error in errors):
                problems.append(f"{key}: {schema_id}: no error matches {pattern!r} in {errors}")


@pytest.mark.parametrize("case", VALIDATION_CASES)
def test_schema_case_validation(case: dict[str, Any]) -> None:
    problems: list[str] = []
    for key, check in (("sane_as", sanity_errors), ("complete_as", completeness_errors)):
        for schema_id in case.get(key) or []:
            if errors := check(case["case"], schema_id):
                problems.append(f"{key}: {schema_id}: unexpected errors {errors}")
    _check_errors(case, "sanity_errors", sanity_errors, problems)
    _check_errors(case, "completeness_errors", completeness_errors, problems)
    if merge_as := case.get("merge_as"):
        # schema_test.go's CheckMerged first requires both sides of the merge to be sane.
        for side in ("case", "merge_src"):
            if errors := sanity_errors(case[side], merge_as):
                problems.append(f"merge_as: {side} is not sane as {merge_as}: {errors}")
    assert not problems, "\n".join(problems)


# Keywords python-jsonschema's Draft7Validator knows, plus draft-07 annotations.
_DRAFT7_KEYWORDS = set(Draft7Validator.VALIDATORS) | {
    *("$schema", "$id", "$comment", "title", "description", "default", "examples"),
    *("definitions", "then", "else", "readOnly", "writeOnly"),
}
# Where subschemas sit: maps of them, lists of them, single ones.
_SCHEMA_MAPS = {"properties", "patternProperties", "definitions", "checks"}
_SCHEMA_LISTS = {"allOf", "anyOf", "oneOf", "items"}
_SCHEMA_VALUES = {
    *("additionalProperties", "additionalItems", "items", "not", "if", "then", "else"),
    *("contains", "propertyNames", "eventually"),
}


def _keywords(schema: Any) -> set[str]:
    """Every keyword used in ``schema`` and its subschemas."""
    if not isinstance(schema, dict):
        return set()
    found = set(schema)
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            subschemas = list(value.values())
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            subschemas = value
        elif key == "union":
            subschemas = value["items"]
        elif key in _SCHEMA_VALUES:
            subschemas = [value]
        else:
            subschemas = []
        for sub in subschemas:
            found |= _keywords(sub)
    return found


def test_every_schema_keyword_is_implemented() -> None:
    """An unknown keyword would be ignored silently, so a schema update must not bring one."""
    used = set().union(*(_keywords(expconf.get_schema(sid)) for sid in expconf.schema_ids()))
    assert used - _DRAFT7_KEYWORDS - expconf.CUSTOM_KEYWORDS == set()
    assert {"union", "optionalRef", "checks", "compareProperties"} <= used


# --- 2. The project's experiment configs -------------------------------------------------------

# The cluster side of what the master fills in. Any complete storage would do.
CLUSTER_CHECKPOINT_STORAGE = {"type": "shared_fs", "host_path": "/tmp"}
CLUSTER_IMAGE = "determinedai/pytorch-ngc:0.38.1"


def as_master_would_fill(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with what a 0.38 master fills in before its completeness check.

    On `det experiment create` the master sanity-checks the submitted config, merges in the
    cluster's defaults (``checkpoint_storage`` from master.yaml, task-container defaults such as
    the images), applies ``schemas.WithDefaults`` (schema defaults: ``hyperparameters: {}``,
    ``reproducibility: {}``, ...; runtime defaults: a generated ``name``, a time-based
    ``reproducibility.experiment_seed``) and only then runs ``schemas.IsComplete``. So a config
    legitimately leaves those fields out, and only they are filled here (only where missing or
    null, and a partial checkpoint_storage only with fields of the same storage type, as
    ``schemas.Merge`` does); everything else a completeness error names (a missing
    ``searcher``, ``searcher.metric``, an s3 storage without ``bucket``...) is the config's fault.
    """
    cfg = copy.deepcopy(config)
    storage = cfg.get("checkpoint_storage") or {}
    if storage.get("type") in (None, CLUSTER_CHECKPOINT_STORAGE["type"]):
        given = {k: v for k, v in storage.items() if v is not None}
        cfg["checkpoint_storage"] = {**CLUSTER_CHECKPOINT_STORAGE, **given}
    if cfg.get("name") is None:
        cfg["name"] = "Experiment (name generated by the master)"
    if cfg.get("hyperparameters") is None:
        cfg["hyperparameters"] = {}
    reproducibility = cfg["reproducibility"] = cfg.get("reproducibility") or {}
    if reproducibility.get("experiment_seed") is None:
        reproducibility["experiment_seed"] = 1234
    environment = cfg["environment"] = cfg.get("environment") or {}
    image = environment.get("image")
    if not isinstance(image, str):
        image = environment["image"] = dict(image or {})
        if image.get("cuda") is None and image.get("gpu") is not None:
            image["cuda"] = image.pop("gpu")  # the legacy name the master still accepts
        for device in ("cpu", "cuda", "rocm"):
            if image.get(device) is None:
                image[device] = CLUSTER_IMAGE
    return cfg


def load_config(path: Path) -> Any:
    """Parse an experiment config like `det experiment create` (ruamel.yaml, YAML 1.2)."""
    try:
        from ruamel.yaml import YAML
    except ImportError:  # determined (which needs ruamel.yaml) is not installed
        return yaml.safe_load(path.read_text())
    return YAML(typ="safe", pure=True).load(path.read_text())


def config_problems(config: Any) -> list[str]:
    """What the master would reject ``config`` for: sanity errors, else completeness errors."""
    if not isinstance(config, dict):
        return [f"not a mapping: {config!r}"]
    return sanity_errors(config) or completeness_errors(as_master_would_fill(config))


PROJECT_YAMLS = sorted(REPO_ROOT.glob("*.yaml"))


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=p.name) for p in PROJECT_YAMLS]
    or [pytest.param(None, marks=pytest.mark.skip(reason=f"no *.yaml in {REPO_ROOT} yet"))],
)
def test_project_config_is_valid(path: Path) -> None:
    config = load_config(path)
    assert config_problems(config) == []


SAMPLE = {
    "name": "bert_glue_pytorch_const",
    "entrypoint": "python3 -m determined.launch.torch_distributed python3 model_def.py",
    "hyperparameters": {"global_batch_size": 24, "learning_rate": 2.0e-5, "model_type": "bert"},
    "searcher": {"name": "single", "metric": "accuracy", "smaller_is_better": False},
    "resources": {"slots_per_trial": 1},
    "data": {"task": "MRPC", "data_dir": "/tmp/glue_data"},
    "max_restarts": 0,
}


def test_sample_config_is_valid_and_completed_by_the_master() -> None:
    assert sanity_errors(SAMPLE) == []
    # Raw, it lacks only what the master fills in...
    assert completeness_errors(SAMPLE) == [
        "<config>: checkpoint_storage is a required property",
        "<config>: reproducibility is a required property",
    ]
    # ...and once filled it is complete.
    assert config_problems(SAMPLE) == []


# --- 3. Configs that must fail -----------------------------------------------------------------


def _sample_with(drop: tuple[str, ...] = (), **changes: Any) -> dict[str, Any]:
    cfg = {k: v for k, v in copy.deepcopy(SAMPLE).items() if k not in drop}
    return {**cfg, **changes}


BAD_CONFIGS = [
    pytest.param(
        _sample_with(hyperparameter={"learning_rate": 1e-5}),
        r"^<config>: Additional properties are not allowed \('hyperparameter' was unexpected\)$",
        id="misspelled-top-level-key",
    ),
    pytest.param(
        _sample_with(resources={"slots_per_trial": -1}),
        r"^<config>\.resources\.slots_per_trial: -1 is less than the minimum of 0$",
        id="negative-slots_per_trial",
    ),
    pytest.param(
        _sample_with(searcher={"name": "singel", "metric": "accuracy"}),
        r"^<config>\.searcher: is not an object where object\[\"name\"\] is one of 'single'",
        id="unknown-searcher-name",
    ),
    pytest.param(
        _sample_with(hyperparameters={"lr": {"type": "double", "minval": 1e-4, "maxval": 1e-5}}),
        r"^<config>\.hyperparameters\.lr: minval must be less than maxval$",
        id="hyperparameter-minval-above-maxval",
    ),
    pytest.param(
        _sample_with(
            checkpoint_storage={"type": "shared_fs", "host_path": "/mnt", "storage_path": "/x"}
        ),
        r"^<config>\.checkpoint_storage: storage_path must either be a relative directory",
        id="storage_path-outside-host_path",
    ),
    pytest.param(
        _sample_with(min_validation_period={"batches": 10, "epochs": 1}),
        r"^<config>\.min_validation_period: a length object must have one attribute named",
        id="length-with-two-units",
    ),
]


@pytest.mark.parametrize(("config", "expected"), BAD_CONFIGS)
def test_bad_config_fails_sanity(config: dict[str, Any], expected: str) -> None:
    errors = sanity_errors(config)
    assert any(re.search(expected, e) for e in errors), errors
    assert config_problems(config) == errors


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param(
            _sample_with(searcher={"name": "single"}),
            "<config>.searcher: metric is a required property",
            id="searcher-without-metric",
        ),
        pytest.param(
            _sample_with(drop=("searcher",)),
            "<config>: searcher is a required property",
            id="no-searcher",
        ),
        pytest.param(
            _sample_with(checkpoint_storage={"type": "s3", "bucket": None}),
            "<config>.checkpoint_storage: bucket is a required property",
            id="s3-storage-without-bucket",
        ),
    ],
)
def test_incomplete_config_is_sane_but_not_complete(config: dict[str, Any], expected: str) -> None:
    """eventuallyRequired fields: the sanity check lets them go, the completeness check not."""
    assert sanity_errors(config) == []
    # (set: searcher.json and searcher-single.json both require metric, so the master, too,
    # reports that one twice)
    assert set(completeness_errors(as_master_would_fill(config))) == {expected}
    assert expected in completeness_errors(config)


def test_schema_id_must_be_known() -> None:
    with pytest.raises(KeyError, match="unknown schema"):
        sanity_errors({}, "http://determined.ai/schemas/expconf/v0/nope.json")
    assert EXPERIMENT_SCHEMA in expconf.schema_ids()

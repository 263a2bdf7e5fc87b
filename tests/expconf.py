"""Check Determined experiment configs the way a Determined 0.38.1 master does.

The master validates an experiment config against the JSON schemas vendored in
``tests/determined_schemas/expconf/v0`` (draft-07 plus Determined's own keywords) in two steps:

* a *sanity* check of what the user submitted (:func:`sanity_errors`), which ignores
  ``eventuallyRequired`` and ``eventually``;
* a *completeness* check (:func:`completeness_errors`), which also enforces them. The master runs
  it after it has merged in cluster defaults (``checkpoint_storage``, task container images) and
  filled schema and runtime defaults (``name``, ``reproducibility.experiment_seed``, ...).

Both return the errors rendered like the master renders them: one leaf error per line,
``"<config>.path.to[0].key: message"``, sorted. Messages of the custom keywords are the master's;
messages of standard keywords are python-jsonschema's (the master's Go library words them
differently, e.g. for ``required`` or ``additionalProperties``).

Determined's keywords, as defined by its Go (``master/pkg/schemas/extensions``) and Python
(``determined/common/schemas/extensions.py``) implementations:

``union`` / ``unionKey``
    Exactly one of ``items`` must match. If none does, the errors of the first failing item whose
    ``unionKey`` holds for the instance are reported, else ``defaultMessage``.
``optionalRef``
    ``$ref`` that lets ``null`` through.
``checks``
    ``{message: schema}``; ``message`` is the error, at the instance, when ``schema`` fails.
``compareProperties``
    ``{"type": "a<b" | "a<=b" | "a_is_subdir_of_b", "a": path, "b": path}``; skipped when either
    side is missing, null or of the wrong type.
``disallowProperties``
    ``{property: message}``; ``message`` when the instance has ``property`` (even as null, as the
    master does).
``eventuallyRequired`` / ``eventually``
    ``required`` (a null value counts as missing) and a subschema, both only enforced by the
    completeness check.
"""

from __future__ import annotations

import functools
import json
import posixpath
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator, ValidationError, validators
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

__all__ = [
    "CUSTOM_KEYWORDS",
    "EXPERIMENT_SCHEMA",
    "SCHEMA_DIR",
    "completeness_errors",
    "get_schema",
    "sanity_errors",
    "schema_ids",
]

SCHEMA_DIR = Path(__file__).resolve().parent / "determined_schemas" / "expconf" / "v0"
EXPERIMENT_SCHEMA = "http://determined.ai/schemas/expconf/v0/experiment.json"

Keyword = Callable[[Any, Any, Any, dict[str, Any]], Iterator[ValidationError]]


# --- Determined's keywords ---------------------------------------------------------------------


def _union_key_holds(key: str, instance: Any) -> bool:
    """Evaluate a ``unionKey`` ("always", "never", "not:K", "const:N=V", "singleproperty:N",
    "type:array|object", "hasattr:N") against ``instance``."""
    if key == "always":
        return True
    if key == "never":
        return False
    kind, _, arg = key.partition(":")
    is_obj = isinstance(instance, dict)
    if kind == "not":
        return not _union_key_holds(arg, instance)
    if kind == "const":
        name, _, value = arg.partition("=")
        return is_obj and isinstance(instance.get(name), str) and instance[name] == value
    if kind == "singleproperty":
        return is_obj and len(instance) == 1 and arg in instance
    if kind == "type" and arg in ("array", "object"):
        return isinstance(instance, list if arg == "array" else dict)
    if kind == "hasattr":
        return is_obj and arg in instance
    raise ValueError(f"invalid unionKey: {key!r}")


def _union(
    validator: Any, union: dict[str, Any], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    selected: list[ValidationError] | None = None
    n_valid = 0
    for idx, item in enumerate(union["items"]):
        errors = list(validator.descend(instance, item, schema_path=idx))
        if not errors:
            n_valid += 1
        elif selected is None and _union_key_holds(item["unionKey"], instance):
            selected = errors
    if n_valid == 1:
        return
    if n_valid > 1:
        yield ValidationError("bug in validation! Multiple schemas matched")
    elif selected:
        yield from selected
    else:
        yield ValidationError(union.get("defaultMessage", "union failed to validate"))


def _optional_ref(
    validator: Any, ref: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if instance is not None:
        yield from validator.descend(instance, {"$ref": ref})


def _checks(
    validator: Any, checks: dict[str, Any], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    for message, subschema in checks.items():
        if next(iter(validator.descend(instance, subschema)), None) is not None:
            yield ValidationError(message)


def _get_by_path(instance: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(instance, dict):
            return None
        instance = instance.get(key)
    return instance


def _clean_path(path: str) -> str:
    """posixpath.normpath, but "//x" -> "/x" like Go's filepath.Clean."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _compare_properties(
    validator: Any, compare: dict[str, str], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    a_name, b_name, kind = compare["a"], compare["b"], compare["type"]
    a, b = _get_by_path(instance, a_name), _get_by_path(instance, b_name)
    if kind in ("a<b", "a<=b"):
        if not (_is_number(a) and _is_number(b)):
            return
        if a > b or (kind == "a<b" and a == b):
            # The master words a<=b failures like a<b failures.
            yield ValidationError(f"{a_name} must be less than {b_name}")
    elif kind == "a_is_subdir_of_b":
        if not (isinstance(a, str) and isinstance(b, str)):
            return
        a_path, b_path = _clean_path(a), _clean_path(b)
        # A plain prefix test, like the master's strings.HasPrefix.
        bad = not a_path.startswith(b_path) if a_path.startswith("/") else a_path.startswith("..")
        if bad:
            yield ValidationError(f"{a_name} must be a subdirectory of {b_name}")
    else:
        raise ValueError(f"unrecognized comparison {kind!r}")


def _disallow_properties(
    validator: Any, disallowed: dict[str, str], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if isinstance(instance, dict):
        for prop, message in disallowed.items():
            if prop in instance:
                yield ValidationError(message)


def _eventually_required(
    validator: Any, required: list[str], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if isinstance(instance, dict):
        for prop in required:
            if instance.get(prop) is None:
                yield ValidationError(f"{prop} is a required property")


def _eventually(
    validator: Any, subschema: dict[str, Any], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    yield from validator.descend(instance, subschema)


_SANITY_KEYWORDS: dict[str, Keyword] = {
    "union": _union,
    "optionalRef": _optional_ref,
    "checks": _checks,
    "compareProperties": _compare_properties,
    "disallowProperties": _disallow_properties,
}
_COMPLETENESS_KEYWORDS: dict[str, Keyword] = {
    **_SANITY_KEYWORDS,
    "eventuallyRequired": _eventually_required,
    "eventually": _eventually,
}
#: Determined's keywords (and their data-only companions), for tools that walk the schemas.
CUSTOM_KEYWORDS = frozenset(_COMPLETENESS_KEYWORDS) | {"unionKey", "defaultMessage"}

_SanityValidator = validators.extend(Draft7Validator, _SANITY_KEYWORDS)
_CompletenessValidator = validators.extend(Draft7Validator, _COMPLETENESS_KEYWORDS)


# --- schema loading ----------------------------------------------------------------------------


@functools.cache
def _schemas() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        schema = json.loads(path.read_text())
        # Drop "$schema": jsonschema picks the validator class of a $ref'd schema by its
        # "$schema" (plain Draft7Validator here), which would silently lose our keywords.
        # Without it the extended class is kept; the registry is told the dialect instead.
        schema.pop("$schema", None)
        out[schema["$id"]] = schema
    if EXPERIMENT_SCHEMA not in out:
        raise FileNotFoundError(f"no experiment.json schema under {SCHEMA_DIR}")
    return out


@functools.cache
def _registry() -> Registry:
    resources = [
        (sid, Resource.from_contents(schema, default_specification=DRAFT7))
        for sid, schema in _schemas().items()
    ]
    return Registry().with_resources(resources).crawl()


def schema_ids() -> list[str]:
    """Return the ``$id`` of every vendored schema."""
    return sorted(_schemas())


def get_schema(schema_id: str) -> dict[str, Any]:
    """Return the vendored schema with this ``$id`` (without its ``$schema``; don't modify it)."""
    try:
        return _schemas()[schema_id]
    except KeyError:
        raise KeyError(f"unknown schema {schema_id!r}; known: {schema_ids()}") from None


@functools.cache
def _validator(schema_id: str, complete: bool) -> Any:
    schema = get_schema(schema_id)
    cls = _CompletenessValidator if complete else _SanityValidator
    return cls(schema, registry=_registry())


# --- error rendering ---------------------------------------------------------------------------


def _leaves(errors: Iterable[ValidationError]) -> Iterator[ValidationError]:
    """Only the leaves of the error tree, like the master (anyOf/oneOf keep theirs in context)."""
    for error in errors:
        if error.context:
            yield from _leaves(error.context)
        else:
            yield error


def _render(error: ValidationError) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"<config>{where}: {error.message}"


def _errors(config: Any, schema_id: str, complete: bool) -> list[str]:
    validator = _validator(schema_id, complete)
    return sorted(_render(e) for e in _leaves(validator.iter_errors(config)))


# --- public API --------------------------------------------------------------------------------


def sanity_errors(config: Any, schema_id: str = EXPERIMENT_SCHEMA) -> list[str]:
    """Errors of the master's sanity check of ``config`` (no ``eventuallyRequired``).

    ``config`` is the parsed YAML/JSON (normally a dict); ``schema_id`` is the ``$id`` of any
    vendored schema. Returns sorted ``"<config>.path: message"`` strings; empty means sane.
    """
    return _errors(config, schema_id, complete=False)


def completeness_errors(config: Any, schema_id: str = EXPERIMENT_SCHEMA) -> list[str]:
    """Errors of the master's completeness check: the sanity check plus ``eventuallyRequired``
    and ``eventually`` (a null value counts as missing).

    The master runs this after filling cluster, schema and runtime defaults, so on a raw user
    config it also reports fields the master would have filled (e.g. ``checkpoint_storage``).
    """
    return _errors(config, schema_id, complete=True)

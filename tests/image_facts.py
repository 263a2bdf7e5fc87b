"""The facts kept about a container image (image/*.yaml), each with its source or why assumed."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import yaml

IMAGE_FACTS = pathlib.Path(__file__).resolve().parents[1] / "image"
FACTS = (
    "python",
    "torch",
    "cuda",
    "gpu_architectures",
    "driver_minimum",
    "pip_constraints",
    "c_compiler",
    "externally_managed",
    "installed",
)


@dataclasses.dataclass(frozen=True)
class Fact:
    value: Any
    source: str | None
    assumed: str | None


@dataclasses.dataclass(frozen=True)
class ImageFacts:
    path: pathlib.Path
    image: str
    facts: dict[str, Fact]

    def __getitem__(self, name: str) -> Any:
        return self.facts[name].value


def load(path: pathlib.Path) -> ImageFacts:
    raw = yaml.safe_load(path.read_text())
    assert set(raw) == {"image", *FACTS}, f"{path}: needs exactly image and {', '.join(FACTS)}"
    facts = {}
    for name in FACTS:
        entry = raw[name]
        assert set(entry) <= {"value", "source", "assumed"}, f"{path}: {name}: unknown keys"
        assert entry.get("source") or entry.get("assumed"), f"{path}: {name} has no source"
        facts[name] = Fact(entry["value"], entry.get("source"), entry.get("assumed"))
    return ImageFacts(path, raw["image"], facts)


def all_images() -> list[ImageFacts]:
    return [load(path) for path in sorted(IMAGE_FACTS.glob("*.yaml"))]


def for_image(image: str) -> ImageFacts:
    found = [facts for facts in all_images() if facts.image == image]
    assert len(found) == 1, f"no facts file in image/ names {image}"
    return found[0]

"""What Determined uploads and installs: the startup hook's pins follow requirements.txt."""

from __future__ import annotations

import re

from conftest import REPO


def pins(text: str) -> dict[str, str]:
    return dict(re.findall(r"^\s*\"?([A-Za-z0-9_.-]+)([=><]=[^\s\"\\]+)", text, flags=re.M))


def test_startup_hook_pins_match_requirements():
    hook = pins((REPO / "startup-hook.sh").read_text())
    requirements = pins((REPO / "requirements.txt").read_text())
    assert {"transformers", "tokenizers", "scikit-learn", "scipy"} <= set(hook)
    for package, spec in hook.items():
        assert requirements.get(package) == spec, f"{package}: hook {spec}, requirements.txt"


def test_detignore_keeps_tests_caches_and_environments_out():
    ignored = (REPO / ".detignore").read_text().split()
    for pattern in ("tests/", "bench/", ".venv/", "__pycache__/", "glue_data/", "*.pt"):
        assert pattern in ignored

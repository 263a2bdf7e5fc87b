"""Refuse to run on a torch or transformers the trial cannot use, in one line that says the fix.

transformers 5 quietly turns torch off when torch is older than 2.6: its is_torch_available()
compares the whole version, so NVIDIA's pre-release builds count as older than the release they
precede (2.6.0a0+... < 2.6.0, while 2.10.0a0+... passes). The trial then dies on its first use of
a model class with an ImportError that does not name the image. This module says which versions
are installed and what to change.

    python -m bert_glue.container.versions          # exit 1 with "error: ..." if unusable
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable

from packaging.version import InvalidVersion, Version

# transformers 5's own floor for torch (transformers.utils.import_utils.is_torch_available).
MIN_TORCH = Version("2.6.0")
# The transformers the trial is written for: requirements-image.txt's pin (a test keeps them equal).
MIN_TRANSFORMERS = Version("5.24.0")
FIX = (
    "run the trial in the image the configs set (environment.image, with startup-hook.sh "
    "installing requirements-image.txt) or in one built from the Dockerfile; "
    "locally: pip install -r requirements.txt"
)


def installed(name: str) -> str | None:
    """The installed distribution's version string, None if it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def at_least(version: str | None, floor: Version) -> bool:
    """version >= floor as transformers compares: pre-releases sort before their release."""
    try:
        return version is not None and Version(version) >= floor
    except InvalidVersion:
        return False


def problem(
    torch_version: str | None, transformers_version: str | None, torch_enabled: Callable[[], bool]
) -> str:
    """What keeps the trial from running, or "" when nothing does.

    torch_enabled returns transformers' own verdict; it is asked only once both versions pass.
    """
    found = f"torch {torch_version or 'missing'}, transformers {transformers_version or 'missing'}"
    if not at_least(torch_version, MIN_TORCH):
        need = f"transformers 5 needs torch >= {MIN_TORCH} (a pre-release {MIN_TORCH}a0 is older)"
    elif not at_least(transformers_version, MIN_TRANSFORMERS):
        need = f"the trial needs transformers >= {MIN_TRANSFORMERS}"
    elif not torch_enabled():
        need = "transformers.utils.is_torch_available() is False: transformers turned torch off"
    else:
        return ""
    return f"{found}: {need}; {FIX}"


def transformers_sees_torch() -> bool:
    from transformers.utils import is_torch_available  # only once transformers 5 is installed

    return is_torch_available()


def require_supported() -> None:
    """Exit with one "error: ..." line if the installed torch or transformers cannot run it."""
    message = problem(installed("torch"), installed("transformers"), transformers_sees_torch)
    if message:
        sys.exit(f"error: {message}")


if __name__ == "__main__":
    require_supported()

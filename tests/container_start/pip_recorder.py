"""Stand-ins for pip that record each call and fail, for tests that pip must not run in."""

from __future__ import annotations

import dataclasses
import pathlib


@dataclasses.dataclass(frozen=True)
class PipRecorder:
    folder: pathlib.Path

    @property
    def bin(self) -> pathlib.Path:
        """Put first on PATH: pip and pip3."""
        return self.folder / "bin"

    @property
    def package_root(self) -> pathlib.Path:
        """Put first on PYTHONPATH: a `pip` package, which `python -m pip` runs."""
        return self.folder / "python"

    @property
    def log(self) -> pathlib.Path:
        return self.folder / "pip-calls.log"

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def pip_recorder(folder: pathlib.Path) -> PipRecorder:
    recorder = PipRecorder(folder)
    recorder.bin.mkdir(parents=True)
    for name in ("pip", "pip3"):
        script = recorder.bin / name
        script.write_text(f'#!/usr/bin/env bash\necho "$0 $*" >> {recorder.log}; exit 1\n')
        script.chmod(0o755)
    package = recorder.package_root / "pip"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(
        f"import sys\n\nwith open({str(recorder.log)!r}, 'a') as log:\n"
        "    log.write(' '.join(['python -m pip', *sys.argv[1:]]) + '\\n')\n"
        "sys.exit(1)\n"
    )
    return recorder

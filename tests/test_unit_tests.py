"""tests/unit stays what its name says: no determined, no transformers, so it runs in seconds."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

HEAVY = ("determined", "transformers")


def test_unit_tests_pass_without_determined_or_transformers():
    code = (
        "import sys, pytest\n"
        "code = pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/unit'])\n"
        f"heavy = sorted(name for name in {HEAVY!r} if name in sys.modules)\n"
        "print('imported:', heavy)\n"
        "sys.exit(int(code) or bool(heavy))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert "imported: []" in run.stdout, run.stdout[-2000:]
    assert run.returncode == 0, run.stdout[-2000:]

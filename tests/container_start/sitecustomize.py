"""The container paths of Determined's harness, moved under $FAKE_RUN_ROOT for a container-start
rehearsal (tests/test_container_start.py) that runs as an unprivileged process on this machine.

Python imports this module at startup when this folder is on PYTHONPATH. With FAKE_RUN_ROOT set,
every module of the installed determined package is compiled from its source with two paths
replaced: /run/determined (the info files, the model copy, the log links) and /tmp/tensorboard.
Nothing is imported here: the package is not installed yet when the container starts.
"""

import importlib.abc
import importlib.machinery
import os
import sys

root = os.environ.get("FAKE_RUN_ROOT")


class _RewritingLoader(importlib.machinery.SourceFileLoader):
    def get_code(self, fullname):  # bypasses the .pyc compiled from the unchanged source
        source = self.get_source(fullname)
        for old in ("/run/determined", "/tmp/tensorboard"):
            source = source.replace(old, root + old)
        return compile(source, self.path, "exec", dont_inherit=True)


class _DeterminedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "determined" and not name.startswith("determined."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and type(spec.loader) is importlib.machinery.SourceFileLoader:
            spec.loader = _RewritingLoader(spec.loader.name, spec.loader.path)
        return spec


if root:
    sys.meta_path.insert(0, _DeterminedFinder())

"""Helpers shared by the test modules (``conftest.py`` keeps only the fixtures and hooks).

Plain modules, imported as ``from helpers.procs import kill_and_reap``: ``tests`` is on ``sys.path`` (pytest's
``prepend`` import of ``tests/conftest.py``, a rootdir without ``__init__.py``). ``mounts``, ``namespaces`` and
``nets`` import only nsbox and the standard library, so that the rootless interpreter (no pytest there) can
import them too; the others import pytest.
"""

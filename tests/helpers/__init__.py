"""Helpers shared by the test modules (``conftest.py`` keeps only the fixtures and hooks).

Plain modules, imported as ``from helpers.procs import kill_and_reap``: ``tests`` is on ``sys.path`` (pytest's
rootdir-relative ``prepend`` import of ``tests/conftest.py``), and every module here but ``procs`` and ``rootless``
imports only nsbox and the standard library, so that a rootless interpreter without pytest can import them too.
"""

"""Helpers the tests share (importable as ``helpers.NAME``: pyproject puts ``tests`` on
the path). Test modules import from here, never from one another or from a conftest."""

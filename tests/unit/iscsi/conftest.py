"""Fixtures for the iSCSI layer's unit tests (iscsi_testlib is made importable)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

"""Fixtures for the SCSI layer's unit tests (tests/memstore.py is made importable)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, for memstore
sys.path.insert(0, str(Path(__file__).resolve().parent))  # scsi_testlib

from scsi_testlib import RecordingStore, make_target


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore(num_blocks=2048, block_size=512)


@pytest.fixture
def target(store: RecordingStore):
    return make_target(store)

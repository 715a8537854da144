"""Fixtures for the SCSI layer's unit tests."""

from __future__ import annotations

import pytest
from helpers.scsi_testlib import RecordingStore, make_target


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore(num_blocks=2048, block_size=512)


@pytest.fixture
def target(store: RecordingStore):
    return make_target(store)

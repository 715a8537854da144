"""A logical unit as the SCSI layer sees it: a BlockStore plus the identity it reports.

Owns the LU's identity (name, WWN) and the values derived from it that INQUIRY
reports: the unit serial number and the NAA designator (SPC-4 7.8.6.6.5).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from .store import BlockStore

# IEEE company ID in NAA 6 designators. 00-14-05 is the OUI Linux-IO (LIO) software
# targets report; initiators and multipath tooling treat it as "Linux software target".
DEFAULT_IEEE_COMPANY_ID = 0x001405

_NAA_IEEE_REGISTERED_EXTENDED = 0x6
MAX_TRANSFER_BYTES = 8 * 1024 * 1024  # advertised in VPD B0h MAXIMUM TRANSFER LENGTH


@dataclass(frozen=True, slots=True)
class LuIdentity:
    """What a LUN says it is: a human name and a stable 128-bit WWN."""

    name: str
    wwn: uuid.UUID
    ieee_company_id: int = DEFAULT_IEEE_COMPANY_ID

    @property
    def serial(self) -> str:
        """The PRODUCT SERIAL NUMBER of VPD page 80h: the WWN in hex (32 ASCII chars)."""
        return self.wwn.hex

    def naa(self) -> bytes:
        """NAA IEEE Registered Extended designator, 16 bytes (SPC-4 7.8.6.6.5).

        NAA (4 bits) = 6, IEEE COMPANY_ID (24), VENDOR SPECIFIC IDENTIFIER (36) and
        VENDOR SPECIFIC IDENTIFIER EXTENSION (64): the top 36 and the low 64 bits of
        the WWN. Distinct WWNs that differ only in bits 64..91 would collide, which a
        random (version 4) UUID makes negligible."""
        w = self.wwn.int
        value = (
            (_NAA_IEEE_REGISTERED_EXTENDED << 124)
            | ((self.ieee_company_id & 0xFFFFFF) << 100)
            | ((w >> 92) << 64)
            | (w & 0xFFFFFFFFFFFFFFFF)
        )
        return value.to_bytes(16, "big")


@dataclass(slots=True)
class LogicalUnit:
    store: BlockStore
    identity: LuIdentity
    max_transfer_bytes: int = field(default=MAX_TRANSFER_BYTES)

    @property
    def block_size(self) -> int:
        return self.store.block_size

    @property
    def num_blocks(self) -> int:
        return self.store.num_blocks

    @property
    def max_transfer_blocks(self) -> int:
        return max(1, self.max_transfer_bytes // self.store.block_size)

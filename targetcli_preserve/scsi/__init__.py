"""SCSI: CDB decoding, sense data and the block command set over a BlockStore.

Knows SCSI (SPC-4, SBC-3), not transports: iSCSI and TCMU hand CDBs to
:class:`~targetcli_preserve.scsi.target.ScsiTarget` and carry back its responses.
"""

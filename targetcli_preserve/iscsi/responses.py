"""The answer to a SCSI command: Data-In PDUs (RFC 7143 11.7) and the SCSI Response (11.4).

Owns the residuals (11.4.5), the cutting of read data into Data-In PDUs of at most the
initiator's MaxRecvDataSegmentLength inside sequences of at most MaxBurstLength, with
the F bit closing each sequence and DataSN counting the PDUs (11.7.5), the status riding
on the last Data-In when there is no sense data (11.7.4), and the SCSI Response with
its ExpDataSN (11.4.8) and sense data (11.4.7). Pure functions, called with keywords;
the StatSN, ExpCmdSN and MaxCmdSN of each PDU are the connection's to fill in
(``Connection._stamp``), so nothing here holds session state.
"""

from __future__ import annotations

from targetcli_preserve.iscsi.layout import fast_constructor
from targetcli_preserve.iscsi.pdus import DataIn, ScsiResponsePdu

# Built for every command: without type.__call__'s keyword dict (see layout.py).
_data_in = fast_constructor(DataIn)
_scsi_response = fast_constructor(ScsiResponsePdu)


def answer_pdus(
    *,
    lun_field: int,
    itt: int,
    read: bool,
    write: bool,
    edtl: int,
    r2t_count: int,
    status: int,
    data: bytes,
    sense: bytes,
    data_out_expected: int | None,
    max_segment: int,
    max_burst: int,
) -> list[DataIn | ScsiResponsePdu]:
    """The PDUs answering a finished command, in order; the last one, and only it,
    carries the status. ``r2t_count`` is how many R2Ts the command had, ``max_segment``
    the initiator's MaxRecvDataSegmentLength, ``max_burst`` MaxBurstLength."""
    # Residuals (RFC 7143 11.4.5): for a read (or any command that returned data) of
    # the data against the Expected Data Transfer Length; sending stops at EDTL.
    overflow = underflow = False
    residual = 0
    length = len(data)
    if read or length:
        expected = edtl if read else 0
        if length > expected:
            overflow = True
            residual = length - expected
            length = expected
        elif length < expected:
            underflow = True
            residual = expected - length
    elif write and data_out_expected is not None:
        # 11.4.5.1 for a write: O when the CDB wanted more Data-Out than EDTL allowed
        # (the residual was never sent), U when it used less than the initiator
        # expected to send. Also with a status other than GOOD (the target "may set
        # the residual count").
        if data_out_expected > edtl:
            overflow = True
            residual = data_out_expected - edtl
        elif data_out_expected < edtl:
            underflow = True
            residual = edtl - data_out_expected
    pdus: list[DataIn | ScsiResponsePdu] = []
    if length:
        mv = memoryview(data)
        collapse = not sense  # sense data travels only in a SCSI Response
        off = 0
        while off < length:
            n = min(max_segment, max_burst - off % max_burst, length - off)
            end = off + n
            if end == length and collapse:
                pdus.append(
                    _data_in(
                        final=True,
                        overflow=overflow,
                        underflow=underflow,
                        status_present=True,
                        status=status,
                        lun=lun_field,
                        initiator_task_tag=itt,
                        data_sn=len(pdus),
                        buffer_offset=off,
                        residual_count=residual,
                        data=mv[off:end],
                    )
                )
                return pdus
            pdus.append(
                _data_in(
                    final=end == length or end % max_burst == 0,  # F ends a sequence
                    lun=lun_field,
                    initiator_task_tag=itt,
                    data_sn=len(pdus),
                    buffer_offset=off,
                    data=mv[off:end],
                )
            )
            off = end
    pdus.append(
        _scsi_response(
            overflow=overflow,
            underflow=underflow,
            status=status,
            initiator_task_tag=itt,
            exp_data_sn=len(pdus) + r2t_count,  # Data-In PDUs and R2Ts (RFC 7143 11.4.8)
            residual_count=residual,
            data=len(sense).to_bytes(2, "big") + sense if sense else b"",
        )
    )
    return pdus

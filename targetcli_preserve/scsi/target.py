"""ScsiTarget: the entry point transports use to run a CDB against a LUN.

INTERFACE CONTRACT (fixed; the iSCSI layer is written against it):

    target = ScsiTarget({0: LogicalUnit(store, LuIdentity(...)), 1: ...})
    awaitable = target.execute(lun, cdb, data_out, data_out_length)
    response = await awaitable          # -> ScsiResponse

``execute`` is a plain method: its synchronous part decodes the CDB and issues the
command to the BlockStore (fixing its sequence number), so a transport calling it in
CmdSN order issues commands in CmdSN order. ``data_out`` is None for commands without
Data-Out, else bytes or an awaitable of bytes (all Data-Out, ``data_out_length`` long).
"""

"""The built-in iSCSI target (RFC 7143), sans-I/O except for ``server.py``.

Where things live: the codec is ``pdu.py`` (gathering ``codes.py``, ``layout.py``,
``pdus.py``, ``framing.py``); login negotiation is ``login.py`` with the text codec of
``text.py``; one connection is ``session.py``'s :class:`Connection`, which hands out
the events of ``events.py`` and orchestrates ``cmdsn.py`` (CmdSN window),
``transfer.py`` (Data-Out, R2T), ``responses.py`` (Data-In, SCSI Response),
``tasks.py``, ``taskmgmt.py`` (TMF, Logout) and ``text.py`` (Text, SendTargets);
``server.py`` moves bytes between sockets and connections and drives SCSI commands
through what ``scsi_api.py`` says a SCSI target offers.
"""

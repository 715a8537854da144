"""The one error hierarchy of the product.

Every failure is raised as a subclass of :class:`PreserveError`; one boundary (the CLI,
the control socket, the SCSI layer) turns it into an exit code, a JSON error or sense
data. Never return error flags.
"""


class PreserveError(Exception):
    """Root of every error the product raises on purpose."""


class UserError(PreserveError):
    """Bad input from a person or a script: a CLI argument, a config string, a name."""


class BackendError(PreserveError):
    """Storage failed underneath us: a volume read/write/clone/fsync went wrong."""


class ProtocolError(PreserveError):
    """A peer broke a wire protocol: a malformed PDU, a bad CDB, a bad control request."""


class DaemonUnreachable(UserError):
    """No daemon listens on the control socket of this state directory."""

"""targetcli-preserve: point-in-time copies of live iSCSI LUNs with zero I/O pause."""

__version__ = "0.1.0"

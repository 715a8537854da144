"""A built-in iSCSI target on 127.0.0.1 (random port) in a background event loop, serving
ScsiTarget + MemoryStore LUNs, for tests that drive it with real initiator tools; and
running those tools."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import uuid

from helpers.memstore import MemoryStore
from targetcli_preserve.iscsi.server import IscsiServer
from targetcli_preserve.scsi.target import LogicalUnit, LuIdentity, ScsiTarget

IQN = "iqn.2026-11.org.example.preserve:it1"
BLOCKS = 40960  # 20 MiB of 512-byte blocks


def make_target(blocks: int = BLOCKS) -> tuple[ScsiTarget, MemoryStore]:
    store = MemoryStore(num_blocks=blocks, block_size=512)
    return ScsiTarget({0: LogicalUnit(store, LuIdentity(name="lun0", wwn=uuid.uuid4()))}), store


class ServerThread:
    def __init__(self) -> None:
        self.target, self.store = make_target()
        self.targets = {IQN: self.target}
        self.loop = asyncio.new_event_loop()
        self.server = IscsiServer("127.0.0.1", 0, self.targets)
        self.logins: list = []
        orig = self.server._session_started

        def record(proto, params):
            self.logins.append(params)
            orig(proto, params)

        self.server._session_started = record
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def call(self, fn, *args):
        """Run ``fn`` on the server loop (for changes to live state)."""

        async def run():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, lun: int = 0, iqn: str = IQN) -> str:
        return f"iscsi://127.0.0.1:{self.port}/{iqn}/{lun}"


def run(
    args: list[str], timeout: float = 120, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        args, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc

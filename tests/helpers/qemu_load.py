"""Drive qemu-io as a real initiator with many asynchronous writes in flight.

qemu-io reads commands from a pipe and runs its event loop between them, so
``aio_write`` lines fed in order are issued in that order (CmdSN order) and stay in
flight together: exactly the load a preserve must cut through. Lines are fed one at a
time: qemu-io reads its pipe through stdio, and lines that arrive together wait in the
stdio buffer until more input comes (they keep their order, only later).
"""

from __future__ import annotations

import random
import re
import subprocess
import threading
import time
from dataclasses import dataclass

_WROTE = re.compile(r"wrote (\d+)/(\d+) bytes at offset (\d+)")


@dataclass(frozen=True)
class Write:
    offset: int
    length: int
    pattern: int  # qemu-io -P: the byte every written byte gets

    def line(self) -> str:
        return f"aio_write -q -P {self.pattern} {self.offset} {self.length}\n"

    def verbose_line(self) -> str:
        return f"aio_write -P {self.pattern} {self.offset} {self.length}\n"


def overlapping_writes(seed: int, count: int, region: int) -> list[Write]:
    """``count`` writes with distinct patterns over ``region`` bytes, overlapping often."""
    assert count <= 255
    rng = random.Random(seed)
    writes = []
    for i in range(count):
        length = rng.choice([4096, 8192, 65536, 131072, 262144])
        offset = rng.randrange(0, (region - length) // 512 + 1) * 512
        writes.append(Write(offset, length, i + 1))
    return writes


def apply(image: bytearray, writes: list[Write]) -> bytearray:
    for w in writes:
        image[w.offset : w.offset + w.length] = bytes([w.pattern]) * w.length
    return image


class QemuIo:
    """One qemu-io process on one LUN URL, fed commands through its stdin."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            ["stdbuf", "-oL", "qemu-io", "-f", "raw", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.lines: list[str] = []
        self.sent = 0  # commands handed to qemu-io so far
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line)

    def send(self, text: str) -> None:
        try:
            self.proc.stdin.write(text)
            self.proc.stdin.flush()
        except BrokenPipeError:  # qemu-io exited: report what it said, not the pipe
            self.proc.wait(10)
            self._reader.join(5)
            raise AssertionError(
                f"qemu-io exited with status {self.proc.returncode}:\n{self.output()}"
            ) from None

    def feed(self, lines: list[str], gap: float = 0.0005) -> None:
        """Send ``lines`` one by one; ``sent`` counts each before it goes out."""
        for line in lines:
            self.sent += 1
            self.send(line)
            time.sleep(gap)

    def feed_in_background(self, lines: list[str], gap: float = 0.0005) -> threading.Thread:
        feeder = threading.Thread(target=self.feed, args=(lines, gap), daemon=True)
        feeder.start()
        return feeder

    def acknowledged(self) -> list[tuple[int, int]]:
        """(offset, length) of every write qemu-io saw complete."""
        with self._lock:
            lines = list(self.lines)
        return [(int(m.group(3)), int(m.group(1))) for line in lines if (m := _WROTE.search(line))]

    def settle(self, count: int, timeout: float = 30.0) -> None:
        """Wait until ``count`` writes are acknowledged, nudging qemu-io with empty lines
        (no-ops that send nothing to the target) so no fed line waits in its buffer."""
        deadline = time.monotonic() + timeout
        while len(self.acknowledged()) < count:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"qemu-io acknowledged too few writes:\n{self.output()}")
            self.send("\n")
            time.sleep(0.002)

    def wait_acknowledged(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged()) < count:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"qemu-io acknowledged too few writes:\n{self.output()}")
            time.sleep(0.005)

    def finish(self, timeout: float = 60.0) -> str:
        """Flush, quit and return the whole output."""
        self.send("aio_flush\nquit\n")
        self.proc.stdin.close()
        self.proc.wait(timeout)
        self._reader.join(5)
        return self.output()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)

    def output(self) -> str:
        with self._lock:
            return "".join(self.lines)

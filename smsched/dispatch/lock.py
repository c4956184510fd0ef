"""One dispatcher at a time, unless asked to share: a kernel lock on a file beside the database.

The kernel releases it even on kill -9, so a dead run never blocks the next. The holder of the
exclusive lock knows no other dispatcher is alive, so it may recover every orphan at once.
"""

from __future__ import annotations

import fcntl
import os


class RunLock:
    def __init__(self, db_path: str):
        self.path = f"{db_path}.dispatch.lock"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self.mode: str | None = None

    def try_exclusive(self) -> bool:
        if self._try(fcntl.LOCK_EX):
            self.mode = "exclusive"
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
            return True
        return False

    def try_shared(self) -> bool:
        if self._try(fcntl.LOCK_SH):
            self.mode = "shared"
            return True
        return False

    def _try(self, kind: int) -> bool:
        try:
            fcntl.flock(self.fd, kind | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def holder(self) -> str:
        try:
            return os.pread(self.fd, 32, 0).decode().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)

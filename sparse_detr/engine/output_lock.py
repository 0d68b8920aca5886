"""One writer per output directory: a lock file naming the holder's pid and host.

Two training runs writing one ``train.output_dir`` interleave their ``metrics.json`` lines and overwrite each
other's checkpoints, and both exit 0. :class:`OutputDirectoryLock` makes the second one stop before it writes
anything. The lock is ``<output_dir>/train_net.lock``, held with ``fcntl.flock`` for the life of the process
(the kernel releases it when the process dies, so a killed run never blocks the next one) and holding
``{"pid", "host", "started", "command"}`` for the message of whoever is refused. Where the file system has no
``flock`` the file's content decides: a lock of a process that no longer runs on this host is taken over,
any other is respected.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from ..utils.processes import process_alive

__all__ = ["LOCK_FILE_NAME", "OutputDirectoryLock", "OutputDirectoryLockedError"]

LOCK_FILE_NAME = "train_net.lock"


class OutputDirectoryLockedError(RuntimeError):
    """Another live process writes the output directory."""


class OutputDirectoryLock:
    """Exclusive use of ``directory`` by this process (a context manager; created if missing).

    Raises:
        OutputDirectoryLockedError: on :meth:`acquire`, when a live process holds the directory; the message
            names its pid, host, start time and command, and the lock file.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE_NAME
        self._fd: int | None = None

    def __enter__(self) -> OutputDirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                held = self._lock(fd)
            except BaseException:
                os.close(fd)
                raise
            if not held:
                holder = self._holder(fd)
                os.close(fd)
                raise OutputDirectoryLockedError(self._refusal(holder))
            # the previous holder may have removed the file between our open and our lock: lock the new one
            if self._is_current(fd):
                break
            os.close(fd)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if self._is_current(self._fd):
                self.path.unlink()
        finally:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    # ------------------------------------------------------------------------------------------ helpers
    def _lock(self, fd: int) -> bool:
        """Take the lock on ``fd``; False when another live process holds it."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
        # no flock on this file system: the recorded holder decides
        holder = self._holder(fd)
        if holder is None or not holder.get("pid"):
            return True
        same_host = holder.get("host") == socket.gethostname()
        return same_host and not process_alive(int(holder["pid"]))

    def _is_current(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    @staticmethod
    def _holder(fd: int) -> dict | None:
        try:
            data = json.loads(os.pread(fd, 4096, 0).decode())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def _refusal(self, holder: dict | None) -> str:
        if holder:
            who = (
                f"process {holder.get('pid')} on host {holder.get('host')} "
                f"(started {holder.get('started')}: {holder.get('command')})"
            )
        else:
            who = "another process"
        return (
            f"{self.directory} is in use by {who}: a second run writing the same train.output_dir would "
            "interleave its metrics.json and overwrite its checkpoints. Wait for that run to finish or stop "
            f"it, or set another train.output_dir. (Lock file: {self.path}; it is released when its holder "
            "exits, even when killed.)"
        )

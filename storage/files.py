"""Private data files: the gateway's directory 0700, its databases 0600, whatever the umask.

SQLite creates a database's -wal, -shm and -journal files with the mode of the database file
itself, so creating the database file 0600 before SQLite opens it makes all of them private.
Files left by an older version with the umask's mode are narrowed when they are opened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
#: What SQLite keeps beside a database file.
COMPANIONS = ("-wal", "-shm", "-journal")


def private_dir(path: Path, *, narrow_existing: bool = False) -> None:
    """Create `path` (and its parents) if missing; the directory created is 0700 whatever the umask.

    `narrow_existing`: also make an existing directory 0700 (the configured data directory; never
    a directory the gateway merely writes into, like /tmp)."""
    existed = path.is_dir()
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if existed and not narrow_existing:
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode != PRIVATE_DIR:
        path.chmod(PRIVATE_DIR)
        if existed:
            log.info("data directory %s was %04o: now %04o (private)", path, mode, PRIVATE_DIR)


def private_file(path: Path) -> None:
    """Create `path` empty if missing; make it 0600 in any case (a file open()'s mode is subject to the umask)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != PRIVATE_FILE:
            os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)


def private_database(path: Path) -> None:
    """Before SQLite opens `path`: its directory exists, the file and its companions are 0600."""
    private_dir(path.parent)
    private_file(path)
    for suffix in COMPANIONS:
        companion = path.with_name(path.name + suffix)
        # Only those that exist: a -wal created here empty would be harmless, a -journal not.
        with contextlib.suppress(FileNotFoundError):
            if stat.S_IMODE(companion.stat().st_mode) != PRIVATE_FILE:
                companion.chmod(PRIVATE_FILE)


__all__ = ["COMPANIONS", "PRIVATE_DIR", "PRIVATE_FILE", "private_database", "private_dir", "private_file"]

"""Writing files so that no reader ever sees a half-written one.

Every file nass writes for a user (separated audio, their ``_sources.json``,
the recipes' csvs, exported models) is written to a hidden
``.<name>.<random>.part`` file beside it and renamed over the final name when
complete; parts left by a killed run are removed when the same file is
written again. :func:`hold_lock` keeps two processes out of one folder; the
system releases it when its holder ends, killed or not.

Example
-------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     write_text(f"{tmp}/a.txt", "done\\n")
...     sorted(p.name for p in Path(tmp).iterdir()), Path(f"{tmp}/a.txt").read_text()
(['a.txt'], 'done\\n')
"""

import contextlib
import fcntl
import glob
import os
import secrets
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yields the hidden path to write; it replaces ``path`` when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        stale.unlink(missing_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_text(path, text):
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as partial:
        partial.write_text(text, encoding="utf-8")


class LockedError(OSError):
    """A lock that another process holds; the message gives its process id."""


def hold_lock(path):
    """Locks ``path`` (created if needed) for this process; returns the open file that holds it.

    The lock lasts until the file is closed or the process ends, however it
    ends. Raises :class:`LockedError` with the holder's process id if another
    process holds it.
    """
    lock = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise LockedError(f"{path} is held by process {holder}") from None
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock

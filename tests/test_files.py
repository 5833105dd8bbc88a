"""Writing files: the one lock a run holds on its output folder."""

import os
import signal
import subprocess
import sys

import pytest

from nass.files import LockedError, hold_lock


@pytest.mark.slow
def test_a_lock_is_refused_while_held_and_free_once_its_holder_is_killed(tmp_path):
    path = tmp_path / "run.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from nass.files import hold_lock; import time; "
                               f"lock = hold_lock({str(path)!r}); print('held', flush=True); "
                               f"time.sleep(300)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(LockedError, match=f"{path} is held by process {holder.pid}"):
            hold_lock(path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    lock = hold_lock(path)   # the kernel let go of the killed holder's lock
    assert path.read_text() == f"{os.getpid()}\n"
    lock.close()

"""A rank whose peers are gone ends itself instead of waiting in a collective for ever.

Paddle's launcher ends a job when one of its own ranks dies, but with an HTTP master (`--master HOST:PORT`)
the launchers of other nodes are not told (Paddle 3.3's HTTPMaster has no-op status calls), and a rank
whose peer hangs or vanishes waits in the next all-reduce until the process group's timeout (30 minutes by
default). This watchdog ends the process when no step has finished for `train.stall_minutes`: its launcher
then sees a dead rank and ends the node's job, and the same command run again with `--resume auto`
continues from the newest checkpoint.
"""
from __future__ import annotations

import os
import sys
import threading
import time

EXIT_STALLED = 3


class StallWatchdog:
    """Call `beat()` after each step; the process exits with EXIT_STALLED once `seconds` pass without one."""

    def __init__(self, seconds: float, rank: int):
        self.seconds, self.rank = seconds, rank
        self._last = time.monotonic()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watchdog", daemon=True)
        self._thread.start()

    def beat(self) -> None:
        self._last = time.monotonic()

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        while not self._stopped.wait(min(1.0, self.seconds / 4)):
            stalled = time.monotonic() - self._last
            if stalled > self.seconds:
                print(f"error: rank {self.rank}: no training step finished in {stalled:.0f} s (train.stall_minutes): "
                      f"a peer rank has died or hangs; ending this rank so the job ends. Run the same command "
                      f"again with --resume auto to continue from the newest checkpoint", file=sys.stderr, flush=True)
                os._exit(EXIT_STALLED)  # the main thread is blocked in a collective: nothing else can end it

"""Peak resident memory of this process, without importing anything heavy (the end-to-end
and ingest runs measure their own process: importing torch here would count in theirs)."""

from __future__ import annotations

import resource
from pathlib import Path

KIB_PER_MIB = 1 << 10  # VmHWM and ru_maxrss are in KiB on Linux


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (VmHWM: unlike ru_maxrss on Linux,
    it is not inherited from the parent across exec, so a spawned worker reports its own)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / KIB_PER_MIB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_MIB

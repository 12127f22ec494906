"""Facts about the installation and the machine: fcls's version, file digests, usable CPUs."""

from __future__ import annotations

import hashlib
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .errors import ConfigError


def fcls_version() -> str:
    """The installed fcls version, or 'unknown' when run from a bare checkout."""
    try:
        return version("fcls")
    except PackageNotFoundError:
        return "unknown"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# the instruction sets that decide which kernels pay (int8 VNNI, native bf16), by the names
# /proc/cpuinfo gives them and the names users know them by
CPU_FEATURES = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "VNNI",
    "avx512_bf16": "AVX512-BF16",
    "amx_tile": "AMX",
}


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The CPU_FEATURES this CPU has (first processor's flags), in CPU_FEATURES' order;
    empty where /proc/cpuinfo is not there."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return [name for flag, name in CPU_FEATURES.items() if flag in flags]
    return []


# the CPU features (CPU_FEATURES' names) with native bf16 arithmetic
NATIVE_BF16 = ("AVX512-BF16", "AMX")


def native_bf16(features: list[str] | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX in its flags)."""
    found = cpu_features() if features is None else features
    return any(name in found for name in NATIVE_BF16)


def check_cpu_bf16(features: list[str] | None = None) -> None:
    """ConfigError unless this CPU computes bf16 natively, naming the flags looked for."""
    found = cpu_features() if features is None else features
    if not native_bf16(found):
        raise ConfigError(
            "--precision bf16: this CPU has neither avx512_bf16 nor amx_bf16/amx_tile in its "
            f"flags (found: {' '.join(found) or 'none of AVX2/AVX-512/VNNI'}); emulated bf16 "
            "is many times slower than fp32: use --precision fp32"
        )


def describe_cpu() -> str:
    """`AMD EPYC, 2 CPUs, AVX2 AVX-512 VNNI`: what every published figure names."""
    features = " ".join(cpu_features()) or "no AVX2"
    return f"{cpu_model()}, {available_cpus()} CPUs, {features}"


CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup quota (v2 `cpu.max`, else v1 `cpu.cfs_quota_us`); None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for v1 in (root / "cpu", root / "cpu,cpuacct", root):
        try:
            quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
            period_us = int((v1 / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may really use: affinity mask and cgroup quota, not the host's count."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        n = min(n, max(1, int(quota)))
    return max(1, n)

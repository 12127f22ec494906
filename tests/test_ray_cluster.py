"""fcls-infer --engine ray --address on a real Ray cluster: two nodes (`ray start --head` and a
`ray start --address` worker) on this host, 2 logical CPUs each; the CLI runs as a process.

Ray places every task and actor on one node: --workers as many as the cluster's CPUs must
still leave the parse tasks room on some node, more than it holds is refused before any
work, and a node lost mid-run ends in the local engine's bytes or one line, never a hang.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import temps_under, tiny_model, write_eval_csv

from fcls.infer.engine.pipeline import predict_csv

pytestmark = pytest.mark.slow

NODE_CPUS = 2
FCLS_INFER = str(Path(sys.executable).parent / "fcls-infer")
RUN_S = 150  # one CLI run, at most: past it the test fails as a hang
STALL_S = 10  # Ray Data's no-progress limit in the node-loss run (fcls's default is minutes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _session(sid: int) -> list[int]:
    """The processes of session `sid`: a node's `ray start`, its raylet, agents and workers
    (each worker in its own process group, all in the node's session)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":  # a zombie is already gone
                pids.append(int(entry))
    return pids


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


class LocalCluster:
    """Ray nodes started by this test module, each `ray start --block` in a session of its
    own, so that stopping one kills exactly its processes (`ray stop` would kill every Ray
    process of this host, other runs' included)."""

    def __init__(self) -> None:
        # short: Ray's socket paths under it must stay within the 107 bytes of a Unix socket
        self.root = Path(tempfile.mkdtemp(prefix="fcls-ray-", dir="/tmp"))
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen[bytes]] = []
        # Ray turns token authentication on for new clusters: a token of this cluster's
        # own, in the environment (never written to ~/.ray), for the nodes and the CLI
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0",
            # a node killed without a goodbye is declared dead within seconds
            "RAY_health_check_period_ms": "500",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        }

    def start_node(self) -> subprocess.Popen[bytes]:
        """Start the head (the first call) or a worker node, and wait until it runs."""
        head = not self.nodes
        where = ["--head", "--port", str(self.port), "--include-dashboard", "false"]
        where += ["--dashboard-port", str(_free_port()), "--temp-dir", str(self.root)]
        command = [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--block",
            *(where if head else ["--address", self.address]),
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus",
            str(NODE_CPUS),
            "--object-store-memory",
            str(100 << 20),
            "--dashboard-agent-listen-port",
            str(_free_port()),
            "--disable-usage-stats",
        ]
        log = self.root / f"node{len(self.nodes)}.log"
        with log.open("wb") as out:
            node = subprocess.Popen(
                command, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.nodes.append(node)
        end = time.monotonic() + 60
        while b"Ray runtime started" not in log.read_bytes():
            if node.poll() is not None or time.monotonic() > end:
                pytest.fail(f"ray start failed:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        return node

    def wait_for_nodes(self, alive: int) -> None:
        """Until the cluster reports `alive` nodes (a joining raylet registers shortly after
        `ray start` says it runs)."""
        code = (
            "import ray, time\n"
            f"ray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False)\n"
            "end = time.monotonic() + 60\n"
            f"while sum(n['Alive'] for n in ray.nodes()) != {alive}:\n"
            "    assert time.monotonic() < end, ray.nodes()\n"
            "    time.sleep(0.2)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], env=self.env, capture_output=True, timeout=90
        )
        assert done.returncode == 0, done.stderr.decode()[-3000:]

    def kill_node(self, node: subprocess.Popen[bytes]) -> None:
        """SIGKILL every process of the node, as a lost machine would end them."""
        for _ in range(50):  # a worker forked meanwhile is caught on the next pass
            node.poll()  # reaps `ray start` once killed
            pids = _session(node.pid)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        node.wait(timeout=10)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            self.kill_node(node)
        shutil.rmtree(self.root, ignore_errors=True)

    def infer(
        self, inputs: list[Path], out: str | Path, model: Path, workers: int, **env: str
    ) -> subprocess.Popen[str]:
        """Start `fcls-infer --engine ray --address` on this cluster."""
        command = [
            FCLS_INFER,
            *map(str, inputs),
            "--model",
            str(model),
            "-o",
            str(out),
            "--engine",
            "ray",
            "--address",
            self.address,
            "--workers",
            str(workers),
        ]
        return subprocess.Popen(
            command,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'fcls[ray]')")
    local = LocalCluster()
    try:
        local.start_node()
        local.start_node()
        local.wait_for_nodes(2)
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory, digits) -> dict[str, Path]:
    """A 3,000-row evaluate file and a 24,000-row one (the first, 8 times over: a run long
    enough to kill a node in), the tiny model, and the local engine's results of both."""
    folder = tmp_path_factory.mktemp("cluster")
    pixels = np.concatenate(
        [digits[0], digits[0].reshape(-1, 32, 32)[:, :, ::-1].reshape(-1, 1024)]
    )[:3000]
    small = write_eval_csv(folder / "small.csv", pixels, [f"r{i}" for i in range(3000)])
    header, body = small.read_bytes().split(b"\n", 1)
    big = folder / "big.csv"
    big.write_bytes(
        header
        + b"\n"
        + b"".join(b"k%d-" % k + line for k in range(8) for line in body.splitlines(keepends=True))
    )
    model = tiny_model(folder / "tiny.onnx")
    found = {"small": small, "big": big, "model": model}
    for name in ("small", "big"):
        found[f"{name}.local"] = folder / f"{name}.local.csv"
        predict_csv(found[name], found[f"{name}.local"], model)
    return found


def _finish(run: subprocess.Popen[str]) -> tuple[int, list[str]]:
    """Wait for the CLI (a hang fails the test); its exit status and output lines."""
    try:
        output, _ = run.communicate(timeout=RUN_S)
    except subprocess.TimeoutExpired:
        run.kill()
        output, _ = run.communicate()
        pytest.fail(f"fcls-infer still running after {RUN_S} s: a hang\n{output[-3000:]}")
    lines = output.splitlines()
    assert not [line for line in lines if "Traceback" in line or "(raylet)" in line], output
    return run.returncode, lines


def _one_error(lines: list[str]) -> str:
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, "\n".join(lines)
    return errors[0]


def test_workers_as_many_as_the_cluster_cpus_finish(tmp_path, cluster, data):
    """4 workers on 2 nodes of 2 CPUs: the parse tasks still get a CPU on some node."""
    out = tmp_path / "results.csv"
    code, lines = _finish(cluster.infer([data["small"]], out, data["model"], 2 * NODE_CPUS))
    assert code == 0, "\n".join(lines)
    assert out.read_bytes() == data["small.local"].read_bytes()
    assert temps_under(tmp_path) == []


def test_more_workers_than_cpus_share_them_or_are_refused(tmp_path, cluster, data):
    """5 workers on 4 CPUs run on a third of a CPU each; 36 are more than 2 nodes of 2 CPUs
    hold at the least share (0.1 CPUs each, 0.25 for reading): refused before any work."""
    out = tmp_path / "results.csv"
    code, lines = _finish(cluster.infer([data["small"]], out, data["model"], 2 * NODE_CPUS + 1))
    assert code == 0, "\n".join(lines)
    assert out.read_bytes() == data["small.local"].read_bytes()
    out.unlink()

    code, lines = _finish(cluster.infer([data["small"]], out, data["model"], 36))
    assert code == 1
    error = _one_error(lines)
    assert "--workers 36: the Ray cluster has 4 CPUs in all (per node: 2, 2)" in error
    assert "(3.6 for 36) plus 0.25 for reading" in error and "at most 35 workers" in error
    assert list(tmp_path.iterdir()) == []


def test_a_worker_node_killed_mid_run_ends_in_the_same_bytes_or_one_line(tmp_path, cluster, data):
    """A third node joins, takes scoring actors, and is SIGKILLed mid-run (raylet, agents
    and workers): Ray redoes its work on the other two nodes (the local engine's bytes) or
    the run fails in one line; nothing is published and no temp file is left."""
    victim = cluster.start_node()
    cluster.wait_for_nodes(3)
    out = tmp_path / "out"
    out.mkdir()
    env = {"RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S": str(STALL_S)}
    run = cluster.infer([data["big"]], f"{out}/", data["model"], 3, **env)
    end = time.monotonic() + RUN_S
    while not any(b"MapWorker" in _cmdline(p) for p in _session(victim.pid)):
        if run.poll() is not None or time.monotonic() > end:
            cluster.kill_node(victim)
            pytest.fail(f"no scoring actor on the third node:\n{run.communicate()[0]}")
        time.sleep(0.05)
    time.sleep(1.0)  # the actors are at work
    assert run.poll() is None, "the run ended before the node was killed"
    cluster.kill_node(victim)
    code, lines = _finish(run)
    if code == 0:
        assert (out / "big.results.csv").read_bytes() == data["big.local"].read_bytes()
        assert [p.name for p in out.iterdir()] == ["big.results.csv"]
    else:
        assert code == 1 and "Ray" in _one_error(lines)
        assert list(out.iterdir()) == []

"""fcls-infer --engine ray: byte-identical outputs, order restored, same bad-input rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_eval_csv

from fcls.infer.cli import main
from fcls.infer.errors import ConfigError, DataError
from fcls.infer.inputs import expand_inputs, output_paths
from fcls.infer.pipeline import predict_csv
from fcls.infer.ray_engine import plan_blocks

SIZES = (1200, 1000, 1300)  # 3,500 rows in all


@pytest.fixture(scope="module")
def parts(tmp_path_factory, digits) -> list[Path]:
    """Three evaluate files cut from the digits (twice over, flipped), with string IDs."""
    pixels = np.concatenate(
        [digits[0], digits[0].reshape(-1, 32, 32)[:, :, ::-1].reshape(-1, 1024)]
    )
    folder = tmp_path_factory.mktemp("parts")
    paths, start = [], 0
    for i, n in enumerate(SIZES):
        ids = [f"f{i}-{j}" for j in range(n)]
        paths.append(write_eval_csv(folder / f"part{i}.csv", pixels[start : start + n], ids))
        start += n
    return paths


def test_plan_blocks_cover_the_file_on_row_boundaries(parts):
    path = parts[2]
    header, blocks = plan_blocks(0, path, block_bytes=100_000)
    data = path.read_bytes()
    assert len(blocks) > 5 and data.startswith(header)
    assert b"".join(data[b.start : b.end] for b in blocks) == data[len(header) :]
    for b in blocks:
        assert data[b.start - 1 : b.start] == b"\n"
        assert b.first_line == data[: b.start].count(b"\n") + 1


def test_inputs_and_outputs(tmp_path, parts):
    folder = parts[0].parent
    assert expand_inputs([str(folder)]) == [p.resolve() for p in parts]
    assert expand_inputs([str(folder / "part[02].csv")]) == [parts[0].resolve(), parts[2].resolve()]
    with pytest.raises(DataError, match="no such file"):
        expand_inputs([str(tmp_path / "missing.csv")])
    assert output_paths([parts[0]], None) == [Path("results.csv")]
    outs = output_paths(list(parts), tmp_path / "out")
    assert [p.name for p in outs] == ["part0.results.csv", "part1.results.csv", "part2.results.csv"]
    with pytest.raises(ConfigError, match="directory"):
        output_paths(list(parts), None)


def test_local_engine_handles_several_inputs(tmp_path, parts, exported):
    result = CliRunner().invoke(
        main, [*map(str, parts), "--model", str(exported), "-o", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    for p in parts:
        single = tmp_path / "single.csv"
        predict_csv(p, single, exported)
        assert (tmp_path / f"{p.stem}.results.csv").read_bytes() == single.read_bytes()


def test_local_engine_is_all_or_nothing(tmp_path, parts, exported):
    bad = tmp_path / "zbad.csv"
    bad.write_text(parts[0].read_text().replace(",0,", ",x,", 1))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, [str(parts[0]), str(bad), "--model", str(exported), "-o", str(out)]
    )
    assert result.exit_code != 0 and "zbad.csv:2 column" in result.output
    assert list(out.iterdir()) == []  # part0's finished output was not published either


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'fcls[ray]')")
    import os

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_outputs_equal_single_process_bytes(tmp_path, parts, exported, ray_local):
    from fcls.infer.ray_engine import predict_csv_ray

    out = tmp_path / "out"
    summaries = predict_csv_ray(
        [str(p) for p in parts], out, exported, workers=2, block_bytes=150_000
    )
    assert [s.rows for s in summaries] == list(SIZES)
    for p in parts:
        single = tmp_path / f"{p.stem}.single.csv"
        predict_csv(p, single, exported)
        assert (out / f"{p.stem}.results.csv").read_bytes() == single.read_bytes()

    # one input: -o is the file itself, and --proba output matches too
    result = CliRunner().invoke(
        main,
        [
            str(parts[1]),
            "--engine",
            "ray",
            "--model",
            str(exported),
            "-o",
            str(tmp_path / "one.csv"),
            "--proba",
        ],
    )
    assert result.exit_code == 0, result.output
    predict_csv(parts[1], tmp_path / "one_single.csv", exported, proba=True)
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "one_single.csv").read_bytes()


@pytest.mark.slow
def test_ray_bad_row_names_file_and_line_and_writes_nothing(tmp_path, parts, exported, ray_local):
    bad = tmp_path / "bad.csv"
    lines = parts[0].read_text().splitlines()
    cells = lines[500].split(",")
    cells[10] = "300"
    lines[500] = ",".join(cells)
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, [str(parts[1]), str(bad), "--engine", "ray", "--model", str(exported), "-o", str(out)]
    )
    assert result.exit_code != 0
    assert f"{bad}:501 column pix10: pixel 300 is out of range 0..255" in result.output
    assert sorted(p.name for p in out.iterdir()) == []


def test_infer_without_ray_installed_never_imports_it(tmp_path, parts, exported):
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import fcls.infer.cli, fcls.infer.inputs\n"
        "from fcls.infer import predict_csv\n"
        f"assert predict_csv({str(parts[0])!r}, {str(tmp_path / 'r.csv')!r}, {str(exported)!r}).rows == {SIZES[0]}\n"
        "assert 'ray' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

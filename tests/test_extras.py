"""Missing optional dependencies: every command says in one line which extra to install."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fcls.bench.cli import main as bench_main
from fcls.export.cli import main as export_main
from fcls.infer.cli.infer import main as infer_main
from fcls.infer.common.extras import MissingExtraError, require
from fcls.train.cli import main as train_main


@pytest.mark.parametrize(
    ("command", "args", "missing", "extra"),
    [
        (train_main, ["--max-epochs", "1", "--out", "{tmp}/run"], "torch", "train"),
        (train_main, ["--max-epochs", "1", "--out", "{tmp}/run"], "sklearn", "train"),
        (export_main, ["{tmp}/model.pt", "{tmp}/model.onnx"], "torch", "train"),
        (export_main, ["{tmp}/model.pt", "{tmp}/model.onnx"], "onnx", "train"),
        (infer_main, ["{tmp}/x.csv", "--engine", "ray"], "ray", "ray"),
        (bench_main, ["--workdir", "{tmp}/bench", "--quick"], "torch", "train"),
    ],
)
def test_a_missing_extra_is_one_line(tmp_path: Path, monkeypatch, command, args, missing, extra):
    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` now raises ImportError
    result = CliRunner().invoke(command, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 5, result.output  # clikit.MISSING
    assert f'pip install "fcls[{extra}]"' in result.output
    assert f"needs {missing}, which is not installed" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 2
    assert not any((tmp_path / name).exists() for name in ("run", "model.onnx", "bench"))


def test_torch_message_carries_the_cpu_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingExtraError, match="CPU wheel index"):
        require("fcls-train", "torch")
    require("fcls-infer", "numpy")  # present: no error


def test_help_needs_no_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from click.testing import CliRunner\n"
        "from fcls.export.cli import main as e\nfrom fcls.train.cli import main as t\n"
        "for m in (e, t):\n"
        "    r = CliRunner().invoke(m, ['--help'])\n"
        "    assert r.exit_code == 0 and 'Usage' in r.output, r.output\n"
    )
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

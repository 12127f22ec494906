"""fcls.train.precision: the precision a run trains at, chosen by itself and recorded."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import onnx
import pytest
import torch
from click.testing import CliRunner
from helpers import untimed_history

from fcls.export import ExportConfig, export_onnx
from fcls.infer.common.errors import ConfigError
from fcls.infer.engine.runtimes import native_bf16
from fcls.train import precision as fprecision
from fcls.train.checkpoint import Checkpoint
from fcls.train.cli import main
from fcls.train.config import FAST, TrainConfig
from fcls.train.precision import choose_precision
from fcls.train.trainer import train

CPU = torch.device("cpu")
# CPU flag sets as system.cpu_features names them, one per kind of machine fcls meets
AVX2_ONLY = ["AVX2"]
AVX512_XEON = ["AVX2", "AVX-512", "VNNI"]
EPYC_BF16 = ["AVX2", "AVX-512", "VNNI", "AVX512-BF16"]
XEON_AMX = ["AVX2", "AVX-512", "VNNI", "AVX512-BF16", "AMX"]
AMX_ONLY = ["AVX2", "AMX"]


@pytest.mark.parametrize(
    ("features", "chosen"),
    [
        ([], "fp32"),
        (AVX2_ONLY, "fp32"),
        (AVX512_XEON, "fp32"),
        (EPYC_BF16, "bf16"),
        (XEON_AMX, "bf16"),
        (AMX_ONLY, "bf16"),
    ],
)
def test_auto_chooses_bf16_only_where_the_cpu_computes_it(features: list[str], chosen: str):
    choice = choose_precision("auto", CPU, features)
    assert (choice.precision, choice.requested) == (chosen, "auto")
    assert choice.autocast == (chosen == "bf16")
    if chosen == "bf16":
        assert "natively" in choice.why and "--precision fp32" in choice.describe()
    else:  # says what it looked for and what it found
        assert "AVX512-BF16 or AMX" in choice.why
        assert " ".join(features) in choice.why


@pytest.mark.parametrize("features", [[], AVX2_ONLY, AVX512_XEON])
def test_bf16_asked_for_where_it_would_be_emulated_is_refused(features: list[str]):
    with pytest.raises(ConfigError, match=r"--precision bf16: .*use --precision fp32"):
        choose_precision("bf16", CPU, features)


@pytest.mark.parametrize("features", [EPYC_BF16, XEON_AMX])
def test_asked_for_precisions_are_kept(features: list[str]):
    assert choose_precision("bf16", CPU, features).precision == "bf16"
    fp32 = choose_precision("fp32", CPU, features)
    assert (fp32.precision, fp32.describe()) == ("fp32", "fp32, as asked (--precision fp32)")


def test_unknown_request_is_refused():
    with pytest.raises(ConfigError, match="--precision fp16: expected one of auto, fp32, bf16"):
        choose_precision("fp16", CPU, EPYC_BF16)
    with pytest.raises(ConfigError, match="--precision fp16"):
        TrainConfig(precision="fp16")


@pytest.mark.parametrize(("has_bf16", "chosen"), [(True, "bf16"), (False, "fp32")])
def test_cuda_chooses_by_the_gpus_bf16(monkeypatch, has_bf16: bool, chosen: str):
    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return has_bf16 and not including_emulation  # emulation must not count

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    gpu = torch.device("cuda")
    choice = choose_precision("auto", gpu, AVX2_ONLY)  # the host CPU does not matter
    assert choice.precision == chosen and "compute capability 7.5" in choice.why
    if not has_bf16:
        with pytest.raises(ConfigError, match="lacks bf16"):
            choose_precision("bf16", gpu)


def test_other_devices_stay_fp32_unless_asked():
    mps = torch.device("mps")
    assert choose_precision("auto", mps, XEON_AMX).precision == "fp32"
    assert choose_precision("bf16", mps).precision == "bf16"


def test_amp_is_another_name_for_bf16(tmp_path: Path):
    result = CliRunner().invoke(main, ["--amp", "--precision", "fp32", "-o", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--amp means --precision bf16" in result.output
    assert not (tmp_path / "r").exists()
    for flags in (["--amp"], ["--precision", "bf16"], ["--amp", "--precision", "bf16"]):
        assert fprecision_of(flags, tmp_path) == "bf16"
    assert fprecision_of([], tmp_path) == "auto"


def fprecision_of(flags: list[str], tmp_path: Path) -> str:
    """The precision fcls-train's CLI puts in the TrainConfig it builds for `flags`."""
    seen: list[str] = []

    def fake_train(config: TrainConfig, log: object) -> None:
        seen.append(config.precision)
        raise ConfigError("stop here")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("fcls.train.trainer.train", fake_train)
        CliRunner().invoke(main, [*flags, "-o", str(tmp_path / "cli")])
    return seen[0]


def _fake_cpu(monkeypatch: pytest.MonkeyPatch, features: list[str]) -> None:
    monkeypatch.setattr(fprecision, "cpu_features", lambda: list(features))


def test_fcls_train_refuses_emulated_bf16_in_one_line(tmp_path: Path, monkeypatch):
    _fake_cpu(monkeypatch, AVX512_XEON)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["--amp", "--limit", "200", "-o", str(out)])
    assert result.exit_code == 1, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: --precision bf16: this CPU has neither avx512_bf16")
    assert "found: AVX2 AVX-512 VNNI" in line and not out.exists()


def _history_precisions(out: Path) -> list[str]:
    with (out / "history.csv").open(newline="") as f:
        return [row["precision"] for row in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.parametrize(("features", "chosen"), [(AVX2_ONLY, "fp32"), (EPYC_BF16, "bf16")])
def test_the_choice_is_recorded_everywhere(
    tmp_path: Path, digits_csv: Path, monkeypatch, features: list[str], chosen: str
):
    """The first log line, history.csv, report.json, model.pt and the summary JSON.

    A dense network keeps this quick where bf16 is emulated (a faked flag set chose it)."""
    _fake_cpu(monkeypatch, features)
    out = tmp_path / "run"
    args = ["--data", str(digits_csv), "--arch", "BaseNetwork", "--limit", "200"]
    args += ["--max-epochs", "1", "-o", str(out), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    first, *_, summary = result.output.strip().splitlines()
    assert first.startswith(f"precision: {'bf16 autocast' if chosen == 'bf16' else 'fp32'}, ")
    assert "chosen by itself" in first
    recorded = json.loads(summary)["precision"]
    assert recorded == json.loads((out / "report.json").read_text())["precision"]
    assert recorded == Checkpoint.load(out / "model.pt").precision
    assert (recorded["precision"], recorded["requested"]) == (chosen, "auto")
    assert _history_precisions(out) == [chosen] * 3  # the notebook's three stages
    weights = Checkpoint.load(out / "model.pt").weights.values()
    assert {w.dtype for w in weights if w.is_floating_point()} == {torch.float32}
    # the export and its parity gate (ParityError on any difference) as for an fp32 run
    export_onnx(out / "model.pt", out / "model.onnx", ExportConfig(), log=lambda s: None)
    assert onnx.load(out / "model.onnx").graph.input[0].type.tensor_type.elem_type == (
        onnx.TensorProto.UINT8
    )


class _Interrupt(Exception):
    pass


@pytest.mark.slow
def test_a_resumed_bf16_run_equals_an_uninterrupted_one(
    tmp_path: Path, digits_csv: Path, monkeypatch
):
    """Mid-schedule cut of the fast recipe at bf16: the same history and weights, bit for bit.

    FinalCNNet where the CPU computes bf16; a smaller CNN where bf16 is emulated (the flag
    set is faked so that bf16 is chosen), to keep the test quick there."""
    _fake_cpu(monkeypatch, EPYC_BF16)
    arch = "FinalCNNet" if native_bf16() else "BatchNormCNN"
    config = TrainConfig(
        out=tmp_path / "full", data=digits_csv, max_epochs=3, limit=200, recipe=FAST, arch=arch
    )
    train(config, log=lambda s: None)
    epochs: list[str] = []

    def stop_in_epoch_two(line: str) -> None:
        epochs.extend([line] if line.startswith("stage ") else [])
        if len(epochs) == 2:
            raise _Interrupt  # before the second epoch's state is saved

    cut = dataclasses.replace(config, out=tmp_path / "cut")
    with pytest.raises(_Interrupt):
        train(cut, log=stop_in_epoch_two)
    result = train(cut, log=lambda s: None)
    assert result.resumed_from == "stage onecycle epoch 1"
    assert result.precision.precision == "bf16"
    assert untimed_history(tmp_path / "full") == untimed_history(tmp_path / "cut")
    assert _history_precisions(tmp_path / "cut") == ["bf16"] * 3
    a = Checkpoint.load(tmp_path / "full" / "model.pt").weights
    b = Checkpoint.load(tmp_path / "cut" / "model.pt").weights
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)

"""fcls.export and fcls-export: graph interface, parity gate, variants, errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import notebook_port as nb
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from fcls.export import Checkpoint, ExportConfig, check_parity, export_onnx
from fcls.export import api as export_api
from fcls.export.cli import main
from fcls.export.graph import LintError, io_signature, lint, read_metadata, set_metadata
from fcls.export.parity import reference_logits
from fcls.infer.common.errors import CheckpointError, ConfigError, OutputError, ParityError
from fcls.infer.common.spec import DEFAULT_SPEC
from fcls.infer.formats.sources import read_train
from fcls.train.data import split

pytestmark = pytest.mark.slow


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_interface_lint_and_dynamic_batch(exported: Path):
    sig = io_signature(exported)
    assert sig["inputs"] == [{"name": "pixels", "dtype": "uint8", "shape": ["batch", 1024]}]
    assert sig["outputs"] == [
        {"name": "logits", "dtype": "float32", "shape": ["batch", 10]},
        {"name": "label", "dtype": "int64", "shape": ["batch"]},
    ]
    lint(exported)
    session = _session(exported)
    for b in (1, 7, 1024):
        pixels = np.random.default_rng(b).integers(0, 256, (b, 1024), dtype=np.uint8)
        logits, labels = session.run(None, {"pixels": pixels})
        assert logits.shape == (b, 10) and labels.shape == (b,)
        np.testing.assert_array_equal(labels, logits.argmax(1))


def test_metadata_and_parity_json(exported: Path, trained: Path):
    meta = read_metadata(exported)
    ckpt = torch.load(trained / "model.pt", weights_only=True)
    assert json.loads(meta["class_names"]) == ckpt["image_spec"]["class_names"]
    assert json.loads(meta["image_spec"]) == ckpt["image_spec"]
    assert meta["architecture"] == ckpt["architecture"] == "FinalCNNet"
    assert meta["source_sha256"] == hashlib.sha256((trained / "model.pt").read_bytes()).hexdigest()
    assert float(meta["test_accuracy"]) == ckpt["metrics"]["test_accuracy"]
    assert meta["exporter"] in ("dynamo", "torchscript") and int(meta["opset"]) >= 17
    assert json.loads(meta["parity"])["passed"] is True
    report = json.loads(exported.with_name("model.parity.json").read_text())
    assert report["fp32"]["top1_agreement"] == 1.0
    assert report["fp32"]["batch_sizes"] == [1, 7, 256]
    assert report["variants"]["optimized"]["passed"] is True
    assert read_metadata(exported.with_name("model.opt.onnx"))["variant"] == "optimized"


def test_graph_has_no_dropout_or_training_bn(exported: Path):
    graph = onnx.load(str(exported)).graph
    ops = {n.op_type for n in graph.node}
    assert "Dropout" not in ops
    assert {"Cast", "ArgMax", "Conv"} <= ops
    training = [
        n.name
        for n in graph.node
        if n.op_type == "BatchNormalization"
        and any(a.name == "training_mode" and a.i for a in n.attribute)
    ]
    assert training == []


def _one_node_graph(path: Path, node: onnx.NodeProto, extra: list[onnx.TensorProto]) -> Path:
    h, T = onnx.helper, onnx.TensorProto
    graph = h.make_graph(
        [node],
        "g",
        [h.make_tensor_value_info("x", T.FLOAT, ["batch", 2, 3, 3])],
        [h.make_tensor_value_info("y", T.FLOAT, ["batch", 2, 3, 3])],
        initializer=extra,
    )
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(path))
    return path


def test_lint_refuses_dropout_and_training_mode_batchnorm(tmp_path: Path):
    h, T = onnx.helper, onnx.TensorProto
    stats = [h.make_tensor(n, T.FLOAT, [2], [1.0, 1.0]) for n in ("s", "b", "m", "v")]
    bn = h.make_node(
        "BatchNormalization",
        ["x", "s", "b", "m", "v"],
        ["y", "running_mean", "running_var"],  # training mode updates the statistics
        name="bn1",
        training_mode=1,
    )
    with pytest.raises(LintError, match="BatchNormalization 'bn1' in training mode"):
        lint(_one_node_graph(tmp_path / "bn.onnx", bn, stats))
    drop = h.make_node("Dropout", ["x"], ["y"], name="drop1")
    with pytest.raises(LintError, match="Dropout node 'drop1'"):
        lint(_one_node_graph(tmp_path / "drop.onnx", drop, []))
    eval_bn = h.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn2")
    lint(_one_node_graph(tmp_path / "ok.onnx", eval_bn, stats))  # eval mode passes


def test_independent_port_agrees_with_onnx(exported: Path, trained: Path, digits):
    model = nb.load(torch.load(trained / "model.pt", weights_only=True)["model"])
    pixels, labels = digits
    held_out = split(pixels[:400], labels[:400]).x_test  # never trained on
    pixels = np.concatenate([held_out, pixels[400:1320]])  # plus rows the run never read
    ref = nb.predict_logits(model, pixels)
    session = _session(exported)
    scale = max(1.0, np.abs(ref).max())
    for b in (1, 7, 1000):
        got = np.concatenate(
            [session.run(None, {"pixels": pixels[i : i + b]})[0] for i in range(0, len(pixels), b)]
        )
        assert np.abs(got - ref).max() <= 1e-4 * scale
        assert (got.argmax(1) == ref.argmax(1)).all()


def test_bare_state_dict_exports(tmp_path: Path, trained: Path):
    bare = tmp_path / "final2.pt"
    torch.save(torch.load(trained / "model.pt", weights_only=True)["model"], bare)
    result = export_onnx(bare, tmp_path / "m.onnx", log=lambda s: None)
    assert result.parity.passed and (tmp_path / "m.onnx").is_file()
    # a bare state_dict names no classes: they are named by number, never assumed Fashion's
    assert json.loads(read_metadata(tmp_path / "m.onnx")["class_names"]) == [
        str(i) for i in range(10)
    ]


def test_architecture_mismatch_names_keys(tmp_path: Path, trained: Path):
    state = torch.load(trained / "model.pt", weights_only=True)["model"]
    del state["fc5.bias"]
    state["fc1.weight"] = torch.zeros(3, 3)
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        Checkpoint.load(path)
    msg = str(info.value)
    assert "missing: fc5.bias" in msg and "unexpected: extra.weight" in msg
    assert "fc1.weight (3, 3) != (512, 4608)" in msg


def _perturbing(real_export):
    def export(serving, path, opset, exporter):
        written = real_export(serving, path, opset, exporter)
        model = onnx.load(str(path))
        init = max(model.graph.initializer, key=lambda t: len(t.raw_data) or 0)
        arr = onnx.numpy_helper.to_array(init).copy()
        arr.flat[::97] += 0.05  # a small corruption: a silent numerical drift
        init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
        onnx.save(model, str(path))
        return written

    return export


def test_parity_gate_refuses_perturbed_model(tmp_path: Path, trained: Path, monkeypatch):
    monkeypatch.setattr(export_api, "export_graph", _perturbing(export_api.export_graph))
    dest = tmp_path / "model.onnx"
    with pytest.raises(ParityError) as info:
        export_onnx(trained / "model.pt", dest, log=lambda s: None)
    assert "max |dlogit|" in str(info.value) and "dynamo" in str(info.value)
    assert "torchscript" in str(info.value)  # the fallback was tried too
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written
    with pytest.raises(ParityError):
        export_onnx(trained / "model.pt", dest, ExportConfig(keep_failed=True), log=lambda s: None)
    assert not dest.exists() and (tmp_path / "model.failed.onnx").is_file()


def test_check_parity_api_detects_drift(exported: Path):
    pixels = np.random.default_rng(0).integers(0, 256, (64, 1024), dtype=np.uint8)
    session = _session(exported)
    good = session.run(None, {"pixels": pixels})[0]
    ok = check_parity(good, exported, pixels, batch_sizes=(7,))
    assert ok.passed and ok.max_abs_dlogit == 0.0
    bad = check_parity(good + 1e-2, exported, pixels, batch_sizes=(7,))
    assert not bad.passed and bad.max_abs_dlogit == pytest.approx(1e-2, rel=1e-3)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.pt", "no such checkpoint"),
        (
            lambda d: (d / "junk.pt").write_bytes(b"not a checkpoint") and d / "junk.pt",
            "not a readable torch checkpoint",
        ),
    ],
)
def test_cli_bad_checkpoint(tmp_path: Path, make, message):
    result = CliRunner().invoke(main, [str(make(tmp_path)), str(tmp_path / "m.onnx")])
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "m.onnx").exists()


def test_cli_unwritable_destination(tmp_path: Path, trained: Path):
    with pytest.raises(OutputError, match="does not exist"):
        export_onnx(trained / "model.pt", tmp_path / "no" / "m.onnx", log=lambda s: None)
    result = CliRunner().invoke(main, [str(trained / "model.pt"), str(tmp_path / "no" / "m.onnx")])
    assert result.exit_code != 0 and "does not exist" in result.output


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA present")
def test_fp16_without_cuda_is_flagged(tmp_path: Path, trained: Path):
    runner = CliRunner()
    dest = tmp_path / "m.onnx"
    result = runner.invoke(main, [str(trained / "model.pt"), str(dest), "--fp16"])
    assert result.exit_code == 0, result.output
    assert "NOT parity-checked" in result.output
    fp16 = tmp_path / "m.fp16.onnx"
    assert read_metadata(fp16)["parity"] == "not checked: no CUDA"
    sig = io_signature(fp16)
    assert sig["inputs"][0]["dtype"] == "uint8" and sig["outputs"][0]["dtype"] == "float32"
    strict = runner.invoke(
        main, [str(trained / "model.pt"), str(tmp_path / "s.onnx"), "--require-fp16-check"]
    )
    assert strict.exit_code != 0 and "no CUDAExecutionProvider" in strict.output
    assert not (tmp_path / "s.onnx").exists()


def test_int8_gate_on_real_data(tmp_path: Path, fashion_trained: Path, shared_data: Path):
    dest = tmp_path / "model.onnx"
    result = export_onnx(fashion_trained, dest, ExportConfig(int8=True), log=lambda s: None)
    assert result.variant_parity["int8"].top1_agreement >= 0.99
    assert result.accuracy["fp32"] - result.accuracy["int8"] <= 0.005
    # the done-when check: an independent port agrees with fp32 and int8 on held-out images
    model = nb.load(torch.load(fashion_trained, weights_only=True)["model"])
    pixels, labels = read_train(shared_data / "train.csv.gz", limit=3000)
    held_out = split(pixels, labels).x_test
    ref = nb.predict_logits(model, held_out)
    fp32 = _session(dest).run(None, {"pixels": held_out})[0]
    int8 = _session(tmp_path / "model.int8.onnx").run(None, {"pixels": held_out})[0]
    assert np.abs(fp32 - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    assert (fp32.argmax(1) == ref.argmax(1)).all()
    assert (int8.argmax(1) == ref.argmax(1)).mean() >= 0.99
    np.testing.assert_allclose(reference_logits(model, DEFAULT_SPEC, held_out), ref, atol=1e-5)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"int8_min_agreement": 1.01}, "top-1 agreement"),  # unreachable bars: must refuse
        ({"int8_max_accuracy_drop": -1.0}, "accuracy drop"),
    ],
)
def test_int8_gate_refuses(tmp_path: Path, fashion_trained: Path, setting, message):
    config = ExportConfig(int8=True, **setting)
    with pytest.raises(ParityError, match=f"int8 variant refused.*{message}"):
        export_onnx(fashion_trained, tmp_path / "model.onnx", config, log=lambda s: None)
    assert not (tmp_path / "model.int8.onnx").exists()
    assert (tmp_path / "model.onnx").exists()  # the fp32 model passed its own gate


def test_reexport_removes_stale_variants(tmp_path: Path, trained: Path, exported: Path):
    shutil.copytree(exported.parent, tmp_path / "out")
    dest = tmp_path / "out" / "model.onnx"
    (tmp_path / "out" / "model.int8.failed.onnx").write_bytes(b"kept by --keep-failed once")
    assert dest.with_name("model.opt.onnx").is_file()
    lines: list[str] = []
    export_onnx(trained / "model.pt", dest, ExportConfig(), log=lines.append)  # no --optimize now
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.onnx", "model.parity.json"]
    assert any("removed model.opt.onnx" in line for line in lines)


def test_infer_refuses_a_variant_of_another_checkpoint(tmp_path: Path, exported: Path):
    from fcls.infer import Predictor
    from fcls.infer.common.errors import ModelError

    for name in ("model.onnx", "model.opt.onnx"):
        shutil.copy(exported.with_name(name), tmp_path / name)
    Predictor(tmp_path / "model.opt.onnx")  # siblings of one export: accepted
    set_metadata(tmp_path / "model.onnx", {"source_sha256": "f" * 64})  # fp32 re-exported
    with pytest.raises(ModelError, match=r"model\.opt\.onnx: this optimized model .* stale"):
        Predictor(tmp_path / "model.opt.onnx")
    Predictor(tmp_path / "model.onnx")  # the fp32 model itself is fine


@pytest.mark.parametrize("why", ["moved", "changed", "none recorded"])
def test_missing_training_data_never_falls_back_silently(
    tmp_path: Path, trained: Path, digits_csv: Path, why: str
):
    ckpt = Checkpoint.load(trained / "model.pt")
    if why == "moved":
        data = {**(ckpt.data or {}), "source": str(tmp_path / "gone" / "train.csv")}
        expected = "is not here"
    elif why == "changed":
        changed = tmp_path / "train.csv"
        changed.write_bytes(digits_csv.read_bytes().replace(b"\n0,", b"\n9,", 1))
        data = {**(ckpt.data or {}), "source": str(changed)}
        expected = "changed since training"
    else:
        data, expected = {}, "records no training data"
    ckpt = dataclasses.replace(ckpt, data=data or None)
    with pytest.raises(ConfigError, match=f"--int8 needs real images.*{expected}.*--data"):
        export_onnx(ckpt, tmp_path / "m.onnx", ExportConfig(int8=True), log=lambda s: None)
    assert not (tmp_path / "m.onnx").exists()
    lines: list[str] = []
    result = export_onnx(ckpt, tmp_path / "m.onnx", ExportConfig(), log=lines.append)
    assert result.parity.passed and any("notice: " in s and expected in s for s in lines)
    assert "random uint8 images" in " ".join(result.notices)


def test_model_trained_on_parquet_exports_on_its_own_rows(tmp_path: Path, digits_csv: Path):
    """The recorded training data is re-read as what it is (it was parsed as CSV: an error)."""
    from fcls.infer.convert import convert
    from fcls.train.config import TrainConfig
    from fcls.train.trainer import train

    data = tmp_path / "digits.parquet"
    convert(digits_csv, data, durable=False)
    run = tmp_path / "run"
    train(TrainConfig(out=run, data=data, max_epochs=1, device="cpu"), log=lambda s: None)
    result = export_onnx(run / "model.pt", tmp_path / "m.onnx", log=lambda s: None)
    assert result.parity.passed
    assert f"gate images: {data.resolve()} (the training run's own test split)" in result.notices
    assert not any("random uint8 images" in n for n in result.notices)
    meta = json.loads(read_metadata(tmp_path / "m.onnx")["training_data"])
    assert (
        meta["source"] == str(data.resolve())
        and meta["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    )

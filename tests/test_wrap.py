"""fcls-export wraps a user's own ONNX classifier: uint8 rows in, labels as torch gives them,
behind the same parity gate, int8 gate and drift profile; every bad case refused in one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from helpers import rgb_digits, write_eval_csv, write_rows_csv, write_train_csv
from torch import nn

from fcls.export.cli import main as export_main
from fcls.export.graph import io_signature, read_metadata
from fcls.infer.cli.eval import main as eval_main
from fcls.infer.cli.infer import main as infer_main
from fcls.infer.common.spec import ImageSpec
from fcls.infer.engine.predictor import Predictor
from fcls.train.data import load_digits_32

ROWS = 400
SCALE = "1/255"


class SmallCNN(nn.Module):
    """A user's network: float [N, C, S, S] images (or flat [N, S*S*C] HWC rows with `flat`)."""

    def __init__(self, size: int = 32, channels: int = 1, classes: int = 10, flat: bool = False):
        super().__init__()
        self.size, self.channels, self.flat = size, channels, flat
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1),
            nn.Tanh(),  # saturates on raw 0..255 pixels: a missing input scale shows
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(16 * (size // 4) ** 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flat:
            x = x.reshape(-1, self.size, self.size, self.channels).permute(0, 3, 1, 2)
        return self.head(torch.flatten(self.features(x), 1))


def fit(model: nn.Module, x: torch.Tensor, y: np.ndarray, steps: int = 80) -> nn.Module:
    """A few Adam steps on already-transformed inputs `x`; returns the eval-mode model."""
    torch.manual_seed(0)
    labels = torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny steps: more threads only contend on a shared machine
    try:
        for _ in range(steps):
            idx = torch.randint(0, len(x), (64,))
            loss = nn.functional.cross_entropy(model(x[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def to_onnx(model: nn.Module, example: torch.Tensor, path: Path, dynamic: bool = True) -> Path:
    """A plain legacy `torch.onnx.export`, as a user writes it."""
    axes = {"x": {0: "N"}, "scores": {0: "N"}} if dynamic else None
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["x"],
        output_names=["scores"],
        dynamic_axes=axes,
        dynamo=False,
    )
    return path


def torch_labels(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).argmax(1).numpy()


@pytest.fixture(scope="module")
def digits400() -> tuple[np.ndarray, np.ndarray]:
    pixels, labels = load_digits_32()
    return pixels[:ROWS], labels[:ROWS]


@pytest.fixture(scope="module")
def scaled_cnn(digits400) -> nn.Module:
    """SmallCNN trained on the digits scaled to 0..1, as the user's notebook would."""
    pixels, labels = digits400
    x = torch.from_numpy(pixels).float().reshape(-1, 1, 32, 32) / 255
    return fit(SmallCNN(), x, labels)


@pytest.fixture(scope="module")
def work(tmp_path_factory, digits400, scaled_cnn) -> dict[str, Path]:
    """The user's ONNX file, the train CSV, the rows to label, and the wrapped model."""
    d = tmp_path_factory.mktemp("wrap")
    pixels, labels = digits400
    example = torch.zeros(2, 1, 32, 32)
    paths = {
        "user": to_onnx(scaled_cnn, example, d / "user.onnx"),
        "data": write_train_csv(d / "train.csv", pixels, labels),
        "rows": write_eval_csv(d / "rows.csv", pixels),
        "model": d / "model.onnx",
    }
    args = ["--data", paths["data"], "--input-scale", SCALE, "--int8"]
    result = export(paths["user"], "-o", paths["model"], *args)
    result.check()
    return paths


class Ran:
    def __init__(self, result) -> None:
        self.code, self.output = result.exit_code, result.output

    def check(self) -> Ran:
        assert self.code == 0, self.output
        return self

    def refused(self, *needles: str) -> str:
        """The one line of a refusal: non-zero exit, no traceback, each needle in it."""
        assert self.code != 0, self.output
        assert "Traceback" not in self.output, self.output
        lines = [line for line in self.output.splitlines() if line.strip()]
        assert len(lines) == 1 or lines[-1].startswith("Error"), self.output
        for needle in needles:
            assert needle in lines[-1], lines[-1]
        return lines[-1]


def export(*args: object) -> Ran:
    return Ran(CliRunner().invoke(export_main, [str(a) for a in args]))


def labels_of(csv_path: Path) -> np.ndarray:
    lines = csv_path.read_text().splitlines()
    col = lines[0].split(",").index("label")
    return np.array([int(line.split(",")[col]) for line in lines[1:]])


def test_wrapped_labels_every_row_as_torch(work, digits400, scaled_cnn, tmp_path):
    pixels, _ = digits400
    out = tmp_path / "labels.csv"
    result = Ran(
        CliRunner().invoke(
            infer_main, [str(work["rows"]), "-m", str(work["model"]), "-o", str(out)]
        )
    )
    result.check()
    x = torch.from_numpy(pixels).float().reshape(-1, 1, 32, 32) / 255
    expected = torch_labels(scaled_cnn, x)
    assert (labels_of(out) == expected).all()
    assert "fed raw 0..255" not in result.output  # a wrapped model needs no notice
    with Predictor(work["user"], "cpu", 1) as raw:  # unwrapped: fed 0..255, it answers otherwise
        assert (raw.predict(pixels) != expected).mean() > 0.1


def test_wrapped_graph_matches_fcls_interface(work):
    sig = io_signature(work["model"])
    assert sig["inputs"] == [{"name": "pixels", "dtype": "uint8", "shape": ["batch", 1024]}]
    assert [(o["name"], o["dtype"], o["shape"]) for o in sig["outputs"]] == [
        ("logits", "float32", ["batch", 10]),
        ("label", "int64", ["batch"]),
    ]
    meta = read_metadata(work["model"])
    assert meta["architecture"] == "onnx:user.onnx" and meta["variant"] == "fp32"
    assert ImageSpec.from_json(meta["image_spec"]) == ImageSpec(32, 32, 1)
    assert json.loads(meta["input_transform"])["scale"] == pytest.approx(1 / 255)
    assert json.loads(meta["parity"])["max_abs_dlogit"] <= 1e-4


def test_int8_variant_and_drift_profile_gated(work):
    int8 = work["model"].with_name("model.int8.onnx")
    meta = read_metadata(int8)
    assert meta["variant"] == "int8" and json.loads(meta["parity"])["passed"]
    report = json.loads(work["model"].with_name("model.parity.json").read_text())
    assert report["variants"]["int8"]["top1_agreement"] >= 0.99
    assert report["drift_profile"]["rows"] > 0
    with Predictor(work["model"], "cpu", 1) as fp32, Predictor(int8, "cpu", 1) as q:
        assert fp32.profile is not None and q.profile is not None
        assert fp32.notice is None


def test_eval_on_wrapped_model(work, tmp_path):
    out = tmp_path / "report"
    Ran(
        CliRunner().invoke(eval_main, [str(work["data"]), "-m", str(work["model"]), "-o", str(out)])
    ).check()
    report = json.loads((out / "report.json").read_text())
    assert report  # fcls-eval scores it as one of its own


def test_scale_as_decimal_gives_the_same_graph(work, tmp_path):
    dest = tmp_path / "decimal.onnx"
    export(
        work["user"], dest, "--data", work["data"], "--input-scale", "0.00392156862745098"
    ).check()
    rows = np.random.default_rng(0).integers(0, 256, (50, 1024), dtype=np.uint8)
    with Predictor(dest, "cpu", 1) as a, Predictor(work["model"], "cpu", 1) as b:
        assert np.array_equal(a.logits(rows), b.logits(rows))


def test_fixed_batch_export_is_rewritten(work, scaled_cnn, digits400, tmp_path):
    user = to_onnx(scaled_cnn, torch.zeros(1, 1, 32, 32), tmp_path / "fixed.onnx", dynamic=False)
    dest = tmp_path / "m.onnx"
    export(user, "-o", dest, "--data", work["data"], "--input-scale", SCALE).check()
    pixels, _ = digits400
    x = torch.from_numpy(pixels).float().reshape(-1, 1, 32, 32) / 255
    with Predictor(dest, "cpu", 1) as p:
        assert (p.predict(pixels) == torch_labels(scaled_cnn, x)).all()


def test_symbolic_image_size_takes_image_size(work, tmp_path):
    model = onnx.load(str(work["user"]))
    for dim, name in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], "HW"):
        dim.dim_param = name  # a graph exported with dynamic height and width
    user = tmp_path / "hw.onnx"
    onnx.save(model, str(user))
    base = [user, "-o", tmp_path / "m.onnx", "--data", work["data"], "--input-scale", SCALE]
    export(*base).refused("input x float32 [N, 1, H, W]", "--image-size")
    export(*base, "--image-size", "32x32").check()
    with Predictor(tmp_path / "m.onnx", "cpu", 1) as p, Predictor(work["model"], "cpu", 1) as q:
        rows = np.random.default_rng(1).integers(0, 256, (20, 1024), dtype=np.uint8)
        assert np.array_equal(p.logits(rows), q.logits(rows))


class BakedBatch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(1, -1)[:, :20].reshape(1, 10, 2).sum(-1)  # batch 1 baked in


def test_baked_fixed_batch_is_refused(work, tmp_path):
    user = to_onnx(BakedBatch(), torch.zeros(1, 1, 32, 32), tmp_path / "baked.onnx", dynamic=False)
    result = export(user, "-o", tmp_path / "m.onnx", "--data", work["data"])
    result.refused("input x float32 [1, 1, 32, 32]", "fixed batch", "dynamic_axes")
    assert not (tmp_path / "m.onnx").exists()


def test_flat_input_form(digits400, tmp_path):
    pixels, labels = digits400
    model = fit(SmallCNN(flat=True), torch.from_numpy(pixels).float() / 255, labels, steps=60)
    user = to_onnx(model, torch.zeros(2, 1024), tmp_path / "flat.onnx")
    data = write_train_csv(tmp_path / "train.csv", pixels, labels)
    dest = tmp_path / "m.onnx"
    export(user, "-o", dest, "--data", data, "--input-scale", SCALE).check()
    expected = torch_labels(model, torch.from_numpy(pixels).float() / 255)
    with Predictor(dest, "cpu", 1) as p:
        assert (p.predict(pixels) == expected).all()


MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


def test_rgb_mean_std_per_channel(tmp_path):
    pixels, labels = rgb_digits(16, 3)
    hwc = torch.from_numpy(pixels).float().reshape(-1, 16, 16, 3) / 255
    x = (hwc - torch.tensor(MEAN)) / torch.tensor(STD)
    x = x.permute(0, 3, 1, 2).contiguous()
    model = fit(SmallCNN(16, 3, 3), x, labels, steps=60)
    user = to_onnx(model, torch.zeros(2, 3, 16, 16), tmp_path / "rgb.onnx")
    data = write_rows_csv(tmp_path / "rgb.csv", pixels, labels)
    dest = tmp_path / "m.onnx"
    mean, std = ",".join(map(str, MEAN)), ",".join(map(str, STD))
    args = ["--input-scale", SCALE, "--input-mean", mean, "--input-std", std]
    export(user, "-o", dest, "--data", data, "--image-size", "16x16x3", *args).check()
    with Predictor(dest, "cpu", 1) as p:
        assert p.spec == ImageSpec(16, 16, 3, ("0", "1", "2"))
        assert (p.predict(pixels) == torch_labels(model, x)).all()
    # one std for every channel: accepted; three means for a model trained with them: same
    export(user, "-o", tmp_path / "one.onnx", "--data", data, "--input-std", "0.5").check()


def int_input_model(path: Path) -> Path:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.INT64, ["N", 1024])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 10])
    node = onnx.helper.make_node("Cast", ["x"], ["y"], to=onnx.TensorProto.FLOAT)
    graph = onnx.helper.make_graph([node], "g", [x], [y])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


Case = Callable[[dict[str, Path], Path], tuple[list[object], tuple[str, ...]]]
REFUSALS: dict[str, Case] = {
    "image size vs input": lambda w, t: (
        [w["user"], "-o", t / "m.onnx", "--data", w["data"], "--image-size", "28x28"],
        ("input x float32 [N, 1, 32, 32]", "28x28"),
    ),
    "int input": lambda w, t: (
        [int_input_model(t / "int.onnx"), "-o", t / "m.onnx", "--data", w["data"]],
        ("input x int64 [N, 1024]", "float32"),
    ),
    "classes vs K": lambda w, t: (
        [w["user"], "-o", t / "m.onnx", "--data", three_classes(w, t)],
        ("10 classes", "name 3"),
    ),
    "no data": lambda w, t: ([w["user"], "-o", t / "m.onnx"], ("needs --data",)),
    "no output": lambda w, t: ([w["user"], "--data", w["data"]], ("-o model.onnx",)),
    "std 0": lambda w, t: (
        [w["user"], "-o", t / "m.onnx", "--data", w["data"], "--input-std", "0"],
        ("--input-std 0", "> 0"),
    ),
    "scale text": lambda w, t: (
        [w["user"], "-o", t / "m.onnx", "--data", w["data"], "--input-scale", "1/x"],
        ("--input-scale '1/x'",),
    ),
    "two means for 1 channel": lambda w, t: (
        [w["user"], "-o", t / "m.onnx", "--data", w["data"], "--input-mean", "0.1,0.2"],
        ("--input-mean 0.1,0.2", "give 1 or 1"),
    ),
    "fp16": lambda w, t: (
        [w["user"], "-o", t / "m.onnx", "--data", w["data"], "--fp16"],
        ("--fp16",),
    ),
    "not onnx": lambda w, t: (
        [garbage(t / "bad.onnx"), "-o", t / "m.onnx", "--data", w["data"]],
        ("bad.onnx",),
    ),
    "missing": lambda w, t: (
        [t / "gone.onnx", "-o", t / "m.onnx", "--data", w["data"]],
        ("no such ONNX model",),
    ),
    "overwrite": lambda w, t: ([w["user"], "-o", w["user"], "--data", w["data"]], ("overwrite",)),
    "wrap option on a checkpoint": lambda w, t: (
        [t / "model.pt", "-o", t / "m.onnx", "--input-scale", SCALE],
        ("--input-scale", "only for wrapping"),
    ),
}


def three_classes(w: dict[str, Path], t: Path) -> Path:
    pixels, _ = load_digits_32()
    return write_train_csv(t / "three.csv", pixels[:60], np.arange(60) % 3)


def garbage(path: Path) -> Path:
    path.write_bytes(b"\x08\x07not a model at all")
    return path


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_are_one_line(work, tmp_path, case):
    args, needles = REFUSALS[case](work, tmp_path)
    export(*args).refused(*needles)
    assert not (tmp_path / "m.onnx").exists()


def test_unwrapped_model_notice(work):
    with Predictor(work["user"], "cpu", 1) as p:
        assert p.notice is not None and "\n" not in p.notice
        assert "raw 0..255" in p.notice and "notebook" in p.notice
        assert f"fcls-export {work['user']} -o model.onnx --data" in p.notice
        assert "--input-scale" in p.notice


def test_infer_says_the_notice_once(work, tmp_path):
    out = tmp_path / "raw.csv"
    args = [str(work["rows"]), "-m", str(work["user"]), "-o", str(out)]
    result = Ran(CliRunner().invoke(infer_main, args)).check()
    assert result.output.count("fed raw 0..255") == 1, result.output


def test_eval_says_the_notice_once(work, tmp_path):
    args = [str(work["data"]), "-m", str(work["user"]), "-o", str(tmp_path / "report")]
    result = Ran(CliRunner().invoke(eval_main, args)).check()
    assert result.output.count("fed raw 0..255") == 1, result.output


@pytest.mark.slow
def test_notebook_cnn_wrapped_labels_as_torch(digits400, tmp_path):
    """The issue's case: the notebook's FinalCNNet trained on 0..1 inputs, exported by a plain
    torch.onnx.export (its default exporter), wrapped with --input-scale: every row labelled
    as torch labels it, int8 gated, drift profile recorded."""
    import notebook_port as nb

    pixels, labels = digits400
    x = torch.from_numpy(pixels).float().reshape(-1, 1, 32, 32) / 255
    torch.manual_seed(0)
    model = nb.FinalCNNet()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    for _ in range(60):
        idx = torch.randint(0, len(x), (32,))
        loss = nn.functional.cross_entropy(model(x[idx]), torch.from_numpy(labels)[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    user = tmp_path / "notebook.onnx"
    axes = {"x": {0: "N"}, "scores": {0: "N"}}
    torch.onnx.export(
        model, (x[:2],), str(user), input_names=["x"], output_names=["scores"], dynamic_axes=axes
    )
    data = write_train_csv(tmp_path / "train.csv", pixels, labels)
    dest = tmp_path / "model.onnx"
    export(user, "-o", dest, "--data", data, "--input-scale", SCALE, "--int8").check()
    out = tmp_path / "labels.csv"
    rows = write_eval_csv(tmp_path / "rows.csv", pixels)
    Ran(CliRunner().invoke(infer_main, [str(rows), "-m", str(dest), "-o", str(out)])).check()
    assert (labels_of(out) == torch_labels(model, x)).all()
    report = json.loads(dest.with_name("model.parity.json").read_text())
    assert report["variants"]["int8"]["passed"] and report["drift_profile"]["rows"] > 0
    assert read_metadata(dest.with_name("model.int8.onnx"))["variant"] == "int8"


def test_library_wrap_onnx(work, tmp_path):
    from fcls.export import ExportConfig, WrapConfig, wrap_onnx

    lines: list[str] = []
    config = ExportConfig(data=work["data"], optimize=True)
    result = wrap_onnx(
        work["user"], tmp_path / "m.onnx", config, WrapConfig(input_scale=1 / 255), lines.append
    )
    assert result.exporter == "onnx.compose" and result.parity.passed
    assert set(result.variants) == {"optimized"} and result.profile is not None
    assert any(
        line.startswith("wrapping user.onnx: input x float32 [N, 1, 32, 32]") for line in lines
    )


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"input_scale": 0.0}, "--input-scale 0"),
        ({"input_scale": float("nan")}, "--input-scale nan"),
        ({"input_std": (1.0, -2.0)}, "--input-std 1,-2"),
        ({"input_mean": (float("inf"),)}, "--input-mean inf"),
    ],
)
def test_wrap_config_refuses(fields, message):
    from fcls.export import WrapConfig
    from fcls.infer.common.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        WrapConfig(**fields)


def test_unlabelled_rows_gate_with_numbered_classes(work, tmp_path):
    dest = tmp_path / "m.onnx"
    export(work["user"], "-o", dest, "--data", work["rows"], "--input-scale", SCALE).check()
    with Predictor(dest, "cpu", 1) as p, Predictor(work["model"], "cpu", 1) as q:
        assert p.class_names == [str(i) for i in range(10)] and p.profile is not None
        rows = np.random.default_rng(2).integers(0, 256, (20, 1024), dtype=np.uint8)
        assert np.array_equal(p.logits(rows), q.logits(rows))


def test_bench_takes_the_wrapped_model_without_a_checkpoint(work):
    from fcls.bench.artifacts import models_from

    models = models_from(work["model"], None)  # user.onnx lies beside it, with its sha256
    assert models.checkpoint is None and models.architecture == "onnx:user.onnx"
    assert models.no_torch == "PyTorch not measured: model.onnx wraps user.onnx, no checkpoint"
    assert set(models.onnx) >= {"ort", "ort-int8"} and models.spec == ImageSpec(32, 32, 1)


@pytest.mark.slow
def test_ray_scores_a_wrapped_model_as_the_local_engine(work, tmp_path, ray_local):
    """The Ray engine takes a wrapped model as any fcls model: the local engine's bytes, the
    wrapped int8 variant too."""
    from fcls.infer.engine.pipeline import predict_csv
    from fcls.infer.engine.ray import predict_csv_ray

    for model in (work["model"], work["model"].with_suffix(".int8.onnx")):
        out = tmp_path / model.stem
        out.mkdir()
        summaries = predict_csv_ray([str(work["rows"])], out, model, shard_bytes=200_000)
        assert [s.rows for s in summaries] == [400]
        local = tmp_path / f"{model.stem}.local.csv"
        predict_csv(work["rows"], local, model)
        assert (out / "rows.results.csv").read_bytes() == local.read_bytes()

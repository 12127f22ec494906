"""fcls.train.registry and fcls.train.networks: the notebook's eleven networks, by name, for
any image size, channels and class count; a user's own network; checkpoints of each."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import USER_NET

from fcls.infer.common.errors import CheckpointError, ConfigError
from fcls.infer.common.spec import DEFAULT_SPEC, ImageSpec
from fcls.train.checkpoint import FORMAT, Checkpoint
from fcls.train.config import FAST, NOTEBOOK
from fcls.train.networks import GeometryError, smallest_input, trace_batchnorm_pairs
from fcls.train.predict import predict_logits, to_input
from fcls.train.registry import (
    UnknownModelError,
    create_model,
    list_models,
    model_info,
    register_model,
)
from fcls.train.steps import EpochPlan, make_optimizer, train_epoch

NAMES = [
    "BaseNetwork",
    "WideNetwork",
    "DeepNetwork",
    "BatchNormNetwork",
    "DropoutNetwork",
    "CNN",
    "WideCNN",
    "DeepCNN",
    "BatchNormCNN",
    "DropoutCNN",
    "FinalCNNet",
]
SIZES = {"28x28": ImageSpec(28, 28, 1), "32x32": DEFAULT_SPEC}
# the notebook's first dense layer after the convolutions, at its 32x32 images
NOTEBOOK_FC1 = {"CNN": 2304, "WideCNN": 2304, "DeepCNN": 4608, "BatchNormCNN": 2304,
                "DropoutCNN": 2304, "FinalCNNet": 4608}  # fmt: skip


# beside the shared user network (tests/helpers.py): what a user can get wrong
BROKEN_NETS = """

class Broken(nn.Module):
    def __init__(self, spec):
        raise ValueError("needs RGB")


NOT_A_MODULE = 42
"""


def test_the_notebook_networks_in_its_order():
    assert list_models() == NAMES


@pytest.mark.parametrize("name", ["finalcnnet", "FINALCNNET", " FinalCNNet ", "deepcnn"])
def test_names_are_case_insensitive(name: str):
    model = create_model(name, DEFAULT_SPEC)
    assert type(model).__name__.lower() == name.strip().lower()


def test_unknown_name_is_one_line_listing_the_networks():
    with pytest.raises(UnknownModelError) as info:
        create_model("ResNet50", DEFAULT_SPEC)
    message = str(info.value)
    assert "\n" not in message and "unknown network 'ResNet50'" in message
    assert all(name in message for name in NAMES)
    assert isinstance(info.value, ConfigError)


def test_a_second_class_of_a_registered_name_is_refused():
    class FinalCNNet(torch.nn.Module):  # a different class under a taken name
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_model(FinalCNNet)


@pytest.mark.parametrize("name", NAMES)
def test_the_notebook_layers_at_its_size(name: str):
    model = create_model(name, DEFAULT_SPEC)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    first_conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    if first_conv is None:
        assert linear[0].in_features == 32 * 32  # the notebook's nn.Linear(32 * 32, 512)
    else:
        assert first_conv.in_channels == 1
        fc1 = model.fc1  # type: ignore[attr-defined]
        assert fc1.in_features == NOTEBOOK_FC1[name]
    assert linear[-1].out_features == 10


@pytest.mark.parametrize("name", NAMES)
def test_too_small_images_are_refused_naming_the_smallest(name: str):
    """The smallest size is computed from the layers: it builds, one pixel less does not."""
    tiny = ImageSpec(2, 2, 1)
    if name.endswith("Network"):  # dense networks take any size
        assert create_model(name, tiny) is not None
        return
    with pytest.raises(GeometryError) as info:
        create_model(name, tiny)
    message = str(info.value)
    side = int(message.split("at least ")[1].split("x")[0])
    assert message == f"{name} needs images of at least {side}x{side}; the data is 2x2"
    model = create_model(name, ImageSpec(side, side, 1)).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 1, side, side)).shape == (2, 10)
    with pytest.raises(GeometryError):
        create_model(name, ImageSpec(side, side - 1, 1))
    assert side == {"FinalCNNet": 23}.get(name, 10)


def test_smallest_input_of_layer_stacks():
    conv3, pool = torch.nn.Conv2d(1, 1, 3), torch.nn.MaxPool2d(2, 2)
    assert smallest_input([conv3]) == (3, 3)
    assert smallest_input([conv3, pool]) == (4, 4)
    assert smallest_input([conv3, pool, conv3, pool]) == (10, 10)


@pytest.mark.slow  # 22 cases of 1-3 s
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("name", NAMES)
def test_every_network_trains_an_epoch(name: str, size: str):
    """One epoch of each recipe's kind of batches (x4 copies, per-batch augmentation)."""
    spec = SIZES[size]
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (40, spec.n_pixels), dtype=np.uint8))
    y = torch.from_numpy(rng.integers(0, spec.n_classes, 40))
    for recipe in (NOTEBOOK, FAST):
        torch.manual_seed(0)
        model = create_model(name, spec)
        model.scale_dropout(recipe.dropout)  # type: ignore[operator]
        before = {k: v.clone() for k, v in model.state_dict().items()}
        stage = recipe.stages[0]
        augment = np.random.default_rng(1) if recipe.augment == "batch" else None
        plan = EpochPlan(recipe, stage, 16, 0, 3, None, augment, spec=spec)
        acc, loss = train_epoch(model, make_optimizer(stage, model), x, y, plan, progress=False)
        assert 0.0 <= acc <= 1.0 and np.isfinite(loss)
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
        assert changed, f"{name} did not learn"
        logits = predict_logits(model, x, spec=spec)
        assert logits.shape == (40, spec.n_classes)


@pytest.mark.parametrize("name", NAMES)
def test_info_batchnorm_pairs_and_serving_module(name: str):
    spec = ImageSpec(28, 28, 3, ("a", "b", "c"))
    model = create_model(name, spec).eval()
    info = model_info(name, spec)
    assert info.name == name and info.multiply_adds == model.multiply_adds()  # type: ignore[operator]
    assert info.parameters == sum(p.numel() for p in model.parameters())
    pairs = model.batchnorm_pairs()  # type: ignore[operator]
    assert pairs == trace_batchnorm_pairs(model, spec)
    assert bool(pairs) == ("BatchNorm" in name or name == "FinalCNNet")
    for layer, norm in pairs:
        assert isinstance(model.get_submodule(norm), torch.nn.modules.batchnorm._BatchNorm)
        assert isinstance(model.get_submodule(layer), torch.nn.Conv2d | torch.nn.Linear)
    if name == "BatchNormNetwork":
        assert pairs[0] == ("linear_relu_stack.0", "linear_relu_stack.1")
    x = to_input(torch.randint(0, 256, (4, spec.n_pixels), dtype=torch.uint8), spec)
    serving = model.serving_module()  # type: ignore[operator]
    assert not serving.training
    with torch.no_grad():
        torch.testing.assert_close(serving(x), model(x), rtol=1e-5, atol=1e-4)


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of the user's, importable as `fcls_user_net` for this test."""
    (tmp_path / "fcls_user_net.py").write_text(USER_NET + BROKEN_NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "fcls_user_net"


def test_user_network_by_module_and_class(user_module: str):
    model = create_model(f"{user_module}:Tiny", ImageSpec(8, 8, 3, ("a", "b")))
    assert type(model).__name__ == "Tiny" and model.fc.out_features == 2
    for bad, message in [
        (f"{user_module}:Missing", "fcls_user_net has no Missing"),
        (f"{user_module}:NOT_A_MODULE", "NOT_A_MODULE is a int, not a torch.nn.Module subclass"),
        ("no_such_pkg.mod:Net", "cannot import no_such_pkg.mod (ModuleNotFoundError"),
        (":Net", "expected package.module:ClassName"),
    ]:
        with pytest.raises(UnknownModelError, match=re.escape(message)) as info:
            create_model(bad, DEFAULT_SPEC)
        assert "\n" not in str(info.value)
    with pytest.raises(
        ConfigError, match=r"could not be built for 32x32 images \(ValueError: needs RGB"
    ):
        create_model(f"{user_module}:Broken", DEFAULT_SPEC)


def _weights(name: str, spec: ImageSpec) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return create_model(name, spec).state_dict()


@pytest.mark.parametrize("version", [0, 1, 2])
def test_older_checkpoints_load_as_finalcnnet_at_32x32(tmp_path: Path, version: int):
    state = _weights("FinalCNNet", DEFAULT_SPEC)
    names = [f"k{i}" for i in range(10)]
    saved: object = state
    if version:
        saved = {"model": state, "class_names": names, "metrics": {"test_accuracy": 0.5}}
        if version == 2:
            saved["format"] = 2  # type: ignore[index]
    torch.save(saved, tmp_path / "old.pt")
    ckpt = Checkpoint.load(tmp_path / "old.pt")
    assert ckpt.format == version and ckpt.architecture == "FinalCNNet"
    assert ckpt.spec.size == "32x32"
    assert ckpt.class_names == (tuple(names) if version else tuple("0123456789"))
    assert type(ckpt.model).__name__ == "FinalCNNet" and not ckpt.model.training


@pytest.mark.parametrize("name", ["CNN", "FinalCNNet", "BatchNormNetwork"])
def test_checkpoint_round_trip_rebuilds_the_network(tmp_path: Path, name: str):
    spec = ImageSpec(28, 24, 3, ("cat", "dog", "eel"))
    weights = _weights(name, spec)
    path = Checkpoint(weights, architecture=name, spec=spec).save(tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT == 3 and raw["architecture"] == name
    assert raw["image_spec"]["class_names"] == ["cat", "dog", "eel"]
    assert raw["input"]["shape"] == [28 * 24 * 3]
    ckpt = Checkpoint.load(path)
    assert ckpt.spec == spec and ckpt.class_names == spec.class_names
    for k, v in ckpt.model.state_dict().items():
        torch.testing.assert_close(v, weights[k], rtol=0, atol=0)


def test_weights_that_do_not_fit_name_the_network(tmp_path: Path):
    spec = ImageSpec(28, 28, 1)
    path = Checkpoint(_weights("CNN", DEFAULT_SPEC), architecture="CNN", spec=spec).save(
        tmp_path / "m.pt"
    )
    with pytest.raises(CheckpointError, match=r"not a CNN checkpoint \(wrong shape: fc1\.weight"):
        Checkpoint.load(path)
    wrong = Checkpoint(_weights("CNN", DEFAULT_SPEC), architecture="NoNet").save(tmp_path / "n.pt")
    with pytest.raises(CheckpointError, match=r"cannot rebuild its network.*unknown network"):
        Checkpoint.load(wrong)


def test_user_network_checkpoint(tmp_path: Path, user_module: str):
    arch, spec = f"{user_module}:Tiny", ImageSpec(8, 8, 1, ("a", "b"))
    path = Checkpoint(_weights(arch, spec), architecture=arch, spec=spec).save(tmp_path / "u.pt")
    ckpt = Checkpoint.load(path)
    assert ckpt.architecture == arch and type(ckpt.model).__name__ == "Tiny"


def test_arch_list_prints_every_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from fcls.infer.formats import sources
    from fcls.train.cli import main

    result = CliRunner().invoke(main, ["--arch", "list"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == NAMES
    assert "4,798,986 parameters" in lines[-1] and "32.79 M multiply-adds" in lines[-1]
    rows = np.random.default_rng(0).integers(0, 256, (3, 28 * 28), dtype=np.uint8)
    data = tmp_path / "t.csv"
    header = ",".join([*(f"pixel{i}" for i in range(28 * 28)), "label"])
    data.write_text(header + "\n" + "".join(",".join(map(str, r)) + ",7\n" for r in rows))
    read: list[int | None] = []
    real = sources.read_train

    def read_train(
        src: object, limit: int | None = None, **kwargs: object
    ) -> tuple[np.ndarray, np.ndarray]:
        read.append(limit)
        return real(src, limit, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sources, "read_train", read_train)
    at_28 = CliRunner().invoke(main, ["--arch", "LIST", "--data", str(data)])
    assert read == [1], at_28.output  # only the first row is read
    assert at_28.exit_code == 0 and "17.79 M" in at_28.stdout.splitlines()[-1]
    small = CliRunner().invoke(main, ["--arch", "list", "--image-size", "16x16x3"])
    assert small.exit_code == 0
    assert "FinalCNNet         needs images of at least 23x23; the data is 16x16" in small.stdout


def test_typed_helpers_for_the_exporter(user_module: str):
    from fcls.train.networks import batchnorm_pairs, serving_module

    final = create_model("FinalCNNet", DEFAULT_SPEC)
    assert batchnorm_pairs(final) == final.batchnorm_pairs()  # type: ignore[operator]
    assert type(serving_module(final)).__name__ == "_ChannelsLastHead"
    mine = create_model(f"{user_module}:Tiny", DEFAULT_SPEC)
    assert batchnorm_pairs(mine) == () and serving_module(mine) is mine and not mine.training

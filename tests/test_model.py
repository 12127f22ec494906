"""fcls.train.model: FinalCNNet is the notebook's, parameter for parameter, at any geometry."""

from __future__ import annotations

import copy

import notebook_port as nb
import pytest
import torch

from fcls.infer.common.spec import DEFAULT_SPEC, ImageSpec
from fcls.train.model import FinalCNNet
from fcls.train.predict import to_input

SPECS = {
    "32x32": DEFAULT_SPEC,
    "28x28": ImageSpec(28, 28, 1),
    "32x32x3": ImageSpec(32, 32, 3, ("a", "b", "c")),
    "24x30x2": ImageSpec(24, 30, 2, ("x", "y")),  # not square: maps of other heights and widths
}
# Multiply-adds per image at 32x32x1, counted layer by layer as fcls 0.1 wrote them down
# (conv: out_h*out_w*out_c*in_c*k*k); the counted forward pass must give the same.
NOTEBOOK_MACS = (
    31 * 31 * 64 * 1 * 4  # conv1 2x2 -> (64, 31, 31)
    + 14 * 14 * 128 * 64 * 4  # conv2 on the pooled (64, 15, 15)
    + 6 * 6 * 256 * 128 * 4  # conv3 on the pooled (128, 7, 7)
    + 3 * 3 * 512 * 256 * 16  # conv4 4x4 -> (512, 3, 3)
    + 4608 * 512
    + 512 * 256
    + 256 * 128
    + 128 * 64
    + 64 * 10
)


def _rows(spec: ImageSpec, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, spec.n_pixels), dtype=torch.uint8, generator=g)


def test_state_dict_loads_both_ways_strict():
    ours, theirs = FinalCNNet(), nb.FinalCNNet()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert list(shapes) == list(nb.FinalCNNet().state_dict())  # same names, same order
    assert shapes["fc1.weight"] == (512, 4608) and shapes["fc5.weight"] == (10, 64)


def test_same_outputs_as_notebook_class():
    torch.manual_seed(0)
    ours = FinalCNNet().eval()
    theirs = nb.load(ours.state_dict())
    pixels = _rows(DEFAULT_SPEC, 8)
    with torch.no_grad():
        a = ours(to_input(pixels))
        b = theirs(pixels.float().reshape(-1, 1, 32, 32))
    assert a.shape == (8, 10)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_multiply_adds_equal_the_hand_count():

    assert FinalCNNet().multiply_adds() == NOTEBOOK_MACS == 32_793_472
    # 28x28: conv maps 27 -> 13 -> 12 -> 6 -> 5 -> 2 (conv4), fc1 over 512*2*2
    at_28 = (
        27 * 27 * 64 * 4
        + 12 * 12 * 128 * 64 * 4
        + 5 * 5 * 256 * 128 * 4
        + 2 * 2 * 512 * 256 * 16
        + 2048 * 512
        + 512 * 256
        + 256 * 128
        + 128 * 64
        + 64 * 10
    )
    assert FinalCNNet(SPECS["28x28"]).multiply_adds() == at_28


@pytest.mark.parametrize("size", list(SPECS))
def test_built_for_the_spec(size: str):
    spec = SPECS[size]
    model = FinalCNNet(spec).eval()
    assert model.conv1.in_channels == spec.channels and model.fc5.out_features == spec.n_classes
    with torch.no_grad():
        assert model(to_input(_rows(spec, 3), spec)).shape == (3, spec.n_classes)


def _twin(spec: ImageSpec, train: bool) -> tuple[FinalCNNet, FinalCNNet]:
    torch.manual_seed(0)
    a = FinalCNNet(spec).double().train(train)
    b = FinalCNNet(spec).double().train(train)
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("size", list(SPECS))
def test_fast_forward_is_forward_in_train_mode_with_its_gradients(size: str):
    """Same dropout draws, same outputs and weight gradients (float64: only rounding differs)."""
    spec = SPECS[size]
    a, b = _twin(spec, train=True)
    x = to_input(_rows(spec, 16), spec).double()
    y = torch.randint(0, spec.n_classes, (16,))
    torch.manual_seed(1)
    out_a = a(x)
    torch.manual_seed(1)
    out_b = b.fast_forward(x)
    torch.testing.assert_close(out_b, out_a, rtol=1e-10, atol=1e-10)
    torch.nn.functional.cross_entropy(out_a, y).backward()
    torch.nn.functional.cross_entropy(out_b, y).backward()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert p.grad is not None and q.grad is not None
        if name.endswith("bias") and "bn" not in name and name != "fc5.bias":
            continue  # a bias before BatchNorm has gradient 0: both are rounding noise
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-8, atol=1e-12, msg=name)
    for (name, buf), other in zip(a.named_buffers(), b.buffers()):
        torch.testing.assert_close(other, buf, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("size", list(SPECS))
def test_fast_forward_is_forward_in_eval_mode(size: str):
    spec = SPECS[size]
    a, b = _twin(spec, train=False)
    x = to_input(_rows(spec, 16), spec).double()
    with torch.inference_mode():
        torch.testing.assert_close(b.fast_forward(x), a(x), rtol=1e-10, atol=1e-10)
    fp32 = FinalCNNet(spec).eval()
    with torch.inference_mode():
        x32 = x.float()
        torch.testing.assert_close(fp32.fast_forward(x32), fp32(x32), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("size", list(SPECS))
def test_serving_module_computes_forward(size: str):
    """Features flattened (h, w, c) with fc1's columns permuted: the same function."""
    spec = SPECS[size]
    torch.manual_seed(0)
    model = FinalCNNet(spec).double().eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    serving = model.serving_module()
    assert not serving.training
    x = to_input(_rows(spec, 8), spec).double()
    with torch.no_grad():
        torch.testing.assert_close(serving(x), model(x), rtol=1e-10, atol=1e-10)
    for k, v in model.state_dict().items():  # the network itself is left as it was
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_serving_module_is_todays_export_graph_at_the_default_spec():
    """The ops fcls-export's ServingModel ran before networks had serving_module()."""
    torch.manual_seed(0)
    model = FinalCNNet().eval()
    today = copy.deepcopy(model)  # ServingModel's steps, as fcls-export ran them
    fc1 = today.fc1.weight.data  # (512, 4608) over (c=512, h=3, w=3)
    today.fc1.weight.data = fc1.reshape(512, 512, 3, 3).permute(0, 2, 3, 1).reshape(512, 4608)
    x = to_input(_rows(DEFAULT_SPEC, 8))
    with torch.no_grad():
        want = today.classifier(today.features(x).permute(0, 2, 3, 1).reshape(-1, 4608))
        torch.testing.assert_close(model.serving_module()(x), want, rtol=0, atol=0)


def test_batchnorm_pairs_in_forward_order():
    from fcls.train.networks import trace_batchnorm_pairs

    model = FinalCNNet()
    pairs = model.batchnorm_pairs()
    assert pairs[0] == ("conv1", "conv1_bn") and pairs[-1] == ("fc4", "fc4_bn") and len(pairs) == 8
    assert pairs == trace_batchnorm_pairs(model, DEFAULT_SPEC)  # what a forward pass shows


def test_to_input_reads_rows_as_hwc():
    spec = ImageSpec(2, 3, 3, ("a", "b"))
    row = torch.arange(18, dtype=torch.uint8)[None]  # value = (r * 3 + c) * 3 + channel
    x = to_input(row, spec)
    assert x.shape == (1, 3, 2, 3) and x.dtype == torch.float32
    for r in range(2):
        for c in range(3):
            for ch in range(3):
                assert x[0, ch, r, c] == (r * 3 + c) * 3 + ch


def test_scale_dropout_changes_only_dropout_probabilities():
    model = FinalCNNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.scale_dropout(0.5)
    ps = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout | torch.nn.Dropout2d)]
    assert ps == [0.05, 0.15, 0.25, 0.25, 0.05, 0.15, 0.25, 0.25]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)

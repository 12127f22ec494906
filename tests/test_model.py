"""fcls.train.model: FinalCNNet is the notebook's, parameter for parameter."""

from __future__ import annotations

import notebook_port as nb
import torch

from fcls.train.model import MACS_PER_IMAGE, FinalCNNet, to_input


def test_state_dict_loads_both_ways_strict():
    ours, theirs = FinalCNNet(), nb.FinalCNNet()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}


def test_same_outputs_as_notebook_class():
    torch.manual_seed(0)
    ours = FinalCNNet().eval()
    theirs = nb.load(ours.state_dict())
    pixels = torch.randint(0, 256, (8, 1024), dtype=torch.uint8)
    with torch.no_grad():
        a = ours(to_input(pixels))
        b = theirs(pixels.float().reshape(-1, 1, 32, 32))
    assert a.shape == (8, 10)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_macs_per_image_matches_a_counted_forward_pass():
    """MACS_PER_IMAGE (written out by hand) equals the multiply-adds hooks count in a real pass."""
    counted = 0

    def count(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal counted
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            per_output = module.in_channels // module.groups * kh * kw
            counted += out[0].numel() * per_output  # one image's outputs
        elif isinstance(module, torch.nn.Linear):
            counted += module.in_features * module.out_features

    model = FinalCNNet().eval()
    for m in model.modules():
        m.register_forward_hook(count)
    with torch.no_grad():
        model(to_input(torch.zeros((1, 1024), dtype=torch.uint8)))
    assert counted == MACS_PER_IMAGE
    assert 32e6 < MACS_PER_IMAGE < 34e6  # the brief's "about 33 M multiply-adds per image"


def _twin(train: bool) -> tuple[FinalCNNet, FinalCNNet]:
    torch.manual_seed(0)
    a = FinalCNNet().double().train(train)
    b = FinalCNNet().double().train(train)
    b.load_state_dict(a.state_dict())
    return a, b


def test_fast_forward_is_forward_in_train_mode_with_its_gradients():
    """Same dropout draws, same outputs and weight gradients (float64: only rounding differs)."""
    a, b = _twin(train=True)
    x = to_input(torch.randint(0, 256, (16, 1024), dtype=torch.uint8)).double()
    y = torch.randint(0, 10, (16,))
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


def test_fast_forward_is_forward_in_eval_mode():
    a, b = _twin(train=False)
    x = to_input(torch.randint(0, 256, (16, 1024), dtype=torch.uint8)).double()
    with torch.inference_mode():
        torch.testing.assert_close(b.fast_forward(x), a(x), rtol=1e-10, atol=1e-10)
    fp32 = FinalCNNet().eval()
    with torch.inference_mode():
        x32 = x.float()
        torch.testing.assert_close(fp32.fast_forward(x32), fp32(x32), rtol=1e-4, atol=1e-3)


def test_scale_dropout_changes_only_dropout_probabilities():
    model = FinalCNNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.scale_dropout(0.5)
    ps = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout | torch.nn.Dropout2d)]
    assert ps == [0.05, 0.15, 0.25, 0.25, 0.05, 0.15, 0.25, 0.25]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)

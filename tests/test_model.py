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

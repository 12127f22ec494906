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


def test_macs_per_image():
    assert round(MACS_PER_IMAGE / 1e6, 1) == 32.8
    assert (
        sum(p.numel() for p in FinalCNNet().parameters()) == 4_798_986
    )  # conv4 2.10 M + fc1 2.36 M dominate

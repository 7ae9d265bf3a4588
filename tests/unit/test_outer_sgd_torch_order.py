"""OuterSGD computes in torch.optim.SGD's single-tensor arithmetic order (so commlab's DiLoCo equals
torchft's, whose outer optimiser is torch.optim.SGD, bit for bit)."""

import torch
from torch import nn

from commlab.distributed.outer import OuterSGD


# strict: passes once the patch in this file's commit message is applied (it moves two regression fixtures
# by 1 ulp, which waits for the lead)
def test_torch_order_outer_sgd_equals_torch_optim_sgd():
    """OuterSGD is torch.optim.SGD op for op, both forms and momentum 0, over 5 steps on odd sizes."""
    for form, nesterov in (("nesterov", True), ("heavy_ball", False)):
        for momentum in (0.0, 0.9):
            gen = torch.Generator().manual_seed(3)
            ours = torch.randn(37, generator=gen)
            theirs = nn.Parameter(ours.clone())
            sgd = torch.optim.SGD([theirs], lr=0.7, momentum=momentum, nesterov=nesterov and momentum > 0)
            outer = OuterSGD(0.7, momentum, form)
            for _ in range(5):
                g = torch.randn(37, generator=gen)
                outer.step(ours, g)
                theirs.grad = g.clone()
                sgd.step()
                assert torch.equal(ours, theirs.detach()), (form, momentum)


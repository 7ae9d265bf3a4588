"""Streaming DiLoCo's two phases: ``boundary="send"`` (the paper: sent at t ≡ (p + 1)·H/P, applied τ
steps later) and ``boundary="apply"`` (torchft's: sent τ steps before those steps, applied at them)."""

import pytest
import torch

from commlab.comm import SimComm
from commlab.distributed.outer import StreamingDiLoCo


def run(boundary, steps=16, H=8, tau=2):
    comm = SimComm(2)
    params = torch.randn(2, 6, generator=torch.Generator().manual_seed(0))
    method = StreamingDiLoCo(comm, params, sync_every=H, fragments=2, overlap_steps=tau, boundary=boundary,
                             compressor=None, inner=lambda p: torch.optim.SGD([p], lr=0.1))
    applied = []
    for t in range(1, steps + 1):
        before = [theta.clone() for theta in method.global_fragments]
        method.step(torch.randn(2, 6, generator=torch.Generator().manual_seed(t)))
        applied += [(t, p) for p, theta in enumerate(method.global_fragments) if not torch.equal(theta, before[p])]
    sent = [(e.step, e.fragment) for e in method.events if e.kind == "fragment"]
    return sent, applied


def test_send_phase_sends_at_the_boundary_and_applies_tau_later():
    sent, applied = run("send")
    assert sent == [(4, 0), (8, 1), (12, 0), (16, 1)]
    assert applied == [(6, 0), (10, 1), (14, 0)]  # step 16's fragment is still in flight


def test_apply_phase_sends_tau_before_and_applies_at_the_boundary():
    sent, applied = run("apply")
    assert sent == [(2, 0), (6, 1), (10, 0), (14, 1)]
    assert applied == [(4, 0), (8, 1), (12, 0), (16, 1)]


def test_apply_phase_with_no_overlap_is_the_send_phase():
    assert run("apply", tau=0) == run("send", tau=0)


def test_unknown_boundary_is_refused():
    with pytest.raises(ValueError, match="boundary"):
        StreamingDiLoCo(SimComm(2), torch.zeros(2, 4), sync_every=4, boundary="late")

"""NoLoCo's communication on SimComm, what the NoLoCo notebook relies on: after the initial broadcast it
makes no collective call at all, only pairwise mixes; each replica sends one message of d values per
synchronisation whatever N; and its simulated clock is the α–β model (one pairwise exchange per outer
step against DiLoCo's ring all-reduce), so the notebook's wall-clock ratio is this closed form."""

import pytest
import torch

from commlab.comm import Link, SimComm
from commlab.distributed import make_method
from commlab.distributed.outer import OuterSGD

LINK = Link(bandwidth=100e6, latency=0.05)  # the notebook's link: 100 Mbit/s, 50 ms per message


def _run(name, n, d, steps, **hyper):
    comm = SimComm(n, link=LINK)
    params = torch.randn(n, d, generator=torch.Generator().manual_seed(n + d))  # fp32, as StackedMLP
    method = make_method(name, comm, params, step_seconds=0.02, **hyper)
    after_init = comm.meter.bytes_sent.clone()
    per_sync = []
    for _ in range(steps):
        before = comm.meter.bytes_sent.clone()
        if method.after_inner_step():
            per_sync.append(comm.meter.bytes_sent - before)
    return comm, method, after_init, per_sync


@pytest.mark.parametrize("n", [4, 8, 16])
@pytest.mark.parametrize("gamma", [0.7, 0.0])  # β = γ sends θ; γ = 0 sends θ − φ: d values either way
def test_noloco_sends_one_message_of_d_values_per_replica_and_sync_and_no_collective(n, gamma):
    d, H, steps = 37, 3, 15
    comm, method, after_init, per_sync = _run("noloco", n, d, steps, sync_every=H, momentum=0.5,
                                              progress_weight=0.7, pull_weight=gamma, seed=4)
    syncs = steps // H
    # no all-reduce, all-gather or broadcast after the initial broadcast
    assert comm.meter.calls == {"broadcast": 1, "mix": syncs}
    assert len(per_sync) == syncs and method.summary()["syncs"] == syncs
    for sent in per_sync:  # every replica (N even: all are paired) sends exactly one d-float message
        assert torch.equal(sent, torch.full((n,), 4.0 * d, dtype=sent.dtype))
    assert method.summary()["peak_bytes_per_sync"] == 4 * d  # constant in N
    assert torch.equal(comm.meter.bytes_sent - after_init, torch.full((n,), 4.0 * d * syncs,
                                                                      dtype=comm.meter.bytes_sent.dtype))


def test_simulated_clocks_are_the_alpha_beta_model_and_noloco_halves_diloco_on_the_notebook_link():
    n, d, H, steps, c = 8, 26_122, 30, 600, 0.02  # the notebook's quick configuration
    syncs, nbytes = steps // H, 4 * d
    init = LINK.seconds("broadcast", nbytes, n)
    noloco, _, _, _ = _run("noloco", n, d, steps, sync_every=H, seed=0)
    diloco, _, _, _ = _run("diloco", n, d, steps, sync_every=H, outer=OuterSGD(0.7, 0.9, "nesterov"))
    pairwise = steps * c + init + syncs * LINK.seconds("p2p", nbytes, n)
    ring = steps * c + init + syncs * LINK.seconds("all_reduce", nbytes, n)
    assert noloco.clock == pytest.approx(pairwise, rel=1e-12)
    assert diloco.clock == pytest.approx(ring, rel=1e-12)
    # one outer step: one latency + S/B against 2(N − 1) latencies + 2(N − 1)/N · S/B
    assert LINK.seconds("p2p", nbytes, n) == pytest.approx(0.05 + 8 * nbytes / 100e6)
    assert LINK.seconds("all_reduce", nbytes, n) == pytest.approx(14 * 0.05 + 1.75 * 8 * nbytes / 100e6)
    # the notebook's former claim noloco-wallclock (NoLoCo / DiLoCo simulated clock <= 0.75): 0.50 here
    assert noloco.clock / diloco.clock <= 0.75
    assert noloco.clock / diloco.clock == pytest.approx(0.504, abs=0.002)

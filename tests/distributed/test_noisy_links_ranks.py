"""NoisyLinks over 2 gloo ranks delivers what it delivers over SimComm, bit for bit: the noise is keyed
by seed, call and worker, and DistComm(deterministic=True) reduces like the simulator."""

import pytest
import torch
from noisy_workers import on_rank, simulated

from commlab.comm.launch import run_workers

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("kind", ["awgn", "flips"])
def test_two_ranks_hear_what_the_simulated_workers_hear(kind):
    n = 2
    x = torch.randn(n, 6, 5, generator=torch.Generator().manual_seed(1))
    W = torch.tensor([[0.6, 0.4], [0.4, 0.6]])
    expected, sim_bytes, sim_noise = simulated(x, W, [(0, 1)], kind, seed=11)
    results = run_workers(on_rank, n, args=(x, W, [(0, 1)], kind, 11), timeout=90)
    for r in results:
        assert r.status == "ok", f"rank {r.rank} ended {r.status}: {r.error}\n{r.traceback}"
    for rank, (out, sent, noise) in enumerate(r.value for r in results):
        assert set(out) == set(expected)
        for name, tensor in expected.items():
            got = out[name] if name == "gather" else out[name][0]
            want = tensor if name == "gather" else tensor[rank]
            assert torch.equal(got.view(torch.int32), want.view(torch.int32)), (kind, name, rank)  # NaN-safe
        assert torch.equal(sent, sim_bytes[rank : rank + 1])
        assert noise["uplink"]["messages"] > 0
    # the ranks' noise counts add up to the simulator's
    for direction in ("uplink", "downlink"):
        for key in ("messages", "entries", "bits", "bit_flips"):
            assert sum(r.value[2][direction][key] for r in results) == sim_noise[direction][key], (direction, key)
    assert not torch.equal(expected["sum"][0], x.sum(dim=0))  # the links did add noise

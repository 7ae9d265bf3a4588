"""signSGD with majority vote (Bernstein et al. 2018): one packed bit per coordinate crosses the wire,
the vote is the sign of the summed signs, and SimComm and gloo processes agree (issue 18, item 3)."""

import math

import pytest
import torch
from dist_workers import vote

from commlab.comm import SimComm
from commlab.comm.launch import run_workers
from commlab.distributed.compressed import majority_vote

pytestmark = pytest.mark.timeout(120)


def test_the_vote_is_the_sign_of_the_summed_signs_and_ties_count_as_plus():
    g = torch.tensor([[1.0, -2.0, 0.5, -0.1, 0.0], [3.0, -1.0, -0.5, 0.2, -4.0], [-1.0, -1.0, -0.5, 0.3, -1.0],
                      [2.0, 5.0, -0.5, 0.4, -1.0]])
    comm = SimComm(4)
    result, payload = majority_vote(comm, g)
    # signs per column: [+,+,-,+] [-,-,-,+] [+,-,-,-] [-,+,+,+] [+ (a zero),-,-,-]
    assert result.tolist() == [1.0, -1.0, -1.0, 1.0, -1.0]
    assert payload.row_bits == (5,) * 4
    assert comm.meter.bytes_sent.tolist() == [math.ceil(5 / 8)] * 4  # one packed byte per worker
    tie = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    assert majority_vote(SimComm(2), tie)[0].tolist() == [1.0, 1.0]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"g must be \[local workers = 3, d\]"):
        majority_vote(SimComm(3), torch.ones(2, 4))
    with pytest.raises(TypeError, match="Communicator"):
        majority_vote("comm", torch.ones(1, 4))


def test_gloo_processes_vote_as_the_simulator_does():
    g = torch.randn(3, 1000, generator=torch.Generator().manual_seed(0))
    expected, _ = majority_vote(SimComm(3), g)
    results = run_workers(vote, 3, (g,), timeout=60)
    for r in results:
        assert r.status == "ok", f"rank {r.rank}: {r.error}\n{r.traceback}"
        result, sent = r.value
        assert torch.equal(result, expected) and sent == math.ceil(1000 / 8)

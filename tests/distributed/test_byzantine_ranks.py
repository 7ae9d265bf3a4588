"""RobustSGD runs the same on gloo processes as on stacked workers: every rank gathers the same messages, the
attackers' draws come from the shared seed tree, and every rank applies the same robust update."""

import pytest
import torch
from byzantine_workers import RULES, robust_rank, run_robust

from commlab.comm import SimComm
from commlab.comm.launch import run_workers


@pytest.mark.timeout(180)
def test_gloo_ranks_follow_the_simulator_bit_for_bit():
    world, steps = 3, 6
    results = run_workers(robust_rank, world, args=(steps,), timeout=150)
    for r in results:
        assert r.status == "ok", f"rank {r.rank} ended {r.status}: {r.error}\n{r.traceback}"
    for rule in RULES:
        sim_params, sim_bytes = run_robust(SimComm(world), rule, steps)
        assert bool((sim_params == sim_params[0]).all()) and sim_params.abs().sum() > 0
        for rank, r in enumerate(results):
            params, sent = r.value[rule]
            assert torch.equal(params[0], sim_params[rank]), (rule, rank)
            assert torch.equal(sent, sim_bytes[rank:rank + 1]), (rule, rank)

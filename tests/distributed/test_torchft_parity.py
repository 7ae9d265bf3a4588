"""commlab's DiLoCo and Streaming DiLoCo against torchft's own ``torchft.local_sgd.DiLoCo``, bit for bit.

torchft runs for real: a Lighthouse and two replica groups (one rank each, threads of this process),
each with its own TCPStore, ``ProcessGroupGloo`` and ``Manager`` (synchronous quorum). commlab runs
the same two replicas stacked on :class:`SimComm`. Both take inner ``torch.optim.SGD`` steps on the same
seeded gradients (replica r, step t: ``randn(d)`` from seed ``1000 r + t``) from the same start, and the
replicas' parameters and the global copies must agree with ``torch.equal`` after every inner step.

With two replicas the all-reduce's sum a + b is the same on both (gloo's and SimComm's), and halving
is exact, so any difference would come from the outer step's arithmetic or the schedule.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import torch
from torch import nn

torchft = pytest.importorskip("torchft")
from torchft._torchft import LighthouseServer  # noqa: E402
from torchft.local_sgd import DiLoCo as TorchftDiLoCo  # noqa: E402
from torchft.manager import Manager  # noqa: E402
from torchft.process_group import ProcessGroupGloo  # noqa: E402

from commlab.comm import SimComm  # noqa: E402
from commlab.distributed.outer import DiLoCo, OuterSGD, StreamingDiLoCo  # noqa: E402

pytestmark = pytest.mark.timeout(120)

REPLICAS, SIZES, INNER_LR, INNER_MOMENTUM, OUTER_LR, OUTER_MOMENTUM = 2, (64, 64), 0.05, 0.9, 0.7, 0.9
TIMEOUT = timedelta(seconds=20)


def start() -> torch.Tensor:
    """The common start ``[sum(SIZES)]``."""
    return torch.randn(sum(SIZES), generator=torch.Generator().manual_seed(7))


def gradient(replica: int, step: int) -> torch.Tensor:
    return torch.randn(sum(SIZES), generator=torch.Generator().manual_seed(1000 * replica + step))


def inner(p):
    return torch.optim.SGD(p if isinstance(p, list) else [p], lr=INNER_LR, momentum=INNER_MOMENTUM)


def outer_sgd(params) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=OUTER_LR, momentum=OUTER_MOMENTUM, nesterov=True)


class Fragment(nn.Module):
    def __init__(self, values: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(values.clone())


def torchft_replica(replica: int, lighthouse: str, steps: int, sync_every: int, fragments: int, delay: int,
                    alpha: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One torchft replica group; after every inner step (its parameters ``[d]``, the global copies ``[d]``)."""
    store = torch.distributed.TCPStore("localhost", 0, is_master=True, wait_for_workers=False)
    manager = Manager(pg=ProcessGroupGloo(timeout=TIMEOUT), load_state_dict=None, state_dict=None,
                      min_replica_size=REPLICAS, use_async_quorum=False, init_sync=False, timeout=TIMEOUT,
                      quorum_timeout=TIMEOUT, connect_timeout=TIMEOUT, rank=0, world_size=1, store_addr="localhost",
                      store_port=store.port, lighthouse_addr=lighthouse, replica_id=f"parity_{replica}",
                      hostname="localhost")
    try:
        bounds = [0, *torch.tensor(SIZES).cumsum(0).tolist()] if fragments > 1 else [0, sum(SIZES)]
        pieces = list(zip(bounds[:-1], bounds[1:], strict=True))
        parts = [Fragment(start()[a:b]) for a, b in pieces]
        model = nn.ModuleList(parts)
        optimizer = inner(list(model.parameters()))
        outers = [outer_sgd(list(part.parameters())) for part in parts]
        trace = []
        with TorchftDiLoCo(manager, parts, optimizer, outers, sync_every=sync_every, fragment_sync_delay=delay,
                           fragment_update_alpha=alpha) as diloco:
            for t in range(steps):
                g = gradient(replica, t)
                for part, (a, b) in zip(parts, pieces, strict=True):
                    part.weight.grad = g[a:b].clone()
                optimizer.step()
                flat = torch.cat([part.weight.detach().reshape(-1) for part in parts])
                glob = torch.cat([f.original_parameters["weight"].reshape(-1) for f in diloco._fragments])
                trace.append((flat.clone(), glob.clone()))
        return trace
    finally:
        manager.shutdown(wait=False)


def run_torchft(**kw) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    lighthouse = LighthouseServer(bind="[::]:0", min_replicas=REPLICAS)
    try:
        with ThreadPoolExecutor(REPLICAS) as pool:
            futures = [pool.submit(torchft_replica, r, lighthouse.address(), **kw) for r in range(REPLICAS)]
            return [f.result(timeout=90) for f in futures]
    finally:
        lighthouse.shutdown()


def run_commlab(make, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    comm = SimComm(REPLICAS)
    params = start().repeat(REPLICAS, 1)
    method = make(comm, params)
    trace = []
    for t in range(steps):
        method.step(torch.stack([gradient(r, t) for r in range(REPLICAS)]))
        trace.append((params.detach().clone(), method.outer_params.clone()))
    return trace


def assert_identical(ours, theirs):
    assert len(ours) == len(theirs[0])
    for t, (params, glob) in enumerate(ours):
        for r in range(REPLICAS):
            their_params, their_global = theirs[r][t]
            diff = (params[r] - their_params).abs().max().item()
            assert torch.equal(params[r], their_params), f"step {t + 1}, replica {r}: max |difference| {diff:.3g}"
            assert torch.equal(glob, their_global), f"step {t + 1}, replica {r}: the global copies differ"
    moved = (ours[-1][1] - start()).abs().max().item()
    assert moved > 0.1  # the outer steps really ran


def test_diloco_is_bit_identical_to_torchft():
    steps, H = 12, 3
    theirs = run_torchft(steps=steps, sync_every=H, fragments=1, delay=0, alpha=0.0)
    ours = run_commlab(lambda comm, p: DiLoCo(comm, p, sync_every=H, inner=inner,
                                              outer=OuterSGD(OUTER_LR, OUTER_MOMENTUM, "nesterov")), steps)
    assert_identical(ours, theirs)


@pytest.mark.parametrize("mixing", [0.0, 0.5])
def test_streaming_diloco_is_bit_identical_to_torchft(mixing):
    """Two fragments (one per layer), H = 8, τ = 2 with ``boundary="apply"``: torchft's phase."""
    steps, H, tau = 24, 8, 2
    theirs = run_torchft(steps=steps, sync_every=H, fragments=2, delay=tau, alpha=mixing)
    layers = [(0, SIZES[0]), (SIZES[0], sum(SIZES))]
    ours = run_commlab(lambda comm, p: StreamingDiLoCo(
        comm, p, sync_every=H, fragments=2, layers=layers, overlap_steps=tau, boundary="apply", mixing=mixing,
        compressor=None, outer=OuterSGD(OUTER_LR, OUTER_MOMENTUM, "nesterov"), inner=inner), steps)
    assert_identical(ours, theirs)


def test_streaming_diloco_paper_phase_differs_from_torchft():
    """The paper's phase (sent at the boundary, applied τ later) is a different schedule: not equal."""
    steps, H, tau = 16, 8, 2
    theirs = run_torchft(steps=steps, sync_every=H, fragments=2, delay=tau, alpha=0.0)
    layers = [(0, SIZES[0]), (SIZES[0], sum(SIZES))]
    ours = run_commlab(lambda comm, p: StreamingDiLoCo(
        comm, p, sync_every=H, fragments=2, layers=layers, overlap_steps=tau, boundary="send", mixing=0.0,
        compressor=None, outer=OuterSGD(OUTER_LR, OUTER_MOMENTUM, "nesterov"), inner=inner), steps)
    assert not torch.equal(ours[-1][0][0], theirs[0][-1][0])

"""Small seeded runs of every training algorithm, recorded as regression fixtures.

Each case runs one method for a few steps (or rounds) on a ``SimComm`` with a link and a simulated
compute time, on a tiny least-squares problem whose worker ``i`` has its own data, and returns its
trace: the iterates after every step, the meter's bytes and the simulated clock. The stored traces
(``tests/fixtures/regression/<case>.pt``) were recorded before the layout redesign of issue 15; the
test checks that the code of today reproduces them bit for bit. Record again (``python
tests/regression/record.py``) only for a deliberate change of numerics, and say so in the commit.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from commlab.comm import Link, SimComm
from commlab.comm.membership import Membership
from commlab.compress import QSGD, PowerSGD, TopK
from commlab.compress.ef import EF14
from commlab.distributed.dgc import DGC, DensityWarmup
from commlab.distributed.fl import FedAvg, FedEF, Scafcom, Scaffold, Scallion
from commlab.distributed.gossip import DecentralizedSGD, Schedule, consensus_distance, ring
from commlab.distributed.onebit_adam import OneBitAdam
from commlab.distributed.outer import CO2, DataParallel, DiLoCo, LocalSGD, NoLoCo, StreamingDiLoCo
from commlab.distributed.schemes import gradient_round, gradient_scheme
from commlab.distributed.spsa import SharedSeedSPSA
from commlab.seeding import seeded_init
from commlab.train.ddp_simulator import DataParallelTrainer
from commlab.train.loop import fit

N, D, STEPS = 3, 24, 12
LINK = Link(bandwidth=1e6, latency=1e-3)
STEP_SECONDS = 0.01


def problem(n: int = N, d: int = D):
    """Worker i's least squares f_i(x) = ||A_i x - b_i||^2 / (2m): ``A [n, m, d]``, ``b [n, m]`` (float32)."""
    generator = torch.Generator().manual_seed(1234)
    A = torch.randn(n, 16, d, generator=generator)
    b = torch.randn(n, 16, generator=generator)
    return A, b


def gradients(x: torch.Tensor, workers: torch.Tensor | None = None) -> torch.Tensor:
    """``[L, d]`` gradients of the workers ``workers`` (default: rows 0..L-1) at ``x [L, d]``."""
    A, b = problem()
    workers = torch.arange(x.shape[0]) if workers is None else workers
    A, b = A[workers], b[workers]
    residual = torch.einsum("lmd,ld->lm", A, x) - b
    return torch.einsum("lmd,lm->ld", A, residual) / A.shape[1]


def start(n: int = N, d: int = D) -> torch.Tensor:
    return torch.linspace(-1, 1, d).repeat(n, 1).contiguous()


def trace_of(comm, iterates) -> dict:
    return {"iterates": torch.stack(iterates), "bytes": comm.meter.bytes_sent.clone(),
            "clock": torch.tensor(comm.clock, dtype=torch.float64)}


def per_step(make, steps: int = STEPS, n: int = N) -> dict:
    """A per-step method: ``make(comm, params)`` builds it; each step feeds it the workers' gradients."""
    comm = SimComm(n, link=LINK)
    params = start(n)
    method = make(comm, params)
    iterates = [params.detach().clone()]
    for _ in range(steps):
        method.step(gradients(params.detach()))
        iterates.append(params.detach().clone())
    method.finish()
    iterates.append(params.detach().clone())
    return trace_of(comm, iterates)


def sgd(p):
    return torch.optim.SGD([p], lr=0.05, momentum=0.9)


def outer_case(cls, **hyper):
    return lambda: per_step(lambda comm, p: cls(comm, p, inner=sgd, step_seconds=STEP_SECONDS, **hyper))


def dgc_case(**hyper):
    return lambda: per_step(lambda comm, p: DGC(comm, p, lr=0.05, seed=1, **hyper))


def onebit_case():
    def make(comm, p):
        return OneBitAdam(comm, p, lr=0.01, freeze_step=4)
    return per_step(make)


def compressed_case(scheme, shapes=((D,),), **kw):
    """A named scheme (or a function making one) on the least squares, its row laid out as ``shapes``."""
    def run():
        comm = SimComm(N, link=LINK)
        made = scheme() if callable(scheme) else gradient_scheme(scheme, **kw)
        x = start()
        iterates = [x.clone()]
        for t in range(STEPS):
            estimate = gradient_round(comm, made, gradients(x), torch.Generator().manual_seed(t), shapes)
            x = x - 0.05 * estimate
            iterates.append(x.clone())
        return trace_of(comm, iterates)
    return run


def spsa_case(churn: bool):
    def run():
        comm = SimComm(N, link=LINK)
        membership = Membership.static(N).leave(2, at=3).join(2, at=7) if churn else None
        A, b = problem()

        def loss(params, machine, step):  # params [S, 2, d]
            residual = torch.einsum("md,skd->skm", A[machine].double(), params) - b[machine].double()
            return 0.5 * (residual ** 2).mean(dim=-1)

        params = torch.linspace(-1, 1, D, dtype=torch.float64).repeat(N, 1)
        method = SharedSeedSPSA(comm, params, lr=0.05, eps=1e-3, samples=4, seed=2, membership=membership)
        iterates = [params.clone()]
        for _ in range(STEPS):
            method.round(loss)
            iterates.append(params.clone())
        return trace_of(comm, iterates)
    return run


def fl_case(cls, **hyper):
    def run():
        comm = SimComm(N, link=LINK)
        params = torch.linspace(-1, 1, D).repeat(N, 1)
        method = cls(comm, params, n_clients=6, local_steps=3, local_lr=0.05, seed=4, **hyper)
        A, b = problem(6)

        def grad_fn(y, clients, t, k):
            residual = torch.einsum("lmd,ld->lm", A[clients], y) - b[clients]
            return torch.einsum("lmd,lm->ld", A[clients], residual) / A.shape[1]

        iterates = [params[0].clone()]
        for _ in range(6):
            method.round(grad_fn)
            assert torch.equal(params, method.x.expand_as(params))
            iterates.append(params[0].clone())
        return trace_of(comm, iterates)
    return run


def gossip_case(fixed: bool):
    def run():
        comm = SimComm(4, link=LINK)
        A, b = problem(4)
        params = start(4)

        def oracle(step):
            residual = torch.einsum("lmd,ld->lm", A, params) - b
            return 0.5 * (residual ** 2).mean(dim=1), torch.einsum("lmd,lm->ld", A, residual) / A.shape[1]

        kw = {"topology": ring(4)} if fixed else {"schedule": Schedule.linear(1.0, 3.0), "rounds": 6}
        method = DecentralizedSGD(comm, params, lr=0.05, sync_every=2, seed=3, weight_decay=1e-3,
                                  step_seconds=STEP_SECONDS, **kw)
        records = fit(method, oracle, 12, every=2, evaluate=lambda step: {
            "consensus": consensus_distance(params if step == 0 else method.premix)})
        table = torch.tensor([[r["step"] // 2, r["bytes_per_worker"], r["clock"], r["loss"], r["consensus"]]
                              for r in records], dtype=torch.float64)
        return {"final": params.clone(), "records": table, "bytes": comm.meter.bytes_sent.clone(),
                "clock": torch.tensor(comm.clock, dtype=torch.float64)}
    return run


def ddp_simulator_case():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(96, 1, 4, 4, generator=generator)
    labels = torch.randint(3, (96,), generator=generator)
    shards = [np.arange(0, 96, 2), np.arange(1, 96, 2)]
    with seeded_init(0):
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))
    comm = SimComm(2, link=LINK)
    trainer = DataParallelTrainer(model, "topk", comm, images, labels, shards, batch_size=8, lr=0.1,
                                  momentum=0.9, seed=3, ratio=0.25)
    iterates = []
    for _ in range(6):
        trainer.step()
        iterates.append(torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()]))
    loss = F.cross_entropy(trainer.model(images), labels).detach()
    return {"iterates": torch.stack(iterates), "bytes": comm.meter.bytes_sent.clone(), "loss": loss}


CASES = {
    "dgc": dgc_case(density=0.25),
    "dgc_warmup_nesterov_clip": dgc_case(density=DensityWarmup(0.1, 6), nesterov=True, clip_norm=1.0,
                                         weight_decay=1e-3),
    "dgc_no_correction": dgc_case(density=0.25, momentum_correction=False, masking=False),
    "onebit_adam": onebit_case,
    "compressed_none": compressed_case("none"),
    "compressed_topk": compressed_case("topk", ratio=0.25),
    # the generic compressor path (all-gathered factors of the whole row), the powersgd scheme before issue 18
    "compressed_powersgd": compressed_case(lambda: EF14(PowerSGD(rank=2))),
    # issue 18: PowerSGD's protocol, the row as a 6 × 4 matrix at rank 1 (warm start, two all-reduces)
    "compressed_powersgd_protocol": compressed_case("powersgd", shapes=((6, 4),), rank=1),
    "compressed_sign": compressed_case("sign"),
    "spsa": spsa_case(churn=False),
    "spsa_churn": spsa_case(churn=True),
    "fedavg": fl_case(FedAvg),
    "fedef_topk": fl_case(FedEF, compressor=TopK(k=6)),
    "scaffold": fl_case(Scaffold),
    "scallion_qsgd": fl_case(Scallion, compressor=QSGD(s=4)),
    "scafcom_topk": fl_case(Scafcom, compressor=TopK(k=6)),
    "gossip_schedule": gossip_case(fixed=False),
    "gossip_ring": gossip_case(fixed=True),
    "diloco": outer_case(DiLoCo, sync_every=3),
    "data_parallel": outer_case(DataParallel),
    "local_sgd": outer_case(LocalSGD, sync_every=3),
    "streaming_diloco": outer_case(StreamingDiLoCo, sync_every=4, fragments=2, overlap_steps=1, block=8, seed=5),
    "noloco": outer_case(NoLoCo, sync_every=3, seed=6),
    "noloco_no_pull": outer_case(NoLoCo, sync_every=3, pull_weight=0.0, seed=6),
    "co2_relative": outer_case(CO2, sync_every=3, gap_penalty="relative", penalty=0.5, clip=1.0),
    "ddp_simulator": ddp_simulator_case,
}

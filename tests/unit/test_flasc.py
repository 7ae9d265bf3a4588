"""distributed.federated_lora.Flasc: rounds against a client-by-client reference of the FLASC pseudo-code
(sparse download of P − P_i, dense local SGD, Top-k upload with or without EF14, FedAvg or FedAdam server),
dense FLASC = FedAvg, exact wire bits (the upload at density 1/4 costs 9/32 of dense: 32-bit values plus a
d-bit bitmap), stale client state under partial participation, checkpoint continuation, the LoRA oracle
(frozen base, per-client gradients) and argument errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from commlab.comm import SimComm
from commlab.distributed.federated_lora import Flasc, lora_grad_fn
from commlab.distributed.fl import FedAvg
from commlab.models.lora import apply_lora, load_lora_vector, lora_grad_vector, lora_vector
from commlab.models.transformer import TinyTransformer

N, D, K, LR = 4, 12, 3, 0.1


def problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, D, generator=g, dtype=torch.float64), 0.5 + torch.rand(N, D, generator=g, dtype=torch.float64)


def grad_fn_for(a, h):
    def grad_fn(y, clients, t, k):  # ∇ of ½ (y − a_i)ᵀ diag(h_i) (y − a_i) plus seeded noise
        noise = torch.stack([torch.randn(D, generator=torch.Generator().manual_seed(t * 1000 + k * 10 + int(i)),
                                         dtype=y.dtype) for i in clients.tolist()])
        return h[clients] * (y - a[clients]) + 0.1 * noise
    return grad_fn


def topk(z, density):
    k = math.ceil(density * z.numel())
    out = torch.zeros_like(z)
    keep = z.abs().topk(k).indices
    out[keep] = z[keep]
    return out


def reference(rounds, *, up, down, ef, server="avg", server_lr=1.0, betas=(0.9, 0.99), tau=1e-3, per_round=N):
    """The pseudo-code, client by client, in float64."""
    a, h = problem()
    grad_fn = grad_fn_for(a, h)
    x = torch.zeros(D, dtype=torch.float64)
    p, e = torch.zeros(N, D, dtype=torch.float64), torch.zeros(N, D, dtype=torch.float64)
    m, v = torch.zeros(D, dtype=torch.float64), torch.zeros(D, dtype=torch.float64)
    xs = [x]
    for t in range(rounds):
        clients = FedAvg(SimComm(per_round), torch.zeros(per_round, D), n_clients=N, local_steps=1,
                         local_lr=1.0).sample(t)
        sent = []
        for i in clients.tolist():
            p[i] = p[i] + (topk(x - p[i], down) if down < 1 else x - p[i])
            y = p[i].clone()
            for k in range(K):
                y = y - LR * grad_fn(y[None], torch.tensor([i]), t, k)[0]
            g_bar = (p[i] - y) / (LR * K)
            msg = g_bar + e[i] if ef else g_bar
            u = topk(msg, up) if up < 1 else msg
            if ef:
                e[i] = msg - u
            sent.append(u)
        delta = -LR * K * torch.stack(sent).mean(dim=0)
        if server == "avg":
            x = x + server_lr * delta
        else:
            m = betas[0] * m + (1 - betas[0]) * delta
            v = betas[1] * v + (1 - betas[1]) * delta**2
            x = x + server_lr * m / (v.sqrt() + tau)
        xs.append(x)
    return torch.stack(xs), p, e


def run(rounds, per_round=N, **kwargs):
    a, h = problem()
    method = Flasc(SimComm(per_round), torch.zeros(per_round, D, dtype=torch.float64), n_clients=N, local_steps=K,
                   local_lr=LR, seed=0, **kwargs)
    xs = [method.x.clone()]
    for _ in range(rounds):
        method.round(grad_fn_for(a, h))
        xs.append(method.x.clone())
    return torch.stack(xs), method


@pytest.mark.parametrize("options", [
    {"up": 0.25, "down": 0.25, "ef": True},
    {"up": 0.25, "down": 0.5, "ef": False},
    {"up": 1.0, "down": 0.25, "ef": False},
    {"up": 0.5, "down": 1.0, "ef": True, "server": "adam", "server_lr": 0.05},
])
def test_rounds_match_the_client_by_client_pseudo_code(options):
    expected, p, e = reference(5, **options)
    xs, method = run(5, upload_density=options["up"], download_density=options["down"],
                     error_feedback=options["ef"], server_optimizer=options.get("server", "avg"),
                     server_lr=options.get("server_lr", 1.0))
    torch.testing.assert_close(xs, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(method.buffers["p"], p, rtol=0, atol=1e-12)
    torch.testing.assert_close(method.buffers["e"], e, rtol=0, atol=1e-12)
    assert not torch.allclose(xs[-1], xs[0])


def test_dense_flasc_is_fedavg():
    a, h = problem()
    fedavg = FedAvg(SimComm(N), torch.zeros(N, D, dtype=torch.float64), n_clients=N, local_steps=K, local_lr=LR)
    for _ in range(4):
        fedavg.round(grad_fn_for(a, h))
    xs, flasc = run(4, upload_density=1.0, download_density=1.0)
    assert torch.equal(xs[-1], fedavg.x) and flasc.bits == fedavg.bits
    assert not flasc.error_feedback and not flasc.buffers["e"].any()


def test_wire_bits_are_the_payloads_and_density_one_quarter_costs_nine_32nds():
    d = 24576  # the adapters of the quick notebook's rank-16 LoRA
    rounds = 2
    method = Flasc(SimComm(3), torch.zeros(3, d), n_clients=3, local_steps=1, local_lr=0.1, upload_density=0.25,
                   download_density=1 / 16)
    dense = Flasc(SimComm(3), torch.zeros(3, d), n_clients=3, local_steps=1, local_lr=0.1, upload_density=1.0,
                  download_density=1.0)
    def grads(y, clients, t, k):
        return torch.randn(y.shape, generator=torch.Generator().manual_seed(t))
    for _ in range(rounds):
        method.round(grads)
        dense.round(grads)
    k_up, k_down = d // 4, d // 16
    # values 32 bits each + the cheaper of an index list (k ceil(log2 d) bits) and a d-bit bitmap
    assert method.bits["uplink"] == rounds * 3 * (32 * k_up + min(k_up * 15, d))
    assert method.bits["downlink"] == rounds * 3 * (32 * k_down + min(k_down * 15, d))
    assert dense.bits == {"uplink": rounds * 3 * 32 * d, "downlink": rounds * 3 * 32 * d}
    assert method.bits["uplink"] / dense.bits["uplink"] == 9 / 32 <= 0.30
    assert method.events[-1].info["uplink_bits"] == 3 * (32 * k_up + d)


def test_clients_that_are_not_sampled_keep_their_stale_copy_and_residual():
    xs, method = run(1, per_round=2, upload_density=0.25, download_density=0.25)
    sampled = list(method.events[-1].info["clients"])
    idle = [i for i in range(N) if i not in sampled]
    assert not method.buffers["e"][idle].any() and not method.buffers["p"][idle].any()
    assert method.buffers["e"][sampled].abs().sum(dim=1).min() > 0
    expected, p, e = reference(6, up=0.25, down=0.25, ef=True, per_round=2)
    xs, method = run(6, per_round=2, upload_density=0.25, download_density=0.25)
    torch.testing.assert_close(xs, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(method.buffers["p"], p, rtol=0, atol=1e-12)


@pytest.mark.parametrize("server", ["avg", "adam"])
def test_state_saved_mid_run_continues_identically(server):
    a, h = problem()
    _, method = run(3, per_round=2, upload_density=0.25, download_density=0.5, server_optimizer=server)
    state = copy.deepcopy(method.state_dict())
    for _ in range(3):
        method.round(grad_fn_for(a, h))
    _, other = run(0, per_round=2, upload_density=0.25, download_density=0.5, server_optimizer=server)
    other.load_state_dict(state)
    for _ in range(3):
        other.round(grad_fn_for(a, h))
    assert torch.equal(other.x, method.x) and torch.equal(other.m, method.m) and other.bits == method.bits
    assert torch.equal(other.buffers["p"], method.buffers["p"])


def test_the_lora_oracle_gives_each_client_its_own_gradient_and_leaves_the_base_frozen():
    base = TinyTransformer(vocab=11, d_model=8, n_layers=1, n_heads=2, context=5, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(0))
    model = copy.deepcopy(base)
    apply_lora(model, rank=2, alpha=2.0, targets=("qkv", "fc1"), generator=torch.Generator().manual_seed(1),
               replicas=2)
    data = torch.randint(11, (5, 3, 5), generator=torch.Generator().manual_seed(2))  # client i's rows

    def batches(clients, t, k):
        return data[clients].reshape(-1, 5), data[clients].roll(1, dims=2).reshape(-1, 5)

    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    method = Flasc(SimComm(2), lora_vector(model), n_clients=2, local_steps=2, local_lr=0.5, upload_density=0.5,
                   download_density=1.0)
    grad_fn = lora_grad_fn(model, batches)
    y = lora_vector(model) + 0.1
    g = grad_fn(y, torch.tensor([3, 1]), 0, 0)
    single = copy.deepcopy(base)
    apply_lora(single, rank=2, alpha=2.0, targets=("qkv", "fc1"), generator=torch.Generator().manual_seed(1))
    for slot, client in enumerate((3, 1)):
        load_lora_vector(single, y[slot:slot + 1])
        for p in single.parameters():
            p.grad = None
        single.loss(data[client], data[client].roll(1, dims=1)).backward()
        torch.testing.assert_close(g[slot:slot + 1], lora_grad_vector(single), rtol=0, atol=1e-12)
    start = method.x.clone()
    method.round(grad_fn)
    assert not torch.equal(method.x, start)
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n


@pytest.mark.parametrize("kwargs, error, match", [
    ({"upload_density": 0.0}, ValueError, "upload_density"),
    ({"download_density": 1.5}, ValueError, "download_density"),
    ({"server_optimizer": "sgd"}, ValueError, "server_optimizer"),
    ({"betas": (0.9, 1.0)}, ValueError, "betas"),
    ({"tau": 0.0}, ValueError, "tau"),
    ({"error_feedback": 1}, TypeError, "error_feedback"),
    ({"compressor": None}, TypeError, "own Top-k"),
])
def test_bad_arguments_are_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        Flasc(SimComm(2), torch.zeros(2, D), n_clients=2, local_steps=1, local_lr=0.1, **kwargs)
    with pytest.raises(TypeError, match="token_log_probs"):
        lora_grad_fn(torch.nn.Linear(2, 2), lambda c, t, k: None)

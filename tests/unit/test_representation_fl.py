"""Representation-exchange FL (CreamFL): exact message sizes, FedAvg of modules, a round, checkpoints."""

import pytest
import torch

from commlab.compress import Identity
from commlab.distributed.representation_fl import (
    RepresentationClient,
    RepresentationFL,
    average_modules,
    decode_representations,
    encode_representations,
    message_bits,
    mlp_encoder,
    n_params,
)

D, N_PUB, N_TXT = 8, 24, 6


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    return {"image": torch.randn(n, 12, generator=g) + labels[:, None], "text": torch.randn(n, N_TXT, generator=g)
            + labels[:, None], "labels": labels}


def _client(modalities, width, index):
    enc = {m: mlp_encoder(12 if m == "image" else N_TXT, (width,), D, seed=10 * index + len(m)) for m in modalities}
    return RepresentationClient(enc, _data(40, index), n_classes=3, index=index, seed=1)


def _run(**kw):
    clients = [_client(("image",), 16, 0), _client(("text",), 4, 1), _client(("image", "text"), 32, 2)]
    pub = _data(N_PUB, 99)
    encoders = {"image": mlp_encoder(12, (48,), D, seed=5), "text": mlp_encoder(N_TXT, (48,), D, seed=6)}
    server = RepresentationClient(encoders, pub, index=9, seed=1)
    return RepresentationFL(clients, server, {"image": pub["image"], "text": pub["text"]}, local_steps=3,
                            server_steps=2, batch_size=8, public_batch=8, **kw)


def test_message_bits_equal_the_payload_sizes():
    reps = {"image": torch.randn(N_PUB, D), "text": torch.randn(N_PUB, D)}
    message = encode_representations(reps)
    payload_bits = sum(Identity().compress(x).bits for x in reps.values())
    assert message_bits(message) == payload_bits == N_PUB * D * 2 * 32
    decoded = decode_representations(message, N_PUB, D)
    assert all(torch.equal(decoded[m], reps[m]) for m in reps)
    with pytest.raises(ValueError, match="float32"):
        encode_representations({"image": torch.randn(3, 2, dtype=torch.float64)})


def test_uplink_is_n_pub_d_modalities_whatever_the_width():
    fl = _run()
    entry = fl.round()
    widths = [16, 4, 32]
    assert entry["uplink_bits"] == [N_PUB * D * len(c.modalities) * 32 for c in fl.clients]
    assert entry["downlink_bits"] == 2 * N_PUB * D * 32
    assert len({c.parameter_count() for c in fl.clients}) == len(widths)  # different model sizes, same message
    assert fl.bits == {"uplink": sum(entry["uplink_bits"]), "downlink": 3 * entry["downlink_bits"]}
    for w in entry["weights"].values():
        assert w.shape == (2, N_PUB)  # two clients hold each modality
        assert torch.allclose(w.sum(0), torch.ones(N_PUB))
    s = fl.summary()
    assert s["steps"] == 1 and s["peak_bytes_per_sync"] == N_PUB * D * 2 * 4


def test_checkpoint_continues_exactly():
    a, b = _run(), _run()
    a.round()
    b.load_state_dict(a.state_dict())
    a.round(), b.round()
    for x, y in zip(a.server.encoders.parameters(), b.server.encoders.parameters(), strict=True):
        assert torch.equal(x, y)


def test_regularisers_change_the_clients_and_zero_weights_do_not_need_public_data():
    a, b = _run(), _run(lambda_inter=0.0, lambda_intra=0.0)
    a.round(), b.round()
    assert not torch.equal(next(a.clients[0].encoders.parameters()), next(b.clients[0].encoders.parameters()))
    local = _client(("image",), 16, 0)
    local.local_train(2, 8, anchors=[("image", torch.zeros(N_PUB, D), 0.0)])  # weight 0: ignored
    with pytest.raises(ValueError, match="public"):
        local.local_train(2, 8, anchors=[("image", torch.zeros(N_PUB, D), 1.0)])


def test_average_modules_is_fedavg():
    mods = [mlp_encoder(5, (7,), 3, seed=s) for s in range(3)]
    expected = torch.stack([torch.nn.utils.parameters_to_vector(m.parameters()) for m in mods]).mean(0)
    bits = average_modules(mods)
    assert bits == n_params(mods[0]) * 32
    for m in mods:
        assert torch.allclose(torch.nn.utils.parameters_to_vector(m.parameters()), expected)
    with pytest.raises(ValueError, match="one architecture"):
        average_modules([mlp_encoder(5, (7,), 3, seed=0), mlp_encoder(5, (8,), 3, seed=0)])


def test_encoder_init_is_seeded_and_leaves_the_global_rng():
    state = torch.random.get_rng_state()
    a, b = mlp_encoder(4, (6, 5), 2, seed=3), mlp_encoder(4, (6, 5), 2, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert n_params(a) == 4 * 6 + 6 + 6 * 5 + 5 + 5 * 2 + 2


def test_bad_construction_raises():
    with pytest.raises(ValueError, match="subset"):
        RepresentationClient({"audio": mlp_encoder(3, (), 2, seed=0)}, {"audio": torch.zeros(4, 3)})
    with pytest.raises(ValueError, match="labels"):
        RepresentationClient({"image": mlp_encoder(3, (), 2, seed=0)}, {"image": torch.zeros(4, 3)})
    uni = _client(("image",), 4, 0)
    with pytest.raises(ValueError, match="server"):
        RepresentationFL([uni], uni, {"image": torch.zeros(4, 12), "text": torch.zeros(4, N_TXT)},
                         local_steps=1, server_steps=1)

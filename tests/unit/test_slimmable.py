"""Slimmable layers and the slimmable split CNN (commlab.semcom.slimmable)."""

import pytest
import torch
from torch import nn

from commlab.semcom.slimmable import (
    SlimmableConv2d,
    SlimmableLinear,
    SlimmableSplitCNN,
    SwitchableBatchNorm2d,
    distillation_loss,
    sandwich_widths,
    train_slimmable,
    transmit_slices,
    width_accuracy,
)


def _images(n=6, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_conv_sub_network_equals_plain_conv_from_first_channels():
    torch.manual_seed(0)
    slim = SlimmableConv2d(6, 10, 3, stride=2, padding=1)
    slim.set_width(in_width=4, out_width=3)
    plain = nn.Conv2d(4, 3, 3, stride=2, padding=1)
    with torch.no_grad():
        plain.weight.copy_(slim.weight[:3, :4])
        plain.bias.copy_(slim.bias[:3])
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(slim(x), plain(x), rtol=0, atol=0)
    assert slim(x).shape == (2, 3, 5, 5)


def test_linear_sub_network_equals_plain_linear_from_first_features():
    torch.manual_seed(0)
    slim = SlimmableLinear(7, 5)
    slim.set_width(in_width=2, out_width=4)
    plain = nn.Linear(2, 4)
    with torch.no_grad():
        plain.weight.copy_(slim.weight[:4, :2])
        plain.bias.copy_(slim.bias[:4])
    x = torch.randn(3, 2)
    torch.testing.assert_close(slim(x), plain(x), rtol=0, atol=0)


def test_split_cnn_width_m_equals_fixed_model_built_from_its_first_channels():
    torch.manual_seed(0)
    big = SlimmableSplitCNN(8, stem_per_slice=2, tail_channels=8)
    big.set_width(3)
    small = SlimmableSplitCNN(3, stem_per_slice=2, tail_channels=8)
    small.stem.weight.data.copy_(big.stem.weight[:6])
    small.stem.bias.data.copy_(big.stem.bias[:6])
    small.encoder.weight.data.copy_(big.encoder.weight[:3, :6])
    small.encoder.bias.data.copy_(big.encoder.bias[:3])
    small.receiver.weight.data.copy_(big.receiver.weight[:, :3])
    small.receiver.bias.data.copy_(big.receiver.bias)
    small.norm1.norms[2].load_state_dict(big.norm1.norms[2].state_dict())
    small.norm2.norms[2].load_state_dict(big.norm2.norms[2].state_dict())
    small.conv.load_state_dict(big.conv.state_dict())
    small.classifier.load_state_dict(big.classifier.state_dict())
    big.eval(), small.eval()
    x = _images()
    torch.testing.assert_close(big.encode(x), small.encode(x), rtol=0, atol=0)
    torch.testing.assert_close(big(x), small(x), rtol=1e-6, atol=1e-6)


def test_receiving_slices_equals_zero_filling_the_missing_ones():
    torch.manual_seed(1)
    model = SlimmableSplitCNN(8).eval()
    model.set_width(2)
    z = model.encode(_images())
    sliced = model.receiver(z)
    model.receiver.set_width(in_width=8)
    filled = model.receiver(torch.cat([z, torch.zeros(z.shape[0], 6, 7, 7)], dim=1))
    torch.testing.assert_close(sliced, filled, rtol=1e-6, atol=1e-6)


def test_shapes_and_payload_values_at_every_width():
    model = SlimmableSplitCNN(8).eval()
    for m in range(1, 9):
        model.set_width(m)
        z = model.encode(_images(2))
        assert z.shape == (2, m, 7, 7)
        assert model.decode(z).shape == (2, 10)
        assert model.payload_values() == 49 * m


def test_flops_against_hand_count():
    # conv 1 -> 2m, 3x3, stride 2 on 28x28: 14x14 outputs, 2*9*1 FLOP each (9 mul, 8 add, 1 bias add)
    # conv 2m -> m, 3x3, stride 2 on 14x14: 7x7 outputs, 2*9*2m FLOP each
    model = SlimmableSplitCNN(8, stem_per_slice=2)
    for m in (1, 3, 8):
        hand = (2 * m * 14 * 14) * (2 * 9 * 1) + (m * 7 * 7) * (2 * 9 * 2 * m)
        assert model.device_flops(m) == hand
    assert model.width == 8  # device_flops restores the width
    conv = SlimmableConv2d(3, 4, 2, bias=False)  # 3x3 outputs on 4x4 input, 2*2*3 mul and 11 add each
    assert conv.flops((4, 4)) == 4 * 9 * (12 + 11)
    lin = SlimmableLinear(5, 4)
    lin.set_width(in_width=3, out_width=2)
    assert lin.flops() == 2 * (3 + 2 + 1)  # per output: 3 mul, 2 add, 1 bias add


def test_flops_match_the_products_the_conv_forms():
    # the multiply count equals the number of (weight, input) products actually formed by the conv:
    # count them by running the conv on an all-ones input with all-ones weights and no bias
    conv = SlimmableConv2d(4, 5, 3, stride=2, padding=0, bias=False)
    conv.set_width(in_width=2, out_width=3)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        products = float(conv(torch.ones(1, 2, 11, 11)).sum())
    outputs = 3 * 5 * 5
    assert conv.flops((11, 11)) == 2 * products - outputs


def test_bad_widths_raise():
    conv = SlimmableConv2d(4, 6, 3)
    with pytest.raises(ValueError, match="out_width"):
        conv.set_width(out_width=7)
    with pytest.raises(ValueError, match="in_width"):
        conv.set_width(in_width=0)
    with pytest.raises(TypeError):
        conv.set_width(in_width=2.5)
    conv.set_width(in_width=2)
    with pytest.raises(ValueError, match="in_width 2"):
        conv(torch.zeros(1, 4, 5, 5))
    with pytest.raises(ValueError, match="in_width"):
        SlimmableLinear(3, 3).set_width(in_width=4)
    with pytest.raises(ValueError, match="width"):
        SwitchableBatchNorm2d(4, 3).set_width(4)
    model = SlimmableSplitCNN(8)
    for bad in (0, 9, -1):
        with pytest.raises(ValueError, match="width"):
            model.set_width(bad)
    with pytest.raises(ValueError, match="width"):
        model.device_flops(9)
    model.set_width(3)
    with pytest.raises(ValueError, match="z must have shape"):
        model.decode(torch.zeros(1, 4, 7, 7))
    with pytest.raises(ValueError, match=r"\[B, 1, 28, 28\]"):
        model.encode(torch.zeros(1, 1, 32, 32))


def test_switchable_norm_keeps_separate_statistics_per_width():
    bn = SwitchableBatchNorm2d(2, 3)
    bn.train()
    bn.set_width(1)
    bn(torch.randn(8, 2, 3, 3) + 5.0)
    assert bn.norms[0].running_mean.mean() > 0.4
    assert torch.all(bn.norms[1].running_mean == 0) and torch.all(bn.norms[2].running_mean == 0)
    shared = SwitchableBatchNorm2d(2, 3, shared=True)
    assert len(shared.norms) == 1
    shared.set_width(1)
    shared(torch.randn(8, 2, 3, 3) + 5.0)
    assert shared.norms[0].running_mean.mean() > 0.4


def test_transmit_slices_counts_the_brief_payload_and_quantises_per_slice():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 3, 7, 7) * torch.tensor([1.0, 10.0, 100.0])[None, :, None, None]
    z_hat, bits = transmit_slices(z, bits=8, generator=g)
    assert bits == 4 * 8 * (49 * 3 + 8 * 3)  # 49·m + 8·m bytes per image
    assert z_hat.shape == z.shape
    span = (z.amax(dim=(2, 3)) - z.amin(dim=(2, 3)))[..., None, None]
    assert torch.all((z_hat - z).abs() <= span / 255 + 1e-5)  # one step of that slice's own scale
    with pytest.raises(ValueError):
        transmit_slices(z.flatten(2), generator=g)


def test_width_accuracy_reports_payload_bytes_and_restores_state():
    model = SlimmableSplitCNN(8)
    model.train()
    x, y = _images(10), torch.arange(10) % 10
    for m in (1, 5, 8):
        acc, sent = width_accuracy(model, x, y, m, generator=torch.Generator().manual_seed(0), batch_size=4)
        assert 0 <= acc <= 1 and sent == 57 * m
    assert width_accuracy(model, x, y, 2, bits=None)[1] == 4 * 98
    assert model.width == 8 and model.training
    with pytest.raises(ValueError, match="generator"):
        width_accuracy(model, x, y, 2)


def test_sandwich_widths():
    g = torch.Generator().manual_seed(0)
    draws = [sandwich_widths(8, 2, g) for _ in range(200)]
    assert all(w[:2] == [8, 1] and len(w) == 4 and all(2 <= v <= 7 for v in w[2:]) for w in draws)
    assert {v for w in draws for v in w[2:]} == set(range(2, 8))
    assert sandwich_widths(1, 2, g) == [1] and sandwich_widths(2, 2, g) == [2, 1]


def test_distillation_loss_zero_for_equal_logits_and_positive_otherwise():
    a = torch.randn(5, 10)
    assert float(distillation_loss(a, a, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(a, torch.randn(5, 10), 2.0)) > 0
    with pytest.raises(ValueError):
        distillation_loss(a, a, 0.0)


def test_train_slimmable_is_seeded_and_learns_every_width():
    torch.manual_seed(0)
    x = _images(64, seed=3)
    y = (x.mean(dim=(1, 2, 3)) > x.mean()).long()  # a learnable two-class rule

    def run():
        torch.manual_seed(0)
        model = SlimmableSplitCNN(4, tail_channels=8, classes=2)
        losses = train_slimmable(model, x, y, steps=40, batch_size=32, lr=1e-2,
                                 generator=torch.Generator().manual_seed(1), teacher_logits=torch.zeros(64, 2))
        return model, losses

    model, losses = run()
    _, again = run()
    assert losses == again
    assert sum(losses[-5:]) < sum(losses[:5])
    assert model.width == 4 and not model.training
    for m in (1, 4):  # the width-specific statistics of every sandwich width were trained
        assert not torch.all(model.norm1.norms[m - 1].running_mean == 0)
    with pytest.raises(ValueError, match="same length"):
        train_slimmable(model, x, y[:10], steps=1, batch_size=8, lr=1e-3, generator=torch.Generator())

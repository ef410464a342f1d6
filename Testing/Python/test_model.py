"""The ASI autoencoder matches the journal paper's section III-B and IV."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from SemanticInterpolationLib import ASIAutoencoder, AutoencoderConfig


def _layer_summary(seq: nn.Sequential) -> list[str]:
    out = []
    for m in seq:
        if isinstance(m, nn.Conv2d):
            assert m.kernel_size == (3, 3) and m.padding == (1, 1) and m.padding_mode == "zeros"
            out.append(f"conv{m.out_channels}")
        elif isinstance(m, nn.LeakyReLU):
            assert m.negative_slope == pytest.approx(0.2)
            out.append("lrelu")
        elif isinstance(m, nn.BatchNorm2d):
            out.append("bn")
        elif isinstance(m, nn.AvgPool2d):
            assert m.kernel_size == 2
            out.append("avgpool")
        elif isinstance(m, nn.Upsample):
            assert m.mode == "nearest" and m.scale_factor == 2
            out.append("nnup")
        elif isinstance(m, nn.Sigmoid):
            out.append("sigmoid")
        else:  # pragma: no cover - would be a new layer type
            out.append(type(m).__name__)
    return out


def test_journal_architecture_layer_by_layer() -> None:
    model = ASIAutoencoder()
    assert _layer_summary(model.encoder) == [
        "conv32", "lrelu", "conv32", "lrelu", "bn", "avgpool",
        "conv64", "lrelu", "conv64", "lrelu", "bn", "avgpool",
        "conv128", "lrelu", "conv128",  # latent map: no nonlinearity
    ]
    assert _layer_summary(model.decoder) == [
        "conv128", "lrelu", "conv128", "lrelu", "bn", "nnup",
        "conv64", "lrelu", "conv64", "lrelu", "bn", "nnup",
        "conv32", "lrelu", "conv1", "sigmoid",
    ]


def test_shapes_and_output_range() -> None:
    model = ASIAutoencoder().eval()
    x = torch.rand(3, 1, 32, 48)
    with torch.no_grad():
        z = model.encode(x)
        y = model.decode(z)
    assert z.shape == (3, 128, 8, 12)
    assert y.shape == x.shape
    assert float(y.min()) > 0.0 and float(y.max()) < 1.0


def test_spie_variant_is_the_same_class_with_other_numbers() -> None:
    config = AutoencoderConfig.spie()
    model = ASIAutoencoder(config).eval()
    assert config.size_multiple == 16
    with torch.no_grad():
        z = model.encode(torch.rand(2, 1, 32, 32))
    assert z.shape == (2, 16, 2, 2)
    assert AutoencoderConfig.from_dict(config.to_dict()) == config


def test_weight_initialisation_follows_section_iv() -> None:
    torch.manual_seed(0)
    model = ASIAutoencoder()
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
        if conv.weight.numel() < 5000:
            continue  # too few weights for a tight estimate
        fan_in = conv.in_channels * 9
        expected = 1.0 / math.sqrt(fan_in * (1 + 0.2**2))
        assert float(conv.weight.detach().std()) == pytest.approx(expected, rel=0.05)
        assert abs(float(conv.weight.detach().mean())) < 0.1 * expected
        assert float(conv.bias.detach().abs().max()) == 0.0


def test_mix_is_the_convex_combination_of_eq_1() -> None:
    a, b = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    mixed = ASIAutoencoder.mix(a, b, torch.tensor([0.25, 1.0]))
    assert torch.allclose(mixed[0], 0.75 * a[0] + 0.25 * b[0])
    assert torch.allclose(mixed[1], b[1])
    assert torch.allclose(ASIAutoencoder.mix(a, b, 0.0), a)


@pytest.mark.parametrize("bad", [
    dict(encoder_channels=(32, 64), decoder_channels=(64,)),
    dict(latent_channels=0),
    dict(negative_slope=1.5),
])
def test_invalid_configuration_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        ASIAutoencoder(AutoencoderConfig(**bad))


def test_flop_count_matches_a_hand_count() -> None:
    flops = ASIAutoencoder().flops_per_pixel()
    # decoder per input pixel: two 128->128 convs at 1/16 resolution, 128->64 and 64->64 at 1/4,
    # 64->32 and 32->1 at full resolution; 2 FLOPs per multiply-add, 9 taps
    decode = 2 * 9 * ((128 * 128 * 2) / 16 + (128 * 64 + 64 * 64) / 4 + 64 * 32 + 32)
    encode = 2 * 9 * ((1 * 32 + 32 * 32) + (32 * 64 + 64 * 64) / 4 + (64 * 128 + 128 * 128) / 16)
    assert flops["decode"] == pytest.approx(decode)
    assert flops["encode"] == pytest.approx(encode)

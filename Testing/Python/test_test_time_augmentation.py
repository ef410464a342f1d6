"""Test-time augmentation of pair-unet networks: the mean over swapped and mirrored views of each pair."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import T1_2MM
from SemanticInterpolationLib import ASIAutoencoder, ASIEngine, InputError, load_checkpoint, save_checkpoint
from SemanticInterpolationLib.engine.test_time_augmentation import augmented_synthesis
from SemanticInterpolationLib.models.normalization import IntensityNormalization
from SemanticInterpolationLib.models.pair_unet import PairUNet, PairUNetConfig


def _random_net() -> PairUNet:
    torch.manual_seed(3)
    net = PairUNet(PairUNetConfig(widths=(4, 8))).with_anchor_input()
    with torch.no_grad():
        net.head.weight.normal_(0.0, 0.5)
    return net.eval()


def test_the_views_are_the_swapped_and_mirrored_pairs_and_their_mean_is_returned():
    net = _random_net()
    a, b, anchor = (torch.rand(3, 1, 8, 12) for _ in range(3))
    alpha = torch.tensor([0.25, 0.5, 0.75])
    with torch.no_grad():
        plain = net.synthesize(a, b, alpha, anchor)
        swapped = net.synthesize(b, a, 1 - alpha, anchor)
        f = lambda t: torch.flip(t, (-1,))  # noqa: E731
        mirrored = f(net.synthesize(f(a), f(b), alpha, f(anchor)))
        mirrored_swapped = f(net.synthesize(f(b), f(a), 1 - alpha, f(anchor)))
        assert torch.equal(augmented_synthesis(net.synthesize, "none", a, b, alpha, anchor), plain)
        torch.testing.assert_close(augmented_synthesis(net.synthesize, "pair", a, b, alpha, anchor),
                                   (plain + swapped) / 2)
        torch.testing.assert_close(augmented_synthesis(net.synthesize, "pair-flip", a, b, alpha, anchor),
                                   (plain + swapped + mirrored + mirrored_swapped) / 4)
        assert (plain - swapped).abs().max() > 1e-3  # a random network is not symmetric: the views differ
        # dihedral: both orders on the eight turns and mirrors of the square, each answer turned back
        views = []
        for turn in range(4):
            for mirror in (False, True):
                def see(t, turn=turn, mirror=mirror):
                    t = torch.rot90(t, turn, (-2, -1))
                    return torch.flip(t, (-1,)) if mirror else t

                def back(t, turn=turn, mirror=mirror):
                    t = torch.flip(t, (-1,)) if mirror else t
                    return torch.rot90(t, -turn, (-2, -1))

                views.append(back(net.synthesize(see(a), see(b), alpha, see(anchor))))
                views.append(back(net.synthesize(see(b), see(a), 1 - alpha, see(anchor))))
        dihedral = augmented_synthesis(net.synthesize, "dihedral", a, b, alpha, anchor)
        assert dihedral.shape == plain.shape  # 8 x 12: the quarter turns see 12 x 8 and are turned back
        torch.testing.assert_close(dihedral, torch.stack(views).mean(0))
        assert (dihedral - (plain + swapped + mirrored + mirrored_swapped) / 4).abs().max() > 1e-4
    # an untrained pair U-Net is exactly the linear mix, which every view gives: the mean changes nothing
    linear = PairUNet(PairUNetConfig(widths=(4, 8))).eval()
    with torch.no_grad():
        for mode in ("pair-flip", "dihedral"):
            torch.testing.assert_close(augmented_synthesis(linear.synthesize, mode, a, b, alpha),
                                       a + alpha.reshape(-1, 1, 1, 1) * (b - a))


def test_the_engine_takes_the_checkpoints_recommendation_and_an_explicit_choice(tmp_path):
    net = _random_net()
    recommended = save_checkpoint(tmp_path / "tta.pt", net, normalization=IntensityNormalization(clip=False),
                                  metadata={"inference": {"synthesis": "plain", "test_time_augmentation": "pair-flip"}})
    bare = save_checkpoint(tmp_path / "bare.pt", net, normalization=IntensityNormalization(clip=False))
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(T1_2MM))).astype(np.float32)[:6]
    auto = ASIEngine(load_checkpoint(recommended), "cpu")
    assert auto.test_time_augmentation == "pair-flip" and "test-time augmentation pair-flip" in auto.describe()
    assert ASIEngine(load_checkpoint(bare), "cpu").test_time_augmentation == "none"
    none = ASIEngine(load_checkpoint(recommended), "cpu", test_time_augmentation="none")
    pair = ASIEngine(load_checkpoint(recommended), "cpu", test_time_augmentation="pair")
    outputs = {name: engine.upsample(volume, 3) for name, engine in
               (("auto", auto), ("none", none), ("pair", pair))}
    assert np.array_equal(outputs["auto"][::3], volume) and np.array_equal(outputs["none"][::3], volume)
    for x, y in (("auto", "none"), ("auto", "pair"), ("pair", "none")):
        assert np.abs(outputs[x] - outputs[y]).max() > 1e-3, (x, y)


def test_models_whose_state_is_not_the_slice_refuse_it_and_ignore_a_recommendation(tmp_path):
    asi = save_checkpoint(tmp_path / "asi.pt", ASIAutoencoder(),
                          metadata={"inference": {"test_time_augmentation": "pair-flip"}})
    assert ASIEngine(load_checkpoint(asi), "cpu").test_time_augmentation == "none"
    with pytest.raises(InputError, match="applies to networks whose state is the slice.*--tta none"):
        ASIEngine(load_checkpoint(asi), "cpu", test_time_augmentation="pair")
    with pytest.raises(InputError, match="must be one of none, pair, pair-flip"):
        ASIEngine(load_checkpoint(tmp_path / "asi.pt"), "cpu", test_time_augmentation="flip")


def test_cli_tta_option(tmp_path):
    from SemanticInterpolationLib.cli.app import main

    net = _random_net()
    checkpoint = save_checkpoint(tmp_path / "tta.pt", net, normalization=IntensityNormalization(clip=False))
    image = sitk.ReadImage(str(T1_2MM))
    source = tmp_path / "in.nii.gz"
    sitk.WriteImage(image[:, :, :6], str(source))
    results = {}
    for mode in ("none", "pair-flip"):
        out = tmp_path / f"{mode}.nii.gz"
        assert main(["upsample", str(source), str(out), "-k", "2", "--checkpoint", str(checkpoint), "--tta", mode,
                     "--output-type", "float32", "--device", "cpu", "-q"]) == 0
        results[mode] = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    engine = ASIEngine(load_checkpoint(checkpoint), "cpu", test_time_augmentation="pair-flip")
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(source))).astype(np.float32)
    np.testing.assert_allclose(results["pair-flip"], engine.upsample(expected, 2), rtol=1e-4, atol=1e-3)
    assert np.abs(results["pair-flip"] - results["none"]).max() > 1e-3
    assert main(["upsample", str(source), str(tmp_path / "x.nii.gz"), "-k", "2", "--method", "linear",
                 "--tta", "pair"]) != 0


def test_an_unknown_recommendation_in_a_checkpoint_is_a_checkpoint_error(tmp_path):
    from SemanticInterpolationLib import CheckpointError

    path = save_checkpoint(tmp_path / "odd.pt", _random_net(), metadata={"inference": {"test_time_augmentation": "x9"}})
    with pytest.raises(CheckpointError, match="odd.pt recommends an unknown test-time augmentation 'x9'"):
        ASIEngine(load_checkpoint(path), "cpu")

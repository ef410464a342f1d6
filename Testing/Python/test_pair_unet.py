"""The pair U-Net model type: registry, checkpoints, engine, gap sampling and training."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import T1_2MM
from SemanticInterpolationLib import ASIEngine, CheckpointError, InputError, load_checkpoint, save_checkpoint
from SemanticInterpolationLib.models.checkpoint import CHECKPOINT_FORMAT, checkpoint_from_payload
from SemanticInterpolationLib.models.normalization import IntensityNormalization
from SemanticInterpolationLib.models.pair_unet import PairUNet, PairUNetConfig
from SemanticInterpolationLib.models.registry import get_model_type, model_type_names
from SemanticInterpolationLib.training import Trainer, TrainingConfig
from SemanticInterpolationLib.training.data import Augmentation, GapDataset, TrainingVolume


def _t1() -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(T1_2MM))).astype(np.float32)


def _trained_pair_unet(seed: int = 0) -> PairUNet:
    torch.manual_seed(seed)
    model = PairUNet()
    with torch.no_grad():  # a non-trivial head: the network then changes the linear mix
        model.head.weight.normal_(0, 0.05)
    return model.eval()


def test_registry_lists_both_types_and_names_unknown_ones():
    assert model_type_names()[0] == "asi" and "pair-unet" in model_type_names()
    assert get_model_type(None).name == "asi"
    with pytest.raises(CheckpointError, match=r"unknown model type 'no-such-type'.*asi, .*pair-unet"):
        get_model_type("no-such-type")


def test_untrained_network_is_linear_interpolation_through_the_engine():
    """The head starts at zero: an untrained pair U-Net outputs the linear mix at alpha = i/K."""
    volume = _t1()
    engine = ASIEngine(PairUNet(), "cpu", normalization=IntensityNormalization(clip=False))
    out = engine.upsample(volume, 3, axis=0, output_dtype=np.float32)
    for s in range(volume.shape[0] - 1):
        for i in (1, 2):
            expected = (1 - i / 3) * volume[s] + (i / 3) * volume[s + 1]
            np.testing.assert_allclose(out[3 * s + i], expected, rtol=0, atol=1e-3 * float(np.ptp(volume)))
    np.testing.assert_array_equal(out[::3], volume)  # acquired slices bit-exact


def test_engine_output_is_the_network_applied_to_each_pair():
    model = _trained_pair_unet()
    volume = _t1()[:6]
    norm = IntensityNormalization(clip=False)
    out = ASIEngine(model, "cpu", normalization=norm, batch_size=3).upsample(volume, 4, axis=0, output_dtype=np.float32)
    r = norm.fit(volume)
    unit = torch.from_numpy(norm.to_unit_range(volume, r))
    # slices are 41x33: the engine pads to a multiple of 4 (edge), we do the same
    padded = torch.nn.functional.pad(unit[:, None], (0, 3, 0, 3), mode="replicate")
    with torch.no_grad():
        for s in range(5):
            for i in (1, 2, 3):
                y = model(padded[s:s + 1], padded[s + 1:s + 2], i / 4)[0, 0, :41, :33].numpy()
                np.testing.assert_allclose(out[4 * s + i], norm.to_input_units(y, r), rtol=1e-4, atol=1e-3)


def test_residual_modes_are_refused_for_pair_unet():
    with pytest.raises(InputError, match="does not apply to pair-unet"):
        ASIEngine(PairUNet(), "cpu", synthesis="residual-bspline")


def test_checkpoint_says_its_type_and_round_trips(tmp_path):
    model = _trained_pair_unet()
    path = save_checkpoint(tmp_path / "p.pt", model, normalization=IntensityNormalization(clip=False))
    payload = torch.load(path, weights_only=True)
    assert payload["model_type"] == "pair-unet" and payload["architecture"]["widths"] == [24, 48, 96]
    loaded = load_checkpoint(path)
    assert isinstance(loaded.model, PairUNet) and loaded.model_type == "pair-unet"
    assert loaded.normalization.clip is False and "pair-unet" in loaded.summary()
    for a, b in zip(model.state_dict().values(), loaded.model.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoint_without_model_type_is_the_journal_asi(tmp_path, random_checkpoint):
    payload = torch.load(random_checkpoint, weights_only=True)
    payload.pop("model_type", None)
    loaded = checkpoint_from_payload(payload)
    assert loaded.model_type == "asi" and loaded.config.name == "asi-journal"


@pytest.mark.parametrize("architecture, message", [
    ({"widths": 24}, "widths must be a list"),
    ({"widths": [24, 10 ** 6]}, "whole numbers from 1 to 1024"),
    ({"widths": [24, 48], "depth": 3}, "unknown fields"),
    ([1, 2], "must be a mapping"),
])
def test_bad_pair_unet_configuration_is_a_clear_error_before_building(architecture, message):
    payload = {"format": CHECKPOINT_FORMAT, "format_version": 1, "model_type": "pair-unet",
               "architecture": architecture, "state_dict": {}, "metadata": {}}
    with pytest.raises(CheckpointError, match=message):
        checkpoint_from_payload(payload)


def test_unknown_model_type_in_a_checkpoint_names_the_fix():
    payload = {"format": CHECKPOINT_FORMAT, "format_version": 1, "model_type": "some-future-type",
               "architecture": {}, "state_dict": {}, "metadata": {}}
    with pytest.raises(CheckpointError, match="unknown model type 'some-future-type'.*update SemanticInterpolation"):
        checkpoint_from_payload(payload)


def _ramp_volume(n: int = 30, size: int = 20, spacing=(1.0, 1.0, 1.0), name: str = "ramp") -> TrainingVolume:
    """Slice k is the constant k: where a sample's middle lies is readable from its values."""
    array = np.repeat(np.arange(n, dtype=np.float32)[:, None, None], size, 1).repeat(size, 2)
    volume = TrainingVolume.from_array(array, spacing, axis=2, name=name,
                                       normalization=IntensityNormalization(0.0, 100.0, clip=False))
    volume.slices = array.copy()  # unnormalised: the slice index is the value
    return volume


def test_gap_dataset_alphas_gaps_and_middles():
    fine = _ramp_volume()
    coarse = _ramp_volume(spacing=(1.0, 1.0, 5.0), name="coarse")
    data = GapDataset([fine, coarse], 12, min_gap=2, max_gap=6, augmentation=Augmentation.none(), seed=3)
    gaps = set()
    for item in range(len(data)):
        patch, alpha = data[item]
        first, middle, second = (float(patch[i].mean()) for i in range(3))
        assert 0 < float(alpha) < 1
        assert middle == pytest.approx(first + float(alpha) * (second - first), abs=1e-5)
        gap = round(abs(second - first))
        if data.index[item][0] == 1:
            assert gap == 2 and float(alpha) == 0.5  # anisotropic stack: the two neighbours
        else:
            assert 2 <= gap <= 6
            gaps.add(gap)
    assert gaps == {2, 3, 4, 5, 6}
    patch_a, alpha_a = data[5]
    patch_b, alpha_b = data[5]
    assert torch.equal(patch_a, patch_b) and alpha_a == alpha_b  # deterministic per item and epoch
    data.set_epoch(1)
    assert not torch.equal(data[5][0], patch_a) or data[5][1] != alpha_a


def test_gap_dataset_noise_and_thick_slices_touch_only_the_inputs():
    fine = _ramp_volume()
    noisy = GapDataset([fine], 12, augmentation=Augmentation(rotate=False, flip=False, intensity_probability=0.0,
                                                              noise_std_max=0.2, noise_probability=1.0), seed=0)
    thick = GapDataset([fine], 12, augmentation=Augmentation.none(), thick_slice_probability=1.0, seed=0)
    for item in (2, 9, 15):
        patch, _ = noisy[item]
        assert float(patch[1].std()) == 0.0 and float(patch[0].std()) > 0 and float(patch[2].std()) > 0
        patch, alpha = thick[item]
        assert float(patch[1].std()) == 0.0 and float(patch[1].mean()) == round(float(patch[1].mean()))


def test_pair_unet_trains_on_real_mri_and_refuses_mixed_types(tmp_path, random_checkpoint):
    config = TrainingConfig([str(T1_2MM)], output=tmp_path / "pair.pt", validation_volumes=[str(T1_2MM)],
                            model_type="pair-unet", epochs=5, steps_per_epoch=12, batch_size=8, patch_size=24,
                            synthesis_loss="mse", learning_rate=1e-3, device="cpu", seed=1)
    result = Trainer(config).run()
    # validation scores the same real slices every epoch: its loss falls, and the network (linear
    # interpolation when untrained) ends above linear interpolation on them
    losses = [h["val_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.history[-1]["val_syn_psnr"] > result.history[-1]["val_linear_psnr"]
    assert all(h["val_rec_psnr"] is None and h["val_syn_psnr"] > 0 for h in result.history)
    trained = load_checkpoint(result.output)
    assert trained.model_type == "pair-unet" and trained.metadata["inference"]["synthesis"] == "plain"
    assert trained.training["model_type"] == "pair-unet"
    # fine-tuning keeps the type; another type is refused before any work
    Trainer(TrainingConfig([str(T1_2MM)], output=tmp_path / "tuned.pt", init=result.output, epochs=1,
                           steps_per_epoch=1, batch_size=2, patch_size=24, device="cpu")).close()
    with pytest.raises(CheckpointError, match="is a asi model, but model type 'pair-unet'"):
        Trainer(TrainingConfig([str(T1_2MM)], output=tmp_path / "x.pt", init=random_checkpoint,
                               model_type="pair-unet", patch_size=24, device="cpu"))
    assert not (tmp_path / "x.pt").exists()


def test_cli_trains_and_upsamples_a_pair_unet(tmp_path):
    from SemanticInterpolationLib.cli import main

    out = tmp_path / "p.pt"
    assert main(["train", str(T1_2MM), "--model-type", "pair-unet", "--output", str(out), "--epochs", "1",
                 "--steps-per-epoch", "2", "--batch-size", "2", "--patch-size", "24", "--device", "cpu"]) == 0
    image = tmp_path / "up.nii.gz"
    assert main(["upsample", str(T1_2MM), str(image), "--factor", "2", "--checkpoint", str(out),
                 "--device", "cpu"]) == 0
    result = sitk.ReadImage(str(image))
    assert result.GetSize()[2] == 2 * 25 - 1
    assert main(["upsample", str(T1_2MM), str(tmp_path / "bad.nii.gz"), "--factor", "2", "--checkpoint", str(out),
                 "--synthesis", "residual", "--device", "cpu"]) == 1
    assert not (tmp_path / "bad.nii.gz").exists()


def test_evaluate_compares_checkpoints_of_several_types_side_by_side(tmp_path, random_checkpoint):
    pytest.importorskip("scipy", reason="evaluate needs scipy")
    pytest.importorskip("matplotlib", reason="evaluate needs matplotlib")
    from SemanticInterpolationLib.cli import main

    pair = save_checkpoint(tmp_path / "pair.pt", PairUNet(), normalization=IntensityNormalization(clip=False))
    out = tmp_path / "report"
    assert main(["evaluate", str(T1_2MM), "--checkpoint", str(pair), "--compare", str(random_checkpoint),
                 "--methods", "asi,linear", "--factors", "2", "--device", "cpu", "-o", str(out)]) == 0
    rows = (out / "summary.csv").read_text().splitlines()
    methods = [row.split(",")[1] for row in rows[1:]]
    assert methods == ["asi", "linear", f"model:{random_checkpoint.name.split('.')[0]}"]
    # the untrained pair U-Net is linear interpolation, slice for slice
    scores = (out / "scores.csv").read_text().splitlines()
    header = scores[0].split(",")
    psnr = header.index("psnr")
    by_method: dict[str, list[float]] = {}
    for line in scores[1:]:
        cells = line.split(",")
        by_method.setdefault(cells[header.index("method")], []).append(float(cells[psnr]))
    np.testing.assert_allclose(by_method["asi"], by_method["linear"], atol=0.05)
    assert main(["evaluate", str(T1_2MM), "--compare", str(tmp_path / "missing.pt"), "--methods", "linear",
                 "--factors", "2", "-o", str(tmp_path / "r2")]) == 1


@pytest.mark.parametrize("gap, offset", [(2, 1), (4, 1), (4, 3), (5, 2), (6, 4)])
def test_gap_dataset_anchor_is_the_bspline_baseline_of_the_thinned_volume(gap, offset):
    """The fourth channel is what the engine's B-spline gives when every gap-th slice is acquired."""
    from SemanticInterpolationLib.engine.baselines import interpolate_array
    from SemanticInterpolationLib.training.data import bspline_fraction_anchor, lattice_context_indices

    slices = _t1()[:, :, :]  # [25, 41, 33]: 25 slices along numpy axis 0
    unit = (slices - slices.min()) / np.ptp(slices)
    for first in (0, gap, 2 * gap):  # at the start of the volume (mirrored context) and inside
        if first + gap >= unit.shape[0]:
            continue
        lattice = unit[first % gap::gap]
        spline = interpolate_array(lattice, 0, gap, "bspline")
        expected = spline[(first // gap) * gap + offset]
        context = unit[lattice_context_indices(first, gap, unit.shape[0])]
        np.testing.assert_allclose(bspline_fraction_anchor(context, gap, offset), expected, atol=3e-3)


def test_anchor_input_network_widens_exactly_and_runs_in_the_engine_and_training(tmp_path):
    model = _trained_pair_unet()
    wider = model.with_anchor_input()
    assert wider.needs_anchor and not model.needs_anchor and wider.config.anchor_input
    volume = _t1()
    norm = IntensityNormalization(clip=False)
    same = [ASIEngine(m, "cpu", normalization=norm).upsample(volume, 3, output_dtype=np.float32) for m in (model, wider)]
    np.testing.assert_array_equal(same[0], same[1])  # the new input starts at zero weights
    with pytest.raises(ValueError, match="needs the B-spline anchor"):
        wider(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), 0.5)
    init = save_checkpoint(tmp_path / "wide.pt", wider, normalization=norm)
    config = TrainingConfig([str(T1_2MM)], output=tmp_path / "a.pt", validation_volumes=[str(T1_2MM)], init=init,
                            epochs=1, steps_per_epoch=3, batch_size=4, patch_size=24, device="cpu",
                            thick_slice_probability=0.5, noise_std=0.02)
    result = Trainer(config).run()
    trained = load_checkpoint(result.output)
    assert trained.config.anchor_input and result.history[0]["val_syn_psnr"] > 0


def test_thick_slice_noise_is_blurred_into_the_inputs_and_kept_in_the_middle():
    """Thick samples: noise on the fine slices before the blur, so the middle's noise is in the inputs."""
    fine = _ramp_volume(n=40, size=32)
    data = GapDataset([fine], 32, min_gap=2, max_gap=2, thick_slice_probability=1.0, seed=0,
                      augmentation=Augmentation(rotate=False, flip=False, intensity_probability=0.0,
                                                noise_std_max=0.5, noise_probability=1.0))
    correlations = []
    for item in range(5, 30):
        patch, _ = data[item]
        clean, _ = GapDataset([fine], 32, min_gap=2, max_gap=2, thick_slice_probability=1.0, seed=0,
                              augmentation=Augmentation.none())[item]
        noise = (patch - clean).numpy()
        assert noise[1].std() > 0  # the sharp middle is noisy too
        correlations.append(np.corrcoef(noise[0].ravel(), noise[1].ravel())[0, 1])
    # FWHM 2 slices: each endpoint holds about a fifth of the middle's noise
    assert 0.1 < float(np.mean(correlations)) < 0.6


def test_validation_tells_a_profile_network_the_thin_slices_of_a_fine_volume(tmp_path):
    """The selection metric of a slice-profile network scores the told path, as a known thin-slice scan is
    upsampled: thickness / gap = 1 / (2 s) for neighbours 2 s apart; a network without the input is not told.
    A profile network is also scored on thick slices (told 1), which only it gets (``val_thick_*``)."""
    for thickness_input, expected in ((True, {0.25, 1.0}), (False, {None})):
        net = PairUNet(PairUNetConfig(widths=(4, 8), anchor_input=True, thickness_input=thickness_input))
        init = save_checkpoint(tmp_path / f"init{thickness_input}.pt", net,
                               normalization=IntensityNormalization(clip=False))
        config = TrainingConfig([str(T1_2MM)], output=tmp_path / f"run{thickness_input}.pt",
                                validation_volumes=[str(T1_2MM)], model_type="pair-unet", init=str(init), epochs=1,
                                steps_per_epoch=1, batch_size=4, patch_size=24, validation_triplets=3,
                                device="cpu", seed=0)
        trainer = Trainer(config)
        trainer._prepare()
        told = []
        model = load_checkpoint(init).model
        real = model.synthesize
        model.synthesize = lambda *args, thickness=None: told.append(thickness) or real(*args, thickness=thickness)
        record = trainer.validate(model)
        assert set(told) == expected and record["val_syn_psnr"] > 0
        if thickness_input:
            assert record["val_thick_syn_psnr"] > 0 and record["val_thick_bspline_psnr"] > 0
            # thick neighbours are blurred: the same B-spline formula scores differently than on thin ones
            assert record["val_thick_bspline_psnr"] != record["val_bspline_psnr"]
            assert record["val_thin_thick_psnr"] == pytest.approx(
                0.5 * (record["val_syn_psnr"] + record["val_thick_syn_psnr"]))
        else:
            assert "val_thick_syn_psnr" not in record and record["val_thin_thick_psnr"] == record["val_syn_psnr"]

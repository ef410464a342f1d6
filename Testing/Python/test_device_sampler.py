"""The device-resident pair-unet sampler follows GapDataset's rules (on the CPU), and the packed data file."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from SemanticInterpolationLib import load_checkpoint
from SemanticInterpolationLib.errors import InputError
from SemanticInterpolationLib.models.normalization import IntensityNormalization
from SemanticInterpolationLib.training import Trainer, TrainingConfig
from SemanticInterpolationLib.training import data as data_module
from SemanticInterpolationLib.training.data import Augmentation, GapDataset, TrainingVolume, blur_slices, blur_weights
from SemanticInterpolationLib.training.device_sampler import (DeviceGapSampler, blur_slices_torch,
                                                               load_packed_volumes, save_packed_volumes)

LIB_PARENT = Path(__file__).resolve().parents[2] / "SemanticInterpolation"


def _volume(slices: np.ndarray, spacing=(1.0, 1.0, 1.0), name: str = "v") -> TrainingVolume:
    n, h, w = slices.shape
    return TrainingVolume(name=name, slices=np.ascontiguousarray(slices, dtype=np.float32),
                          in_plane_spacing_mm=(spacing[0], spacing[1]), slice_axis=2, slice_spacing_mm=spacing[2],
                          original_size=(w, h, n))


def _ramp(n: int = 30, size: int = 20, spacing=(1.0, 1.0, 1.0), name: str = "ramp") -> TrainingVolume:
    """Slice k is the constant k: a sample's slices are readable from its values."""
    return _volume(np.repeat(np.arange(n, dtype=np.float32)[:, None, None], size, 1).repeat(size, 2), spacing, name)


class _Script:
    """A numpy Generator stand-in that returns given values in GapDataset's order of calls."""

    def __init__(self, values):
        self.values = list(values)

    def _next(self):
        return self.values.pop(0)

    def integers(self, low, high=None, size=None):
        value = self._next()
        assert low <= value < high, (low, value, high)
        return value

    def random(self):
        return self._next()

    def uniform(self, low=0.0, high=1.0, size=None):
        return self._next()

    def normal(self, loc, scale, size):
        return self._next()


def _script_of(sampler: DeviceGapSampler, dataset: GapDataset, draws, b: int, augmentation: Augmentation):
    """GapDataset's random values that make the choices of sample ``b`` of ``draws``."""
    item = lambda t: t[b].item()  # noqa: E731
    vi, gap, thick = item(draws.volume), item(draws.gap), bool(item(draws.thick))
    values = []
    if sampler.fine[vi]:
        values += [gap, item(draws.offset)]
    values += [item(draws.top), item(draws.left)]
    if dataset.slice_profile:
        if sampler.fine[vi] and dataset.thick_slice_probability > 0:
            values.append(0.0 if thick else 0.999)
        if thick:
            ratio = item(draws.ratio)
            values += [0.0] if ratio == 1.0 else [0.999, ratio]  # ratio 1, else uniform in [MIN_THICK_RATIO, 1]
        values.append(0.0 if item(draws.withheld) else 0.999)
    elif (vi, gap) in dataset.thick:
        values.append(0.0 if thick else 0.999)
    values += [item(draws.rotation), int(item(draws.flip)), 0.0 if item(draws.change) else 0.999,
               math.log(item(draws.gamma)), item(draws.contrast), item(draws.brightness), int(item(draws.swap))]
    if augmentation.noise_std_max > 0:
        # the field is on slices min(rows) - R ..: GapDataset's field of a thick sample, or its rows' noise
        field = draws.noise[b].numpy()
        rows = sampler.rows(draws)[b].tolist()
        low, high, big = min(rows), max(rows), sampler.max_radius
        if np.any(field):
            values += [0.0, 0.1]
            if thick:
                fwhm = item(draws.ratio) * gap if dataset.slice_profile else gap
                radius = int(blur_weights(fwhm)[0][-1])
                values.append(field[big - radius:big + high - low + radius + 1])
            else:
                inputs = [rows[i] for i in [0, 2] + list(range(3, len(rows)))]
                values += [field[big + r - low] for r in sorted(set(inputs))]
        else:
            values.append(0.999)
    return values


def _mixed_volumes(long: bool = False):
    """A fine volume, an anisotropic stack and a fine volume with near-isotropic spacing (non-square, random
    slices: orientation errors show); ``long`` adds a fine volume longer than the anchor's lattice."""
    rng = np.random.default_rng(0)
    volumes = [_volume(rng.random((14, 20, 24)), name="fine"),
               _volume(rng.random((6, 18, 22)), spacing=(1.0, 1.0, 5.0), name="coarse"),
               _volume(rng.random((9, 16, 16)), spacing=(0.8, 0.8, 1.1), name="fine2")]
    if long:
        volumes.append(_volume(rng.random((60, 17, 16)), spacing=(0.9, 0.9, 1.0), name="long"))
    return volumes


def _compare_choice_by_choice(monkeypatch, sampler, dataset, aug, items, draws):
    """Every sample of ``draws`` against the GapDataset item made with the same choices; returns the samples'
    (rotation, flip, swap, thick) and, with the slice profile, their ratios as GapDataset gives them."""
    rendered = sampler.render(draws)
    assert all(t.dtype == torch.float32 for t in rendered)
    seen, ratios = set(), []
    for b in range(items.numel()):
        script = _Script(_script_of(sampler, dataset, draws, b, aug))
        monkeypatch.setattr(data_module.np.random, "default_rng", lambda *a, s=script: s)
        expected = dataset[int(items[b])]
        assert not script.values  # every scripted value was used: the call order is GapDataset's
        assert len(expected) == len(rendered)
        torch.testing.assert_close(rendered[0][b], expected[0], atol=3e-6, rtol=1e-5)
        assert float(rendered[1][b]) == pytest.approx(float(expected[1]), abs=1e-7)
        if dataset.slice_profile:
            got, want = float(rendered[2][b]), float(expected[2])
            assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-7), (got, want)
            ratios.append(want)
        seen.add((int(draws.rotation[b]), bool(draws.flip[b]), bool(draws.swap[b]), bool(draws.thick[b])))
    return seen, ratios


@pytest.mark.parametrize("thick,noise", [(0.5, 0.0), (0.0, 0.1), (1.0, 0.2), (0.5, 0.1)])
def test_each_choice_gives_gap_datasets_patch(monkeypatch, thick, noise):
    volumes = _mixed_volumes()
    aug = Augmentation(noise_std_max=noise)
    sampler = DeviceGapSampler(volumes, 12, max_gap=5, augmentation=aug, seed=4, thick_slice_probability=thick)
    dataset = GapDataset(volumes, 12, max_gap=5, augmentation=aug, seed=4, thick_slice_probability=thick)
    assert sampler.index == dataset.index and sampler.fine == dataset.fine == [True, False, True]
    items = torch.arange(len(sampler)).repeat(3)
    draws = sampler.draw(items, sampler.generator(0))
    patches, alphas = sampler.render(draws)
    assert patches.shape == (items.numel(), 3, 12, 12) and patches.dtype == alphas.dtype == torch.float32
    seen, _ = _compare_choice_by_choice(monkeypatch, sampler, dataset, aug, items, draws)
    assert len({s[:3] for s in seen}) >= 12  # most rotation/flip/swap combinations were exercised


@pytest.mark.parametrize("anchor,profile,thick,noise", [
    (True, False, 0.5, 0.1),  # the previous default's samples: anchor, thick copies, noise before the blur
    (False, True, 0.5, 0.1),  # slice profile alone
    (True, True, 0.0, 0.1),  # the default's inputs, thin samples only
    (True, True, 0.5, 0.0),  # ... thick samples, no noise
    (True, True, 0.5, 0.15),  # ... the default's recipe: thick and thin, noisy
    (True, True, 1.0, 0.2),  # ... every fine sample thick, noisy
])
def test_anchor_and_slice_profile_follow_gap_dataset_choice_by_choice(monkeypatch, anchor, profile, thick, noise):
    volumes = _mixed_volumes(long=True)
    aug = Augmentation(noise_std_max=noise, noise_probability=0.8)
    options = dict(max_gap=5, augmentation=aug, seed=4, thick_slice_probability=thick, bspline_anchor=anchor,
                   slice_profile=profile, unknown_profile_probability=0.3)
    sampler = DeviceGapSampler(volumes, 12, **options)
    dataset = GapDataset(volumes, 12, **options)
    assert sampler.index == dataset.index and sampler.fine == [True, False, True, True]
    items = torch.arange(len(sampler)).repeat(2)
    draws = sampler.draw(items, sampler.generator(1))
    rendered = sampler.render(draws)
    assert len(rendered) == (3 if profile else 2)
    assert rendered[0].shape == (items.numel(), 4 if anchor else 3, 12, 12)
    seen, ratios = _compare_choice_by_choice(monkeypatch, sampler, dataset, aug, items, draws)
    assert len({s[:3] for s in seen}) >= 12
    fine = sampler.is_fine[draws.volume]
    if thick:
        assert bool(draws.thick[fine].any()) and not bool(draws.thick[~fine].any())
        assert (thick == 1.0) == bool(draws.thick[fine].all())
    else:
        assert not bool(draws.thick.any())
    if profile:  # every kind of ratio was compared: thin 1 / gap, thick 1 and < 1, withheld, anisotropic
        told = ~draws.withheld
        thin = told & fine & ~draws.thick
        assert bool(thin.any()) == (thick < 1.0)
        assert torch.allclose(draws.ratio[thin], 1.0 / draws.gap[thin].double())
        assert bool(draws.withheld.any()) and all(math.isnan(r) for r, w in zip(ratios, draws.withheld.tolist()) if w)
        assert bool(torch.isnan(draws.ratio[~fine]).all()) and bool((told & ~fine).any())
        if thick:
            assert bool((told & draws.thick & (draws.ratio == 1.0)).any())
            assert bool((told & draws.thick & (draws.ratio < 1.0)).any())
    if noise:  # noisy samples of each kind were compared
        noisy = draws.noise.flatten(1).abs().amax(1) > 0
        assert bool((noisy & ~draws.thick).any()) and (not thick or bool((noisy & draws.thick).any()))
    if anchor:  # mirrored lattices near the ends and plain ones in the long volume
        rows = sampler.rows(draws)
        assert bool((rows[:, 3:] == rows[:, 3:4]).all(1).logical_not().all())
        assert bool(((draws.volume == 3) & (rows[:, 3] == draws.first - 5 * draws.gap)).any())


def test_gaps_alphas_and_middles_follow_the_rules():
    fine, coarse = _ramp(), _ramp(n=12, spacing=(1.0, 1.0, 5.0), name="coarse")
    sampler = DeviceGapSampler([fine, coarse], 12, max_gap=6, augmentation=Augmentation.none(), seed=3)
    dataset = GapDataset([fine, coarse], 12, max_gap=6, augmentation=Augmentation.none(), seed=3)
    assert len(sampler) == len(dataset)
    items = torch.randint(0, len(sampler), (20000,), generator=torch.Generator().manual_seed(1))
    d = sampler.draw(items, sampler.generator(0))
    patches, alpha = sampler.render(d)
    first, middle, second = (patches[:, c].mean((1, 2)) for c in range(3))
    assert torch.all((alpha > 0) & (alpha < 1))
    torch.testing.assert_close(middle, first + alpha * (second - first), atol=1e-5, rtol=0)  # alpha = offset / gap
    assert torch.all((middle - first) * (second - middle) > 0)  # the middle lies strictly between
    gap = (second - first).abs().round().long()
    on_coarse = d.volume == 1
    assert torch.all(gap[on_coarse] == 2) and torch.all(alpha[on_coarse] == 0.5)  # anisotropic: the neighbours
    assert torch.all(torch.maximum(first, second) <= torch.where(on_coarse, 11, 29))
    fine_gaps = gap[~on_coarse]
    assert set(fine_gaps.tolist()) == {2, 3, 4, 5, 6}
    # the distribution of gaps is GapDataset's: uniform in [2, min(6, n - 1 - first)] for each start slice
    expected = np.zeros(7)
    starts = d.first[~on_coarse].numpy()
    for start in starts:
        high = min(6, 29 - start)
        expected[2:high + 1] += 1.0 / (high - 1)
    observed = np.bincount(fine_gaps.numpy(), minlength=7)
    np.testing.assert_allclose(observed[2:] / len(starts), expected[2:] / len(starts), atol=0.015)
    offsets = d.offset[~on_coarse][d.gap[~on_coarse] == 6]
    np.testing.assert_allclose(np.bincount(offsets.numpy(), minlength=6)[1:] / len(offsets), 0.2, atol=0.03)
    # start slices uniformly over the items; the number of each start follows the items
    assert torch.equal(d.first, sampler.item_first[items])


def test_augmentation_frequencies_and_ranges():
    aug = Augmentation(noise_std_max=0.2)
    sampler = DeviceGapSampler([_ramp()], 16, augmentation=aug, seed=0, thick_slice_probability=0.5)
    d = sampler.draw(torch.zeros(40000, dtype=torch.int64) + 5, sampler.generator(2))
    for flags, share in ((d.flip, 0.5), (d.swap, 0.5), (d.change, aug.intensity_probability), (d.thick, 0.5),
                         ((d.noise.abs().amax((1, 2, 3)) > 0), aug.noise_probability)):
        assert float(flags.float().mean()) == pytest.approx(share, abs=0.015)
    np.testing.assert_allclose(np.bincount(d.rotation.numpy(), minlength=4) / 40000, 0.25, atol=0.01)
    assert aug.gamma_range[0] <= float(d.gamma.min()) and float(d.gamma.max()) <= aug.gamma_range[1]
    assert aug.contrast_range[0] <= float(d.contrast.min()) and float(d.contrast.max()) <= aug.contrast_range[1]
    assert aug.brightness_range[0] <= float(d.brightness.min()) <= float(d.brightness.max()) <= aug.brightness_range[1]
    assert float(d.noise.std((2, 3)).max()) < 0.2 * 1.3
    assert all(bool(t.le(q).all() and t.ge(0).all()) for t, q in ((d.top, 4), (d.left, 4)))  # 20 - 16
    assert set(d.top.tolist()) == set(d.left.tolist()) == {0, 1, 2, 3, 4}


def test_noise_and_thick_slices_touch_only_the_endpoints():
    alternating = _volume(np.repeat((np.arange(30) % 2).astype(np.float32)[:, None, None], 20, 1).repeat(20, 2))
    coarse = _volume(alternating.slices[:10].copy(), spacing=(1.0, 1.0, 4.0), name="coarse")
    none = Augmentation(rotate=False, flip=False, intensity_probability=0.0)
    thick = DeviceGapSampler([alternating, coarse], 12, augmentation=none, thick_slice_probability=0.5)
    items = torch.arange(len(thick)).repeat(200)
    d = thick.draw(items, thick.generator(0))
    patches, _ = thick.render(d)
    middle_values = patches[:, 1].flatten(1)
    assert torch.all((middle_values == 0) | (middle_values == 1))  # the middle stays sharp
    blurred = ~((patches[:, 0] == 0) | (patches[:, 0] == 1)).all(2).all(1)
    assert torch.equal(blurred, d.thick)  # endpoints blurred exactly when drawn so
    assert not bool(d.thick[d.volume == 1].any())  # anisotropic stacks never
    assert float(d.thick[d.volume == 0].float().mean()) == pytest.approx(0.5, abs=0.03)
    noise_only = Augmentation(rotate=False, flip=False, intensity_probability=0.0, noise_std_max=0.2,
                              noise_probability=1.0)
    noisy = DeviceGapSampler([_ramp()], 12, augmentation=noise_only)
    patches, _ = noisy.sample(torch.arange(len(noisy)), noisy.generator(0))
    assert float(patches[:, 1].std((1, 2)).max()) == 0.0
    assert float(patches[:, 0].std((1, 2)).min()) > 0 and float(patches[:, 2].std((1, 2)).min()) > 0
    # thick-slice samples: the noise is on the fine slices before the blur; the endpoints carry it blurred
    # (smaller), the middle keeps its own share
    both = DeviceGapSampler([_ramp(n=60)], 16, augmentation=noise_only, thick_slice_probability=0.5)
    d = both.draw(torch.arange(len(both)).repeat(20), both.generator(1))
    patches, _ = both.render(d)
    spread = patches.std((2, 3)) / both.storage.new_tensor(1.0)
    sigma = d.noise.std((1, 2, 3))
    assert torch.equal(spread[:, 1] > 0, d.thick)
    ratio = spread[:, 0] / sigma
    assert float(ratio[~d.thick].mean()) == pytest.approx(1.0, abs=0.05)
    assert float(ratio[d.thick].max()) < 0.75  # averaged over about FWHM = gap slices


def test_blurred_copies_equal_blur_slices_and_storage_dtype():
    slices = np.random.default_rng(1).random((11, 5, 7)).astype(np.float32)
    for fwhm in (2, 3, 6):
        np.testing.assert_allclose(blur_slices_torch(torch.from_numpy(slices), fwhm).numpy(),
                                   blur_slices(slices, fwhm), atol=1e-6)
    flat = _volume(np.full((11, 16, 17), 0.25, np.float32), name="flat")
    sampler = DeviceGapSampler([flat, _ramp(n=12)], 4, max_gap=4, thick_slice_probability=1.0,
                               storage_dtype=torch.float16)
    assert sampler.storage.dtype == torch.float16
    # a sharp copy of each volume and, for each fine volume, one blurred copy per gap 2..4
    assert sampler.storage.numel() == 4 * (11 * 16 * 17 + 12 * 400)
    assert sampler.nbytes == 2 * sampler.storage.numel()


def test_epochs_are_reproducible_and_differ():
    sampler = DeviceGapSampler([_ramp()], 12, augmentation=Augmentation(noise_std_max=0.1), seed=7,
                               thick_slice_probability=0.5)
    items = torch.arange(len(sampler))
    a = sampler.sample(items, sampler.generator(3))
    b = sampler.sample(items, sampler.generator(3))
    c = sampler.sample(items, sampler.generator(4))
    r = sampler.sample(items, sampler.generator(3, rank=1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], r[0])


def test_trainer_with_data_on_device_resumes_exactly_and_refuses_asi(tmp_path):
    rng = np.random.default_rng(0)
    volume = TrainingVolume.from_array(rng.random((20, 24, 24)).astype(np.float32), (1.0, 1.0, 1.0), axis=2,
                                       name="noise", normalization=IntensityNormalization(clip=False))
    common = dict(validation_volumes=[volume], model_type="pair-unet", steps_per_epoch=2, batch_size=3,
                  patch_size=16, synthesis_loss="mse", device="cpu", data_on_device=True, noise_std=0.05,
                  thick_slice_probability=0.5, seed=2)
    straight = Trainer(TrainingConfig([volume], output=tmp_path / "a.pt", epochs=2, **common)).run()
    Trainer(TrainingConfig([volume], output=tmp_path / "b.pt", epochs=1, **common)).run()
    resumed = Trainer(TrainingConfig([volume], output=tmp_path / "b.pt", epochs=2, resume=True, **common)).run()
    assert straight.status == resumed.status == "finished" and resumed.global_step == 4
    sa, sb = (load_checkpoint(p).model.state_dict() for p in (straight.output, resumed.output))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert load_checkpoint(straight.output).training["settings"]["data_on_device"] is True
    assert "--data-on-device" in TrainingConfig([volume], output="x.pt", data_on_device=True).to_cli_args()
    with pytest.raises(InputError, match="does not apply to model type 'asi'"):
        Trainer(TrainingConfig([volume], output=tmp_path / "c.pt", data_on_device=True, patch_size=16, device="cpu"))


def test_float16_storage_gives_the_float32_batch_to_float16_precision():
    volumes = _mixed_volumes(long=True)
    aug = Augmentation(noise_std_max=0.1)
    options = dict(max_gap=5, augmentation=aug, seed=2, thick_slice_probability=0.5, bspline_anchor=True,
                   slice_profile=True)
    full = DeviceGapSampler(volumes, 12, **options)
    half = DeviceGapSampler(volumes, 12, storage_dtype=torch.float16, **options)
    assert half.storage.dtype == torch.float16 and half.nbytes * 2 == full.nbytes
    # with the slice profile the thick inputs are blurred when drawn: only the sharp slices are stored
    assert full.storage.numel() == sum(v.slices.size for v in volumes)
    draws = full.draw(torch.arange(len(full)).repeat(4), full.generator(0))
    (a, alpha_a, ratio_a), (b, alpha_b, ratio_b) = full.render(draws), half.render(draws)
    assert torch.equal(alpha_a, alpha_b) and torch.equal(ratio_a.nan_to_num(-1), ratio_b.nan_to_num(-1))
    # float16 keeps 11 significant bits: 2.4e-4 of a value below 1, a little more after gamma and contrast
    error = (a - b).abs().flatten(2).amax(2)
    assert float(error.max()) < 1e-3 and float(error.max()) > 0
    assert float(error[:, 3].max()) < 1e-3  # the anchor too


def test_trainer_draws_the_default_models_inputs_on_the_device_and_resumes_exactly(tmp_path):
    from SemanticInterpolationLib.models.checkpoint import save_checkpoint
    from SemanticInterpolationLib.models.pair_unet import PairUNet, PairUNetConfig

    rng = np.random.default_rng(1)
    smooth = np.cumsum(rng.random((24, 24, 24)), axis=0).astype(np.float32)
    unclipped = IntensityNormalization(clip=False)
    fine = TrainingVolume.from_array(smooth, (1.0, 1.0, 1.0), axis=2, name="fine", normalization=unclipped)
    coarse = TrainingVolume.from_array(smooth[::4], (1.0, 1.0, 4.0), axis=2, name="coarse", normalization=unclipped)
    net = PairUNet(PairUNetConfig(widths=(4, 8), anchor_input=True, thickness_input=True))
    net.reset_parameters(generator=torch.Generator().manual_seed(0))
    init = tmp_path / "init.pt"
    save_checkpoint(init, net, normalization=unclipped, in_plane_spacing_mm=(1.0, 1.0))
    common = dict(validation_volumes=[fine], model_type="pair-unet", init=init, steps_per_epoch=2, batch_size=3,
                  patch_size=16, synthesis_loss="l1", device="cpu", data_on_device=True, noise_std=0.06,
                  thick_slice_probability=0.5, seed=3, validation_triplets=3)
    trainer = Trainer(TrainingConfig([fine, coarse], output=tmp_path / "probe.pt", **common))
    sampler = trainer.device_sampler
    assert sampler.with_anchor and sampler.slice_profile and sampler.thick_slice_probability == 0.5
    order = data_module.TripletSampler(trainer.dataset, samples_per_epoch=30, seed=3)
    patches, alpha, ratio = next(iter(sampler.batches(order, 30)))
    assert patches.shape == (30, 4, 16, 16) and alpha.shape == ratio.shape == (30,)
    trainer.close()
    straight = Trainer(TrainingConfig([fine, coarse], output=tmp_path / "a.pt", epochs=2, **common)).run()
    Trainer(TrainingConfig([fine, coarse], output=tmp_path / "b.pt", epochs=1, **common)).run()
    resumed = Trainer(TrainingConfig([fine, coarse], output=tmp_path / "b.pt", epochs=2, resume=True,
                                     **dict(common, init=None))).run()
    assert straight.status == resumed.status == "finished" and resumed.global_step == 4
    a, b = load_checkpoint(straight.output), load_checkpoint(resumed.output)
    assert a.config.anchor_input and a.config.thickness_input
    assert all(torch.equal(a.model.state_dict()[k], b.model.state_dict()[k]) for k in a.model.state_dict())
    assert any(not torch.equal(a.model.state_dict()[k], net.state_dict()[k]) for k in net.state_dict())  # trained
    assert a.training["last_epoch"]["val_syn_psnr"] is not None


def test_packed_volumes_round_trip_without_simpleitk(tmp_path):
    rng = np.random.default_rng(3)
    array = rng.random((17, 18, 19)).astype(np.float32)
    views = [TrainingVolume.from_array(array, (1.0, 1.0, 1.0), axis=a, name=f"iso axis{a}") for a in (0, 1, 2)]
    coarse = _volume(rng.random((5, 16, 16)) * 1.4, spacing=(0.7, 0.7, 5.0), name="coarse")
    coarse.thick_slices = coarse.slices * 0.5
    summary = save_packed_volumes(tmp_path / "pack.npz", views + [coarse], [views[1]], metadata={"recipe": {"a": 1}})
    assert summary["views"] == 5 and summary["arrays"] == 3  # the three views of one volume are stored once
    training, validation, meta = load_packed_volumes(tmp_path / "pack.npz")
    assert meta == {"recipe": {"a": 1}} and [v.name for v in validation] == ["iso axis1"]
    for original, loaded in zip(views + [coarse], training):
        assert loaded.name == original.name and loaded.slices.dtype == np.float32
        assert loaded.slices.shape == original.slices.shape
        assert np.abs(loaded.slices - original.slices).max() < 1e-3  # float16
        assert (loaded.in_plane_spacing_mm, loaded.slice_axis, loaded.slice_spacing_mm, loaded.original_size) == \
            (tuple(original.in_plane_spacing_mm), original.slice_axis, original.slice_spacing_mm,
             tuple(original.original_size))
    np.testing.assert_allclose(training[-1].thick_slices, coarse.thick_slices, atol=1e-3)
    with pytest.raises(InputError, match="does not exist"):
        load_packed_volumes(tmp_path / "missing.npz")
    # the loader and the trainer's device path never import SimpleITK
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "SimpleITK.py").write_text("raise ImportError('SimpleITK is blocked in this test')\n")
    code = ("import sys; from SemanticInterpolationLib.training.device_sampler import load_packed_volumes; "
            "from SemanticInterpolationLib.training import Trainer, TrainingConfig; "
            f"t, v, m = load_packed_volumes({str(tmp_path / 'pack.npz')!r}); "
            "assert 'SimpleITK' not in sys.modules or sys.modules['SimpleITK'] is None; print(len(t))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": f"{blocker}:{LIB_PARENT}", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "4"

"""Two pair U-Nets chosen by the told slice profile (model type ``profile-routed``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import T1_2MM, file_digest
from SemanticInterpolationLib import ASIEngine, load_checkpoint, save_checkpoint
from SemanticInterpolationLib.errors import CheckpointError
from SemanticInterpolationLib.models.normalization import IntensityNormalization
from SemanticInterpolationLib.models.pair_unet import PairUNet, PairUNetConfig
from SemanticInterpolationLib.models.profile_routed import ProfileRoutedConfig, ProfileRoutedPairUNet
from SemanticInterpolationLib.training import Trainer, TrainingConfig
from SemanticInterpolationLib.training.adaptation import adapt_engine

SCRIPTS = Path(__file__).resolve().parents[2] / "Resources" / "Scripts"
NORM = IntensityNormalization(clip=False)


def _profile_net(widths: tuple[int, ...], seed: int) -> PairUNet:
    """A small pair U-Net with anchor and profile inputs whose answer depends on everything it is given."""
    torch.manual_seed(seed)
    net = PairUNet(PairUNetConfig(widths=widths, anchor_input=True, thickness_input=True, name=f"net{seed}"))
    with torch.no_grad():
        net.head.weight.normal_(0.0, 0.05)
    return net.eval()


@pytest.fixture
def members() -> tuple[PairUNet, PairUNet]:
    return _profile_net((4, 8, 16), 0), _profile_net((6, 12, 24), 1)  # same padding multiple as alone


def _inputs(n: int = 3, size: int = 16) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(5)
    return tuple(torch.rand(n, 1, size, size, generator=g) for _ in range(3))


def test_each_slice_is_answered_by_the_network_its_told_profile_routes_to(members):
    main, thick = members
    routed = ProfileRoutedPairUNet.from_networks(main, thick, thick_from_ratio=0.75).eval()
    first, second, anchor = _inputs()
    with torch.no_grad():
        for told, network in ((1.0, thick), (0.75, thick), (0.5, main), (0.2, main), (None, main),
                              (float("nan"), main)):
            expected = network(first, second, 0.5, anchor, told)
            assert torch.equal(routed.synthesize(first, second, 0.5, anchor, told), expected), told
        mixed = torch.tensor([1.0, 0.25, float("nan")])  # a training batch of all kinds
        out = routed(first, second, 0.5, anchor, mixed)
        assert torch.equal(out[0], thick(first, second, 0.5, anchor, mixed)[0])
        assert torch.equal(out[1:], main(first, second, 0.5, anchor, mixed)[1:])
    assert routed.profile_estimator is routed.main and routed.config.size_multiple == 4
    assert routed.needs_anchor and routed.takes_thickness and routed.supports_test_time_augmentation


def test_a_routed_engine_upsamples_as_its_networks_and_estimates_with_the_main_one(members):
    main, thick = members
    routed = ProfileRoutedPairUNet.from_networks(main, thick)
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(T1_2MM))).astype(np.float32)  # [25, 41, 33]
    engines = {name: ASIEngine(net, "cpu", normalization=NORM, test_time_augmentation="pair-flip")
               for name, net in (("routed", routed), ("main", main), ("thick", thick))}
    for ratio, alone in ((1.0, "thick"), (0.5, "main"), (None, "main")):
        np.testing.assert_array_equal(engines["routed"].upsample(volume, 3, slice_thickness_ratio=ratio),
                                      engines[alone].upsample(volume, 3, slice_thickness_ratio=ratio))
    estimate = engines["routed"].estimate_slice_profile(volume, 2)
    assert estimate == engines["main"].estimate_slice_profile(volume, 2)
    assert estimate != engines["thick"].estimate_slice_profile(volume, 2)  # the thick network was not asked


def test_checkpoint_round_trip_and_bad_configurations_are_one_line_errors(members, tmp_path):
    routed = ProfileRoutedPairUNet.from_networks(*members, thick_from_ratio=0.6)
    loaded = load_checkpoint(save_checkpoint(tmp_path / "routed.pt", routed, normalization=NORM))
    assert loaded.model_type == "profile-routed" and loaded.config == routed.config
    assert loaded.config.thick_from_ratio == 0.6 and loaded.config.thick.widths == (6, 12, 24)
    for key, tensor in routed.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], tensor)
    good = routed.config.to_dict()
    untold = dict(good, thick=dict(good["thick"], thickness_input=False))
    for data, message in ((untold, "must take the slice profile"), (dict(good, thick_from_ratio=0), "thick_from_ratio"),
                          (dict(good, extra=1), "unknown fields"), ({"main": good["main"]}, "lacks its thick")):
        with pytest.raises(CheckpointError, match=message) as info:
            ProfileRoutedConfig.from_dict(data)
        assert "\n" not in str(info.value)


def _run_script(*args: str):
    sys.path.insert(0, str(SCRIPTS))
    try:
        import route_profile_networks
    finally:
        sys.path.remove(str(SCRIPTS))
    return route_profile_networks.main(list(args))


def test_the_join_script_writes_a_verified_routed_checkpoint_and_refuses_bad_inputs(members, tmp_path, capsys):
    main_path = save_checkpoint(tmp_path / "main.pt", members[0], normalization=NORM, training={"steps": 3})
    thick_path = save_checkpoint(tmp_path / "thick.pt", members[1], normalization=NORM)
    digests = file_digest(main_path), file_digest(thick_path)
    out = tmp_path / "routed.pt"
    assert _run_script(str(out), str(main_path), str(thick_path), "--thick-from", "0.8", "--tta", "pair-flip") == 0
    routed = load_checkpoint(out)
    assert routed.model_type == "profile-routed" and routed.config.thick_from_ratio == 0.8
    assert routed.metadata["inference"]["test_time_augmentation"] == "pair-flip"
    assert routed.training["steps"] == 3 and set(routed.training["routed_from"]) == {"main", "thick"}
    assert (file_digest(main_path), file_digest(thick_path)) == digests  # inputs untouched
    untold = save_checkpoint(tmp_path / "untold.pt", PairUNet(PairUNetConfig(widths=(4, 8))), normalization=NORM)
    other_norm = save_checkpoint(tmp_path / "norm.pt", members[1], normalization=IntensityNormalization())
    for args, message in (((str(untold), str(thick_path)), "does not take the slice profile"),
                          ((str(main_path), str(other_norm)), "normalise intensities differently")):
        target = tmp_path / "bad.pt"
        assert _run_script(str(target), *args) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and not target.exists()
    assert _run_script(str(main_path), str(main_path), str(thick_path)) == 2
    assert "is one of the inputs" in capsys.readouterr().err and file_digest(main_path) == digests[0]


def test_training_a_routed_model_updates_each_network_from_its_own_samples(members, tmp_path):
    routed = ProfileRoutedPairUNet.from_networks(*members)
    init = save_checkpoint(tmp_path / "init.pt", routed, normalization=NORM)
    before = {k: v.clone() for k, v in routed.state_dict().items()}
    for probability, moved in ((0.0, {"main"}), (1.0, {"main", "thick"})):
        config = TrainingConfig([str(T1_2MM)], output=tmp_path / f"run{probability}.pt", init=str(init), epochs=1,
                                steps_per_epoch=2, batch_size=8, patch_size=24, device="cpu", seed=0,
                                validation_volumes=[str(T1_2MM)], validation_triplets=3,
                                thick_slice_probability=probability)
        result = Trainer(config).run()
        trained = load_checkpoint(result.output)
        assert trained.model_type == "profile-routed" and result.history[0]["val_syn_psnr"] > 0
        # no metric named: both networks count (the caller's settings are left as given)
        assert trained.training["settings"]["best_metric"] == "val_thin_thick_psnr" and config.best_metric == "auto"
        assert result.history[0]["val_thin_thick_psnr"] is not None
        changed = {role for role in ("main", "thick")
                   if any(not torch.equal(v, before[k]) for k, v in trained.model.state_dict().items()
                          if k.startswith(role + "."))}
        # no thick samples: the thick network gets no gradient; thick samples (half told ratio 1): both learn
        assert changed == moved, probability


def test_adaptation_fine_tunes_the_network_that_will_upsample_the_scan(members):
    routed = ProfileRoutedPairUNet.from_networks(*members)
    engine = ASIEngine(routed, "cpu", normalization=NORM)
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(T1_2MM))).astype(np.float32)
    for ratio, adapted, kept in ((1.0, "thick", "main"), (None, "main", "thick")):
        before = {k: v.clone() for k, v in engine.model.state_dict().items()}
        report = adapt_engine(engine, volume, seconds=600, max_steps=4, learning_rate=1e-3, check_every=1,
                              min_gain_db=-100.0, thickness_ratio=ratio)  # keep whatever it learned
        state = engine.model.state_dict()
        assert report.accepted and report.settings["network"] == getattr(routed, adapted).config.name
        assert any(not torch.equal(state[k], before[k]) for k in state if k.startswith(adapted + "."))
        assert all(torch.equal(state[k], before[k]) for k in state if k.startswith(kept + "."))
        engine.restore()
        assert all(torch.equal(engine.model.state_dict()[k], v) for k, v in before.items())


def test_other_types_are_selected_by_the_thin_slice_score_when_no_metric_is_named(tmp_path):
    config = TrainingConfig([str(T1_2MM)], output=tmp_path / "pair.pt", model_type="pair-unet", epochs=1,
                            steps_per_epoch=1, batch_size=2, patch_size=24, device="cpu",
                            validation_volumes=[str(T1_2MM)], validation_triplets=3)
    result = Trainer(config).run()
    assert load_checkpoint(result.output).training["settings"]["best_metric"] == "val_syn_psnr"


def test_the_thin_and_thick_selection_metric_is_refused_for_networks_without_a_thick_score(tmp_path):
    from SemanticInterpolationLib import InputError

    config = TrainingConfig([str(T1_2MM)], output=tmp_path / "asi.pt", model_type="asi", epochs=1, steps_per_epoch=1,
                            batch_size=2, patch_size=24, device="cpu", best_metric="val_thin_thick_psnr",
                            validation_volumes=[str(T1_2MM)])
    with pytest.raises(InputError, match="val_thin_thick_psnr scores pair networks") as info:
        Trainer(config).run()
    assert "\n" not in str(info.value) and not (tmp_path / "asi.pt").exists()


def test_the_thick_selection_metric_needs_a_slice_profile_network(tmp_path):
    from SemanticInterpolationLib import InputError

    untold = save_checkpoint(tmp_path / "untold.pt", PairUNet(PairUNetConfig(widths=(4, 8))), normalization=NORM)
    config = TrainingConfig([str(T1_2MM)], output=tmp_path / "run.pt", init=str(untold), epochs=1, steps_per_epoch=1,
                            batch_size=2, patch_size=24, device="cpu", best_metric="val_thick_syn_psnr",
                            validation_volumes=[str(T1_2MM)])
    with pytest.raises(InputError, match="val_thick_syn_psnr scores pair networks with a slice-profile input"):
        Trainer(config).run()
    told = save_checkpoint(tmp_path / "told.pt", _profile_net((4, 8), 3), normalization=NORM)
    config = TrainingConfig([str(T1_2MM)], output=tmp_path / "run.pt", init=str(told), epochs=2, steps_per_epoch=1,
                            batch_size=2, patch_size=24, device="cpu", best_metric="val_thick_syn_psnr",
                            validation_volumes=[str(T1_2MM)], validation_triplets=3, thick_slice_probability=1.0)
    result = Trainer(config).run()
    best = max(result.history, key=lambda r: r["val_thick_syn_psnr"])
    assert result.history[-1]["best_epoch"] == best["epoch"]  # chosen on the thick score


def test_an_estimator_network_makes_the_estimate_and_answers_no_slice(members, tmp_path):
    main, thick = members
    estimator = _profile_net((4, 8, 16), 7)
    routed = ProfileRoutedPairUNet.from_networks(main, thick, estimator=estimator)
    assert routed.profile_estimator is routed.estimator and "estimate by" in routed.describe_architecture()
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(T1_2MM))).astype(np.float32)
    engines = {name: ASIEngine(net, "cpu", normalization=NORM, test_time_augmentation="pair-flip")
               for name, net in (("routed", routed), ("main", main), ("estimator", estimator))}
    estimate = engines["routed"].estimate_slice_profile(volume, 2)
    assert estimate == engines["estimator"].estimate_slice_profile(volume, 2)
    assert estimate != engines["main"].estimate_slice_profile(volume, 2)
    for ratio in (0.5, None):  # the main network still answers thin slices and an unknown profile
        np.testing.assert_array_equal(engines["routed"].upsample(volume, 2, slice_thickness_ratio=ratio),
                                      engines["main"].upsample(volume, 2, slice_thickness_ratio=ratio))
    loaded = load_checkpoint(save_checkpoint(tmp_path / "three.pt", routed, normalization=NORM))
    assert loaded.config == routed.config and loaded.config.estimator.name == "net7"
    assert torch.equal(loaded.model.estimator.head.weight, estimator.head.weight)
    # a two-network model keeps its configuration's form (checkpoints written before the estimator load alike)
    assert "estimator" not in ProfileRoutedPairUNet.from_networks(main, thick).config.to_dict()
    bad = dict(routed.config.to_dict(), estimator=dict(routed.config.estimator.to_dict(), thickness_input=False))
    with pytest.raises(CheckpointError, match="estimator network must take the slice profile"):
        ProfileRoutedConfig.from_dict(bad)


def test_training_a_routed_model_never_moves_its_estimator(members, tmp_path):
    routed = ProfileRoutedPairUNet.from_networks(*members, estimator=_profile_net((4, 8, 16), 7))
    init = save_checkpoint(tmp_path / "init.pt", routed, normalization=NORM)
    config = TrainingConfig([str(T1_2MM)], output=tmp_path / "run.pt", init=str(init), epochs=1, steps_per_epoch=2,
                            batch_size=8, patch_size=24, device="cpu", seed=0, validation_volumes=[str(T1_2MM)],
                            validation_triplets=3, thick_slice_probability=0.5)
    trained = load_checkpoint(Trainer(config).run().output).model.state_dict()
    before = routed.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in before.items() if k.startswith("estimator."))
    assert any(not torch.equal(trained[k], v) for k, v in before.items() if k.startswith("main."))


def test_the_join_script_takes_an_estimator(members, tmp_path, capsys):
    paths = [save_checkpoint(tmp_path / f"{role}.pt", net, normalization=NORM)
             for role, net in (("main", members[0]), ("thick", members[1]), ("estimator", _profile_net((4, 8, 16), 7)))]
    out = tmp_path / "routed.pt"
    assert _run_script(str(out), str(paths[0]), str(paths[1]), "--estimator", str(paths[2])) == 0
    routed = load_checkpoint(out)
    assert routed.config.estimator.name == "net7" and set(routed.training["routed_from"]) == {"main", "thick",
                                                                                             "estimator"}
    other_norm = save_checkpoint(tmp_path / "norm.pt", members[0], normalization=IntensityNormalization())
    assert _run_script(str(tmp_path / "bad.pt"), str(paths[0]), str(paths[1]), "--estimator", str(other_norm)) == 2
    assert "normalise intensities differently" in capsys.readouterr().err and not (tmp_path / "bad.pt").exists()

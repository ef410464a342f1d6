"""HRINet (model type hrinet): multi-scale mixing, the critics' losses, the alternating training, checkpoints,
the engine and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import OBLIQUE_ANISO, T1_2MM
from SemanticInterpolationLib import ASIEngine, CheckpointError, InputError, load_checkpoint, save_checkpoint
from SemanticInterpolationLib.models.checkpoint import CHECKPOINT_FORMAT, checkpoint_from_payload
from SemanticInterpolationLib.models.hrinet import HRINet, HRINetConfig, mix_latents
from SemanticInterpolationLib.models.hrinet_critics import (AlphaCritic, PatchCritic, adversarial_constraint_loss,
                                                            alpha_critic_loss, gradient_penalty, wgan_critic_loss,
                                                            wgan_generator_loss)
from SemanticInterpolationLib.models.normalization import IntensityNormalization
from SemanticInterpolationLib.models.registry import get_model_type
from SemanticInterpolationLib.training import Trainer, TrainingConfig
from SemanticInterpolationLib.training import hrinet as hrinet_training
from SemanticInterpolationLib.training.data import TrainingVolume
from SemanticInterpolationLib.training.hrinet import HRINetOptions, PairSequenceDataset

#: a network small enough for tests: 3 levels (size multiple 4)
TINY = {"widths": [8, 16, 16]}


def real_slices(n: int = 4, size: int = 32) -> torch.Tensor:
    """``n`` consecutive real MRI slices ``[n, 1, size, size]`` in [0, 1]."""
    volume = TrainingVolume.load(str(T1_2MM))
    h, w = volume.slice_shape
    return torch.from_numpy(volume.slices[10:10 + n, :size, :size].copy()).unsqueeze(1)


def tiny_config(tmp_path, name: str = "h.pt", **changes) -> TrainingConfig:
    settings = dict(training_volumes=[str(T1_2MM)], output=tmp_path / name, model_type="hrinet", epochs=1,
                    steps_per_epoch=3, batch_size=2, patch_size=24, learning_rate=1e-3, device="cpu", seed=3,
                    model_options=dict(TINY, sequence_length=5))
    settings.update(changes)
    return TrainingConfig(**settings)


# ----------------------------------------------------------------------------- the network
def test_alpha_zero_and_one_decode_the_endpoints_reconstructions_exactly():
    torch.manual_seed(0)
    model = HRINet().eval()
    x = real_slices(2)
    with torch.no_grad():
        first, second = model.encode(x[:1]), model.encode(x[1:])
        assert torch.equal(model.synthesize(first, second, 0.0), model.reconstruct(first))
        assert torch.equal(model.synthesize(first, second, 1.0), model.reconstruct(second))
        both = model.synthesize([torch.cat([a, a]) for a in first], [torch.cat([b, b]) for b in second],
                                torch.tensor([0.0, 1.0]))
        # (same batch: the convolutions are not bit-identical across batch sizes)
        assert torch.equal(both, model.reconstruct([torch.cat([a, b]) for a, b in zip(first, second)]))
        assert torch.equal(mix_latents(first, second, 0.0)[0], first[0])
        assert torch.equal(mix_latents(first, second, 1.0)[-1], second[-1])
        middle = model.synthesize(first, second, 0.5)
        assert not torch.allclose(middle, model.reconstruct(first)) and not torch.allclose(middle, model.reconstruct(second))


def test_maps_are_mixed_at_the_configured_levels_only():
    default = HRINet(HRINetConfig(widths=(4, 8, 8, 8, 8)))
    assert default.levels == (2, 3, 4)  # the three coarsest, as in the thesis
    z = default.encode(torch.rand(1, 1, 32, 32))
    assert [tuple(m.shape[-2:]) for m in z] == [(8, 8), (4, 4), (2, 2)]
    # a finer choice: levels 1 and 4 of five; the decoder takes a mixed map exactly at those levels
    config = HRINetConfig(widths=(4, 8, 12, 16, 20), mixed_levels=(4, 1), mix_channels=(3, 5))
    model = HRINet(config).eval()
    assert model.levels == (1, 4)
    z1, z2 = model.encode(torch.rand(1, 1, 32, 32)), model.encode(torch.rand(1, 1, 32, 32))
    assert [tuple(m.shape[1:]) for m in z1] == [(3, 16, 16), (5, 2, 2)]
    inputs = [model.decoder[level][0].in_channels for level in range(5)]
    assert inputs == [8, 12 + 3, 16, 20, 5]  # from below (+ mixed map): levels 1 and 4 only
    # each mixed level is a linear mix with alpha (eq. 3-1) and every one of them reaches the output
    with torch.no_grad():
        for alpha in (0.25, 0.7):
            expected = model.decode([(1 - alpha) * a + alpha * b for a, b in zip(z1, z2)])
            torch.testing.assert_close(model.synthesize(z1, z2, alpha), expected, rtol=0, atol=1e-6)
        base = model.decode(z1)
        for level in range(2):
            swapped = [b if i == level else a for i, (a, b) in enumerate(zip(z1, z2))]
            assert not torch.allclose(model.decode(swapped), base)
    # the encoder's unmixed levels pass nothing: changing level-2 features cannot change the decoding
    features = model.encoder_features(torch.rand(1, 1, 32, 32))
    assert len(features) == 5 and len(model.encode(torch.rand(1, 1, 32, 32))) == 2


@pytest.mark.parametrize("data, message", [
    ({"widths": [8, 16, 16], "mixed_levels": [0, 1]}, "must include the coarsest level 2"),
    ({"widths": [8, 16], "mixed_levels": [1, 1]}, "must not repeat"),
    ({"widths": [8, 16], "mixed_levels": [1, 5]}, "mixed_levels must be whole numbers from 0 to 1"),
    ({"widths": [8, 16, 16], "mix_channels": [4]}, "one number per mixed level"),
    ({"widths": [8, 0]}, "widths must be whole numbers"),
    ({"widths": "8,16"}, "widths must be a list"),
    ({"widths": [8] * 12}, "1 to 8 levels"),
    ({"negative_slope": 2.0}, "negative_slope"),
    ({"layers": 3}, "unknown fields"),
    ([1, 2], "must be a mapping"),
])
def test_bad_hrinet_configuration_is_a_checkpoint_error(data, message):
    with pytest.raises(CheckpointError, match=message):
        HRINetConfig.from_dict(data)
    if isinstance(data, dict):
        payload = {"format": CHECKPOINT_FORMAT, "format_version": 1, "model_type": "hrinet",
                   "architecture": data, "state_dict": {}, "metadata": {}}
        with pytest.raises(CheckpointError, match="hrinet configuration"):
            checkpoint_from_payload(payload)


def test_checkpoint_round_trip_keeps_the_type_and_the_configuration(tmp_path):
    config = HRINetConfig(widths=(8, 16, 24, 24), mixed_levels=(1, 2, 3), mix_channels=(4, 6, 8), name="try")
    torch.manual_seed(1)
    model = HRINet(config)
    path = save_checkpoint(tmp_path / "h.pt", model, normalization=IntensityNormalization(clip=False))
    loaded = load_checkpoint(path)
    assert loaded.model_type == "hrinet" and loaded.config == config
    assert "mixed at 1/2, 1/4, 1/8" in loaded.summary()
    x = real_slices(1)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model.eval()(x))
    assert HRINetConfig.from_dict(config.to_dict()) == config
    assert get_model_type("hrinet").build().config == HRINetConfig.small()
    assert HRINetConfig.named("thesis").levels == (4, 5, 6) and HRINetConfig.thesis().size_multiple == 64


# ----------------------------------------------------------------------------- critics
class _MeanCritic(torch.nn.Module):
    """A real module predicting the mean intensity of each slice (a critic with a known answer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))


def test_alpha_critic_loss_is_minimal_when_it_predicts_the_true_alpha():
    critic = _MeanCritic()
    alpha = torch.tensor([0.1, 0.3, 0.45])
    zeros = torch.zeros(3, 1, 8, 8)
    losses = {}
    for offset in (-0.2, -0.05, 0.0, 0.05, 0.2):
        interpolations = (alpha + offset).view(-1, 1, 1, 1).expand(3, 1, 8, 8)  # the critic predicts alpha + offset
        losses[offset] = float(alpha_critic_loss(critic, interpolations, alpha, zeros, zeros, gamma=0.2))
    assert losses[0.0] == pytest.approx(0.0, abs=1e-12)
    assert min(losses, key=losses.get) == 0.0
    assert losses[0.2] == pytest.approx(0.04) and losses[-0.05] == pytest.approx(0.0025)
    # the gamma term (eq. 3-7): D1 on gamma x + (1 - gamma) reconstruction should say 0
    ones = torch.ones(3, 1, 8, 8)
    exact = alpha.view(-1, 1, 1, 1).expand(3, 1, 8, 8)
    assert float(alpha_critic_loss(critic, exact, alpha, ones, zeros, gamma=0.2)) == pytest.approx(0.04)
    assert float(alpha_critic_loss(critic, exact, alpha, ones, zeros, gamma=0.0)) == pytest.approx(0.0)
    # the generator's constraint (eq. 3-5) is D1's prediction squared
    assert float(adversarial_constraint_loss(critic, exact)) == pytest.approx(float((alpha ** 2).mean()))
    assert AlphaCritic()(torch.rand(2, 1, 32, 32)).shape == (2,)


class _LinearCritic(torch.nn.Module):
    """D(x) = sum(w * x): its gradient is w everywhere, whatever x."""

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full((1, 1, 4, 4), weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight).sum(dim=(1, 2, 3))


@pytest.mark.parametrize("weight, penalty", [(0.25, 0.0), (0.5, 1.0), (1.0, 9.0), (0.0, 1.0)])
def test_wgan_gradient_penalty_on_a_known_case(weight, penalty):
    critic = _LinearCritic(weight)  # ||grad|| = 4 * |weight| over 16 pixels
    real, fake = torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4)
    assert float(gradient_penalty(critic, real, fake).detach()) == pytest.approx(penalty, abs=1e-6)
    expected = float((critic(fake).mean() - critic(real).mean()).detach()) + 10.0 * penalty
    assert float(wgan_critic_loss(critic, real, fake, 10.0).detach()) == pytest.approx(expected, abs=1e-5)
    assert float(wgan_generator_loss(critic, fake).detach()) == pytest.approx(-float(critic(fake).mean().detach()))
    # the penalty trains the critic: its gradient reaches the weights (double backward)
    if penalty and weight:  # (at weight 0 the norm's gradient is 0)
        gradient_penalty(critic, real, fake).backward()
        assert float(critic.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("layers, field", [(1, 16), (2, 34), (3, 70)])
def test_patchgan_receptive_field_is_what_eq_3_2_says(layers, field):
    torch.manual_seed(0)
    critic = PatchCritic(base_width=4, layers=layers)
    assert critic.receptive_field == field
    x = torch.rand(1, 1, 160, 160, requires_grad=True)
    scores = critic.patch_scores(x)
    h, w = scores.shape[-2:]
    scores[0, 0, h // 2, w // 2].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    assert int(rows.max() - rows.min() + 1) == field


# ----------------------------------------------------------------------------- training
def test_alternation_runs_step_one_then_two_and_counts_them(tmp_path, monkeypatch):
    kinds, critic_steps = [], []
    original_kind, original_critic_step = hrinet_training.step_kind, hrinet_training.HRINetTraining._critic_step

    def recording_kind(step):
        kinds.append(original_kind(step))
        return kinds[-1]

    def recording_critic_step(self, optimizer, critic, loss):
        critic_steps.append((len(kinds), type(critic).__name__))
        return original_critic_step(self, optimizer, critic, loss)

    monkeypatch.setattr(hrinet_training, "step_kind", recording_kind)
    monkeypatch.setattr(hrinet_training.HRINetTraining, "_critic_step", recording_critic_step)
    config = tiny_config(tmp_path, epochs=2, steps_per_epoch=3,
                         model_options=dict(TINY, sequence_length=5, critic_updates=2))
    result = Trainer(config).run()
    assert kinds == ["I", "II", "I", "II", "I", "II"]  # Algorithm 1: even steps unsupervised, odd supervised
    # step I trains D1 once and D2 critic_updates times; step II trains no critic
    per_step = {}
    for step, name in critic_steps:
        per_step.setdefault(step, []).append(name)
    assert sorted(per_step) == [1, 3, 5]
    assert all(names == ["AlphaCritic", "PatchCritic", "PatchCritic"] for names in per_step.values())
    assert [(h["hrinet_steps_I"], h["hrinet_steps_II"]) for h in result.history] == [(2, 1), (3, 3)]


def test_gan_start_step_keeps_d2_out_of_the_first_steps(tmp_path, monkeypatch):
    used = []
    original = hrinet_training.wgan_generator_loss
    monkeypatch.setattr(hrinet_training, "wgan_generator_loss", lambda *a: used.append(1) or original(*a))
    Trainer(tiny_config(tmp_path, steps_per_epoch=6,
                        model_options=dict(TINY, sequence_length=5, gan_start_step=3, critic_updates=1))).run()
    assert len(used) == 1  # step I at generator steps 0, 2 (before the start) and 4 (after)


def _steps(procedure, batch, kind: str, n: int) -> list[dict]:
    records = []
    for i in range(n):
        procedure.train_step(procedure.step, batch, procedure.optimizer, 0 if kind == "I" else 1,
                             torch.contiguous_format)
        records.append(procedure.epoch_record())
    return records


def test_a_few_real_mri_steps_lower_each_loss(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(tiny_config(tmp_path, batch_size=4, patch_size=24,
                                  model_options=dict(TINY, sequence_length=5, critic_updates=1)))
    procedure = trainer.procedure
    model = HRINet(trainer.architecture)
    procedure.optimizer = procedure.make_optimizer(model)
    procedure.step = procedure.step_module(model)
    batch = torch.stack([trainer.dataset[i] for i in range(4)])  # real MRI patches: pairs and sequences
    steps_one = _steps(procedure, batch, "I", 15)
    steps_two = _steps(procedure, batch, "II", 15)
    for name, records in (("reconstruction", steps_one), ("d1", steps_one), ("d2", steps_one),
                          ("sequence", steps_two)):
        values = [r[f"train_hrinet_{name}"] for r in records]
        assert np.mean(values[-3:]) < np.mean(values[:3]), (name, values)
    trainer.close()


def test_pair_sequence_dataset_gives_pairs_and_strided_sequences():
    fine = TrainingVolume.from_array(np.arange(20 * 32 * 32, dtype=np.float32).reshape(20, 32, 32) / 20480.0,
                                     (1.0, 1.0, 1.0), name="fine")
    thick = TrainingVolume.from_array(np.random.default_rng(0).random((9, 32, 32), dtype=np.float32),
                                      (1.0, 1.0, 5.0), name="thick")
    from SemanticInterpolationLib.training.data import Augmentation

    data = PairSequenceDataset([fine, thick], 16, sequence_length=4, stride=3, augmentation=Augmentation.none())
    # fine: starts with room for 3 strides of 3; anisotropic: consecutive slices
    assert data.index == [(0, s) for s in range(20 - 9)] + [(1, s) for s in range(9 - 3)]
    item = data[0]
    assert item.shape == (2 + 4, 16, 16)
    slice_index = (item[2:, 0, 0] * 20480.0 / (32 * 32) + 1e-3).floor()  # the value encodes the slice number
    steps = np.diff(slice_index.numpy())
    assert np.all(steps == 3)
    with pytest.raises(InputError, match="sequence length"):
        PairSequenceDataset([thick], 16, sequence_length=12)


def test_critics_live_in_the_training_state_only_and_resume(tmp_path):
    config = tiny_config(tmp_path, validation_volumes=[str(OBLIQUE_ANISO)], epochs=1)
    first = Trainer(config).run()
    best, latest = load_checkpoint(first.best_output), load_checkpoint(first.output)
    assert best.extra_state == {} and not any("critic" in k for k in best.model.state_dict())
    state = latest.extra_state["training_state"]["procedure"]
    assert {"alpha_critic", "patch_critic", "alpha_optimizer", "patch_optimizer"} <= set(state)
    assert all(isinstance(v, torch.Tensor) for v in state["patch_critic"].values())
    raw = torch.load(first.output, weights_only=True)  # plain data only: never runs code on load
    assert "procedure" in raw["extra_state"]["training_state"]
    # resume continues with the same critics: one more epoch, the step counts go on
    resumed = Trainer(tiny_config(tmp_path, validation_volumes=[str(OBLIQUE_ANISO)], epochs=2, resume=True))
    resumed_state = resumed.procedure
    result = resumed.run()
    assert (result.history[-1]["hrinet_steps_I"], result.history[-1]["hrinet_steps_II"]) == (3, 3)
    assert resumed_state.steps_done == {"I": 3, "II": 3}
    after = load_checkpoint(result.output).extra_state["training_state"]["procedure"]
    assert any(not torch.equal(after["alpha_critic"][k], state["alpha_critic"][k]) for k in state["alpha_critic"])
    record = result.history[-1]
    assert record["val_rec_psnr"] > 0 and record["val_syn_psnr"] > 0 and record["val_linear_psnr"] > 0


def test_bad_options_and_mixed_types_are_refused_before_any_work(tmp_path, random_checkpoint):
    with pytest.raises(InputError, match="unknown HRINet option"):
        Trainer(tiny_config(tmp_path, model_options={"lambda": 1}))
    with pytest.raises(InputError, match="sequence_length"):
        Trainer(tiny_config(tmp_path, model_options=dict(TINY, sequence_length=2)))
    with pytest.raises(InputError, match="do not build a network"):
        Trainer(tiny_config(tmp_path, model_options={"widths": [8, 16], "mixed_levels": [0]}))
    with pytest.raises(InputError, match="frozen copy of a pretrained"):
        Trainer(tiny_config(tmp_path, model_options=dict(TINY, content_loss="perceptual")))
    with pytest.raises(InputError, match="too small for the critics"):
        Trainer(tiny_config(tmp_path, patch_size=20))
    with pytest.raises(CheckpointError, match="is a asi model, but model type 'hrinet'"):
        Trainer(tiny_config(tmp_path, init=random_checkpoint))
    with pytest.raises(InputError, match="do not apply to model type 'asi'"):
        Trainer(tiny_config(tmp_path, model_type="asi", model_options={"sequence_length": 5}))
    assert not (tmp_path / "h.pt").exists() and not (tmp_path / "h.log.jsonl").exists()


def test_perceptual_loss_fine_tunes_with_a_frozen_copy_of_the_init_encoder(tmp_path):
    start = Trainer(tiny_config(tmp_path, name="start.pt")).run()
    tuned = tiny_config(tmp_path, name="tuned.pt", init=start.output, steps_per_epoch=4,
                        model_options={"content_loss": "perceptual", "sequence_length": 5, "perceptual_level": 1})
    trainer = Trainer(tuned)
    result = trainer.run()
    frozen = load_checkpoint(result.output).extra_state["training_state"]["procedure"]["frozen_encoder"]
    initial = load_checkpoint(start.output).model.state_dict()
    assert all(torch.equal(frozen[k], initial[k]) for k in initial)  # never updated
    assert result.history[-1]["train_hrinet_reconstruction"] > 0
    with pytest.raises(CheckpointError, match="fine-tuning keeps it"):
        Trainer(tiny_config(tmp_path, name="other.pt", init=start.output, model_options={"widths": [8, 8, 8, 8]}))


# ----------------------------------------------------------------------------- engine and command line
def test_engine_upsamples_with_an_hrinet_model_pair_by_pair():
    torch.manual_seed(2)
    model = HRINet(HRINetConfig(widths=(8, 16, 16, 16))).eval()
    image = sitk.ReadImage(str(T1_2MM))
    volume = sitk.GetArrayFromImage(image).astype(np.float32)[:7]  # [k, j, i]
    engine = ASIEngine(model, "cpu", batch_size=2, normalization=IntensityNormalization(clip=False))
    out = engine.upsample(volume, 3, axis=0, output_dtype=np.float32)
    assert out.shape == (19, *volume.shape[1:])
    np.testing.assert_array_equal(out[::3], volume)
    # slice 3 * 4 + 2 = the network on acquired slices 4 and 5 at alpha 2/3, whatever the chunking
    norm = engine.normalization
    intensity = norm.fit(volume)
    unit = norm.to_unit_range(volume[4:6], intensity)
    padded = np.pad(unit, ((0, 0), (0, (-unit.shape[1]) % 8), (0, (-unit.shape[2]) % 8)), mode="edge")
    x = torch.from_numpy(padded).unsqueeze(1)
    with torch.no_grad():
        z = model.encode(x)
        direct = model.synthesize([m[:1] for m in z], [m[1:] for m in z], 2 / 3)[0, 0].numpy()
    expected = norm.to_input_units(direct[:volume.shape[1], :volume.shape[2]], intensity)
    np.testing.assert_allclose(out[14], expected, rtol=1e-4, atol=1e-3 * float(intensity.width))
    # the residual mode works with the list of maps too (reconstructions needed)
    residual = ASIEngine(model, "cpu", batch_size=3, synthesis="residual").upsample(volume, 2, axis=0)
    assert residual.shape == (13, *volume.shape[1:])


def test_cli_trains_upsamples_and_describes_an_hrinet(tmp_path):
    from SemanticInterpolationLib.cli import main
    from SemanticInterpolationLib.mrml.logic import describeCheckpoint

    out = tmp_path / "h.pt"
    assert main(["train", str(T1_2MM), "--model-type", "hrinet", "--output", str(out), "--epochs", "1",
                 "--steps-per-epoch", "2", "--batch-size", "2", "--patch-size", "24", "--device", "cpu",
                 "--hrinet-widths", "8,16,16", "--sequence-length", "5", "--adversarial-weight", "0.25",
                 "--patch-layers", "2", "--model-option", "gamma=0.3"]) == 0
    trained = load_checkpoint(out)
    assert trained.model_type == "hrinet" and trained.config.widths == (8, 16, 16)
    settings = trained.training["settings"]["model_options"]
    assert settings == {"widths": [8, 16, 16], "sequence_length": 5, "adversarial_weight": 0.25,
                        "patch_layers": 2, "gamma": 0.3}
    info = describeCheckpoint(out)
    assert info.modelType == "hrinet" and "mixed at" in info.details
    image = tmp_path / "up.nii.gz"
    assert main(["upsample", str(T1_2MM), str(image), "--factor", "2", "--checkpoint", str(out),
                 "--device", "cpu"]) == 0
    assert sitk.ReadImage(str(image)).GetSize()[2] == 2 * 25 - 1
    # the configuration goes back to the command line (GUIs train in a background process)
    config = TrainingConfig([str(T1_2MM)], output=out, model_type="hrinet", model_options={"gamma": 0.3, "widths": [8, 16]})
    args = config.to_cli_args()
    assert args[args.index("--model-option") + 1] == "gamma=0.3" and "widths=[8, 16]" in args
    assert main(["train", str(T1_2MM), "--model-type", "hrinet", "--output", str(tmp_path / "x.pt"),
                 "--model-option", "bogus=1", "--device", "cpu"]) == 1
    assert not (tmp_path / "x.pt").exists()


def test_two_process_torchrun_training_of_an_hrinet(tmp_path):
    import os
    import subprocess
    import sys

    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    folder = tmp_path / "ddp"
    folder.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "SemanticInterpolationLib.cli.train", str(T1_2MM), "--output", str(folder / "h.pt"),
               "--model-type", "hrinet", "--hrinet-widths", "8,16,16", "--sequence-length", "5", "--critic-updates", "2",
               "--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "2", "--patch-size", "24", "--device", "cpu"]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert sorted(p.name for p in folder.iterdir()) == ["h.log.jsonl", "h.pt"]  # rank 0 only
    trained = load_checkpoint(folder / "h.pt")
    assert trained.training["world_size"] == 2
    assert trained.extra_state["training_state"]["procedure"]["steps_done"] == {"I": 2, "II": 1}

"""Xuan et al.'s stage I (model type xuan-vae): the VAE, its losses, the schedule, training through the Trainer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import T1_2MM, file_digest
from SemanticInterpolationLib import ASIEngine, CheckpointError, InputError, load_checkpoint, save_checkpoint
from SemanticInterpolationLib.models.normalization import IntensityNormalization
from SemanticInterpolationLib.models.registry import get_model_type, model_type_names
from SemanticInterpolationLib.models.xuan_vae import XuanCritic, XuanVAE, XuanVAEConfig
from SemanticInterpolationLib.training import Trainer, TrainingConfig, TrainingDiverged
from SemanticInterpolationLib.training import xuan
from SemanticInterpolationLib.training.xuan import (LossWeights, XuanOptions, XuanSchedule, compactness_loss,
                                                    kl_diagonal_gaussians, kl_to_standard_normal)

SMALL = XuanVAEConfig(widths=(8, 16), latent_channels=4, name="xuan-test")


def _t1() -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(T1_2MM))).astype(np.float32)


# --------------------------------------------------------------------------- losses
def test_kl_of_identical_posteriors_is_zero_and_matches_the_closed_form():
    g = torch.Generator().manual_seed(0)
    mu, lv = torch.randn(2, 4, 5, 3, generator=g), torch.randn(2, 4, 5, 3, generator=g)
    assert float(kl_diagonal_gaussians(mu, lv, mu, lv)) == pytest.approx(0.0, abs=1e-7)
    mu2, lv2 = torch.randn(mu.shape, generator=g), torch.randn(mu.shape, generator=g)
    p = torch.distributions.Normal(mu, (0.5 * lv).exp())
    q = torch.distributions.Normal(mu2, (0.5 * lv2).exp())
    expected = torch.distributions.kl_divergence(p, q).mean()
    assert float(kl_diagonal_gaussians(mu, lv, mu2, lv2)) == pytest.approx(float(expected), rel=1e-5)
    # the KL is not symmetric: the argument order matters (KL(q_n || q_neighbour), eq. 8)
    assert float(kl_diagonal_gaussians(mu2, lv2, mu, lv)) != pytest.approx(float(expected), rel=1e-3)


def test_prior_kl_closed_form():
    assert float(kl_to_standard_normal(torch.zeros(3, 2), torch.zeros(3, 2))) == 0.0
    # one element: mu = 2, sigma^2 = e: 0.5 (4 + e - 1 - 1)
    assert float(kl_to_standard_normal(torch.tensor([2.0]), torch.tensor([1.0]))) == pytest.approx(
        0.5 * (4 + np.e - 2), rel=1e-6)
    g = torch.Generator().manual_seed(1)
    mu, lv = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * lv).exp()),
                                                 torch.distributions.Normal(0.0, 1.0)).mean()
    assert float(kl_to_standard_normal(mu, lv)) == pytest.approx(float(expected), rel=1e-5)


def test_compactness_loss_ties_the_centre_to_both_neighbours_in_stack_order():
    g = torch.Generator().manual_seed(2)
    centre, prev, nxt = (torch.randn(2, 3, 4, 4, generator=g) for _ in range(3))
    lv = torch.zeros(6, 3, 4, 4)
    both = compactness_loss(torch.cat([centre, prev, nxt]), lv, 2)
    expected = kl_diagonal_gaussians(centre, lv[:2], nxt, lv[:2]) + kl_diagonal_gaussians(centre, lv[:2], prev, lv[:2])
    assert float(both) == pytest.approx(float(expected), rel=1e-6)
    # previous = centre: only the next neighbour counts (with unit variances: half the mean squared distance)
    only_next = compactness_loss(torch.cat([centre, centre, nxt]), lv, 2)
    assert float(only_next) == pytest.approx(float(0.5 * (centre - nxt).square().mean()), rel=1e-6)


# --------------------------------------------------------------------------- schedule
def test_schedule_phases_start_at_the_papers_step_fractions():
    schedule = XuanSchedule()
    total = 2100  # the paper's 2.1e6 iterations / 1000: phases end at 100 and 900
    assert schedule.boundaries(total) == (100, 900)
    assert schedule.weights(0, total) == LossWeights(1e4, 0.0, 1.0, 0.0, phase=1)
    assert schedule.weights(99, total).phase == 1
    assert schedule.weights(100, total) == LossWeights(100.0, 1.0, 0.05, 0.0, phase=2)
    assert schedule.weights(899, total).phase == 2
    assert schedule.weights(900, total) == LossWeights(100.0, 1.0, 0.05, 0.02, phase=3)
    assert schedule.weights(2099, total).phase == 3
    # scaled to another budget
    assert schedule.boundaries(210) == (10, 90)
    assert schedule.weights(9, 210).phase == 1 and schedule.weights(10, 210).phase == 2


def test_every_weight_is_an_option_and_bad_options_are_clear_errors():
    options = XuanOptions.parse({"warmup": "1,0,0,0", "final": [5, 2, 0.5, 0.25], "phase_ends": "0.5,0.75",
                                 "critic_learning_rate": "1e-4", "critic_widths": "8,16"})
    assert options.schedule.weights(0, 100) == LossWeights(1, 0, 0, 0, phase=1)
    assert options.schedule.weights(60, 100) == LossWeights(100, 1, 0.05, 0, phase=2)
    assert options.schedule.weights(80, 100) == LossWeights(5, 2, 0.5, 0.25, phase=3)
    assert options.critic_learning_rate == 1e-4 and options.critic_widths == (8, 16)
    with pytest.raises(InputError, match="unknown xuan-vae option.*gamma.*known are"):
        XuanOptions.parse({"gamma": "1"})
    with pytest.raises(InputError, match="expected 4 numbers"):
        XuanOptions.parse({"middle": "1,2"})
    with pytest.raises(InputError, match="phase ends"):
        XuanOptions.parse({"phase_ends": "0.8,0.2"})


# --------------------------------------------------------------------------- the network
def test_encode_returns_mu_in_eval_mode_and_samples_in_training():
    torch.manual_seed(0)
    model = XuanVAE(SMALL)
    x = torch.rand(3, 1, 16, 24)
    model.eval()
    mu, log_variance = model.posterior(x)
    assert mu.shape == log_variance.shape == (3, 4, 4, 6)
    assert torch.equal(model.encode(x), mu) and torch.equal(model.encode(x), model.encode(x))
    # training mode: without spectral norm (its power iteration moves the weights on every training-mode call)
    model = XuanVAE(dataclasses.replace(SMALL, spectral_norm=False)).train()
    with torch.no_grad():
        mu_train, lv_train = model.posterior(x)
        draws = torch.stack([model.encode(x) for _ in range(200)])
    assert not torch.equal(draws[0], draws[1])
    sigma = (0.5 * lv_train).exp()
    # reparameterised samples: mean mu, standard deviation sigma
    assert torch.allclose(draws.mean(0), mu_train, atol=float(4 * sigma.max() / np.sqrt(200)))
    assert torch.allclose(draws.std(0), sigma, rtol=0.25)


def test_the_paper_layers_are_used_and_the_critic_is_not_part_of_the_model():
    model = XuanVAE(SMALL)
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"LeakyReLU", "InstanceNorm2d", "AvgPool2d", "Upsample"} <= kinds
    assert all(m.negative_slope == 0.2 for m in model.modules() if isinstance(m, torch.nn.LeakyReLU))
    assert any("parametrizations.weight.original" in k for k in model.state_dict())  # spectral norm
    assert not any(isinstance(m, XuanCritic) for m in model.modules())
    critic = XuanCritic((8, 16))
    assert critic(torch.rand(5, 1, 32, 20)).shape == (5,)  # global average pooling: one score per slice


def test_engine_upsamples_odd_sizes_by_decoding_the_mix_of_the_means():
    torch.manual_seed(3)
    model = XuanVAE(SMALL).eval()
    volume = _t1()[:5, :37, :29]  # odd in-plane sizes; the engine pads to a multiple of 4
    norm = IntensityNormalization()
    out = ASIEngine(model, "cpu", normalization=norm, batch_size=3).upsample(volume, 3, output_dtype=np.float32)
    assert out.shape == (13, 37, 29)
    np.testing.assert_array_equal(out[::3], volume)
    r = norm.fit(volume)
    unit = torch.from_numpy(norm.to_unit_range(volume, r))[:, None]
    padded = torch.nn.functional.pad(unit, (0, 3, 0, 3), mode="replicate")  # 37x29 -> 40x32
    with torch.no_grad():
        mu = model.encode(padded)
        expected = model.decode((1 - 1 / 3) * mu[1:2] + (1 / 3) * mu[2:3])[0, 0, :37, :29].numpy()
    np.testing.assert_allclose(out[4], norm.to_input_units(expected, r), rtol=0, atol=1e-3 * float(np.ptp(volume)))


def test_config_and_checkpoint_round_trip(tmp_path):
    assert {"xuan-vae", "sr-generator"} <= set(model_type_names())
    assert get_model_type("xuan-vae").config_from_dict(SMALL.to_dict()) == SMALL
    assert SMALL.to_dict()["latent"] == "spatial"
    with pytest.raises(CheckpointError, match="unknown fields"):
        XuanVAEConfig.from_dict({**SMALL.to_dict(), "fc_latent": 512})
    with pytest.raises(CheckpointError, match="latent must be one of spatial"):
        XuanVAEConfig.from_dict({**SMALL.to_dict(), "latent": "fc-512"})
    torch.manual_seed(0)
    model = XuanVAE(SMALL).eval()
    path = save_checkpoint(tmp_path / "x.pt", model)
    loaded = load_checkpoint(path)
    assert loaded.model_type == "xuan-vae" and loaded.config == SMALL
    x = torch.rand(2, 1, 12, 8)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))


# --------------------------------------------------------------------------- training
def _hook_for(options: dict, model: XuanVAE, total_steps: int = 10):
    class _Trainer:  # what the hook reads from the Trainer
        device = torch.device("cpu")
        compute_dtype = torch.float32
        context = None

        class config:
            learning_rate = 1e-3
            seed = 0
            epochs = 1
            model_options = options

        steps_per_epoch = total_steps

    trainer = _Trainer()
    from SemanticInterpolationLib.training.distributed import DistributedContext

    trainer.context = DistributedContext()
    hook = xuan.XuanTrainingHook()
    hook.architecture(trainer, None)
    hook.start(trainer, model, None)
    return hook, trainer


def test_adversarial_term_reaches_the_decoder_but_not_the_encoder():
    """Eq. 10-11: the encoder is trained with beta = 0, the decoder with beta."""
    volume = _t1()
    batch = torch.from_numpy(np.stack([volume[3:6, :16, :16], volume[10:13, 8:24, 8:24]]) / volume.max())
    grads = {}
    for beta in (1.0, 0.0):
        torch.manual_seed(0)
        model = XuanVAE(SMALL).train()
        weights = f"100,{beta},0.05,0.02"
        hook, trainer = _hook_for({"warmup": weights, "middle": weights, "final": weights}, model)
        torch.manual_seed(1)
        losses, b = hook.losses(trainer, hook.step_module(model), batch.float(), 0, torch.contiguous_format, False)
        assert b == 2
        model.zero_grad()
        losses["total"].backward()
        grads[beta] = {name: p.grad.clone() for name, p in model.named_parameters()}
    encoder = [n for n in grads[1.0] if n.startswith("encoder.")]
    decoder = [n for n in grads[1.0] if n.startswith("decoder.")]
    for name in encoder:
        torch.testing.assert_close(grads[1.0][name], grads[0.0][name], rtol=1e-5, atol=1e-7)
    assert any(not torch.allclose(grads[1.0][n], grads[0.0][n]) for n in decoder)


def test_nan_kl_is_a_clear_error():
    torch.manual_seed(0)
    model = XuanVAE(SMALL).train()
    with torch.no_grad():
        model.encoder[-1].bias[0] = float("nan")
    hook, trainer = _hook_for({}, model)
    with pytest.raises(TrainingDiverged, match=r"KL.*became nan.*last completed epoch is kept"):
        hook.losses(trainer, hook.step_module(model), torch.rand(2, 3, 16, 16), 0, torch.contiguous_format, False)


def _config(tmp_path, **changes) -> TrainingConfig:
    base = TrainingConfig([str(T1_2MM)], output=tmp_path / "xuan.pt", validation_volumes=[str(T1_2MM)],
                          model_type="xuan-vae", epochs=3, steps_per_epoch=6, batch_size=4, patch_size=16,
                          learning_rate=1e-3, validation_triplets=6, augment=False, device="cpu",
                          model_options={"phase_ends": "0.2,0.5"})
    return dataclasses.replace(base, **changes)


def test_trains_on_real_mri_through_the_trainer_resumes_and_keeps_the_critic_out_of_the_best_checkpoint(tmp_path):
    result = Trainer(_config(tmp_path)).run()
    assert result.status == "finished" and result.global_step == 18
    losses = [r["train_center"] for r in result.history]
    assert losses[-1] < losses[0]  # L_center falls
    assert result.history[-1]["val_rec_psnr"] > result.history[0]["val_rec_psnr"]
    assert {"train_prior", "train_comp", "train_adv", "train_critic"} <= set(result.history[-1])
    saved = load_checkpoint(result.output)
    assert saved.model_type == "xuan-vae"
    hook_state = saved.extra_state["training_state"]["hook"]
    assert "critic" in hook_state and "critic_optimizer" in hook_state
    best = load_checkpoint(result.best_output)
    assert not best.extra_state and not any("critic" in k for k in best.model.state_dict())
    assert best.metadata["inference"]["synthesis"] == "plain"
    resumed = Trainer(_config(tmp_path, epochs=4, resume=True)).run()
    assert resumed.epochs_done == 4 and resumed.global_step == 24


def test_nan_kl_during_training_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    result = Trainer(_config(tmp_path, epochs=1, validation_volumes=[])).run()
    digest = file_digest(result.output)
    monkeypatch.setattr(xuan, "kl_to_standard_normal", lambda mu, lv: torch.tensor(float("nan")))
    with pytest.raises(TrainingDiverged, match="prior"):
        Trainer(_config(tmp_path, epochs=2, resume=True, validation_volumes=[])).run()
    assert file_digest(result.output) == digest


def test_cli_options_reach_the_hook(tmp_path):
    from SemanticInterpolationLib.cli.app import main

    out = tmp_path / "cli.pt"
    assert main(["train", str(T1_2MM), "--model-type", "xuan-vae", "--output", str(out), "--epochs", "1",
                 "--steps-per-epoch", "2", "--batch-size", "2", "--patch-size", "16", "--no-augment",
                 "--model-option", "final=1,0,0,0", "--model-option", "phase_ends=0,0", "-q"]) == 0
    settings = load_checkpoint(out).training["settings"]
    assert settings["model_options"] == {"final": "1,0,0,0", "phase_ends": "0,0"}
    config = TrainingConfig([str(T1_2MM)], output=out, model_type="xuan-vae", model_options={"final": "1,0,0,0"})
    assert config.to_cli_args()[-2:] == ["--model-option", "final=1,0,0,0"]
    assert main(["train", str(T1_2MM), "--model-type", "xuan-vae", "--output", str(tmp_path / "b.pt"),
                 "--model-option", "alpha=3", "-q"]) == 1

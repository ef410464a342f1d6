"""Training HRINet (model type ``"hrinet"``): the alternating procedure of the HRINet thesis (section 3.2, Algorithm 1).

Generator steps alternate (global step even: step I, odd: step II):

* **Step I** (unsupervised, thesis eq. 3-4): a pair of slices ``x1, x2`` that may be unrelated (any
  slice of any training volume, thesis 3.3.2.1) and ``alpha ~ U(0, 0.5)`` (the pair is unordered, so
  alpha and 1 - alpha are the same interpolation; as ACAI). Generator loss
  ``content(g(f(x)), x) + lambda * L_ac + beta * L_gen`` with ``x = x1, x2`` (reconstruction), ``L_ac =
  D1(x_alpha)^2`` (eq. 3-5) and ``L_gen = -D2(x_alpha)`` (the Wasserstein form of eq. 3-6). Before the
  generator update D1 is trained once on eq. 3-7 and D2 ``critic_updates`` times on the WGAN-GP loss
  (on the same real slices and detached interpolations, fresh penalty points each time).
* **Step II** (supervised, eq. 3-9): ``n`` slices of one volume, the first and last as endpoints, the
  ``n - 2`` in between synthesised at ``alpha = j / (n - 1)`` and scored with the content loss, weight
  epsilon. Real anisotropic stacks give consecutive acquired slices; fine-slice volumes (see
  :func:`.data.is_fine`) slices ``sequence_stride`` apart.

Content losses (eq. 3-10 to 3-13): ``mse``, ``l1``, ``ssim`` (1 - SSIM) or ``perceptual``: the mean
squared difference of the feature maps of a frozen copy of the *pretrained* encoder at
``perceptual_level`` (the thesis: after the 8th conv, before the 4th pooling = level 3), taken from the
``init`` checkpoint when the run starts (so perceptual training needs ``init``; no ImageNet network,
no LPIPS).

The critics and their optimisers (and the frozen encoder) are kept in the trainer's resumable
training state (``extra_state["training_state"]["procedure"]``, plain tensors), never in the
inference checkpoint. Options come from ``TrainingConfig.model_options`` (:class:`HRINetOptions`;
the command line's HRINet options). Thesis defaults: lambda 0.5, n 7, weight decay 1e-5, learning
rate 1e-4 (give ``--learning-rate 1e-4``; the trainer's default is 3e-4), beta 5e-4, 5 D2 updates per
generator update, a 70 x 70 PatchGAN. Epsilon: the thesis's 2e-5 multiplies an unnormalised
perceptual sum; with the mean losses here the default is 1.

Tensors are ``[batch, channel, H, W]``; a dataset item is ``[2 + n, P, P]`` (the pair, then the sequence).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import CheckpointError, InputError
from ..models.hrinet import HRINet, HRINetConfig, mix_latents
from ..models.hrinet_critics import (AlphaCritic, PatchCritic, adversarial_constraint_loss, alpha_critic_loss,
                                     wgan_critic_loss, wgan_generator_loss)
from .data import Augmentation, TrainingVolume, bspline_anchor, blur_slices, is_fine, pad_to_multiple, validation_triplets
from .losses import make_synthesis_distance, psnr, ssim

CONTENT_LOSSES = ("mse", "l1", "ssim", "perceptual")


@dataclass(frozen=True)
class HRINetOptions:
    """Settings of the HRINet training procedure (``TrainingConfig.model_options``).

    Network (used when training from scratch; fine-tuning keeps the checkpoint's network):
    ``network`` (``"small"`` or ``"thesis"``), optionally overridden by ``widths``, ``mixed_levels``,
    ``mix_channels``. Losses: ``adversarial_weight`` (lambda), ``gan_weight`` (beta), ``sequence_weight``
    (epsilon), ``content_loss``, ``perceptual_level``, ``gamma`` (eq. 3-7). Data: ``sequence_length``
    (n), ``sequence_stride`` (fine volumes). Critics: ``critic_updates`` (D2 updates per generator
    update), ``gradient_penalty`` (WGAN-GP weight), ``patch_layers`` (D2's stride-2 layers: 3 = 70 x 70
    receptive field), ``gan_start_step`` (generator steps trained without D2 first, the thesis's first
    stage). Optimiser: ``weight_decay`` (Adam, generator), ``critic_learning_rate`` (None = the run's).
    """

    network: str = "small"
    widths: tuple[int, ...] | None = None
    mixed_levels: tuple[int, ...] | None = None
    mix_channels: tuple[int, ...] | None = None
    adversarial_weight: float = 0.5
    gan_weight: float = 5e-4
    sequence_weight: float = 1.0
    sequence_length: int = 7
    sequence_stride: int = 1
    content_loss: str = "mse"
    perceptual_level: int | None = None
    gamma: float = 0.2
    critic_updates: int = 5
    gradient_penalty: float = 10.0
    patch_layers: int = 3
    gan_start_step: int = 0
    weight_decay: float = 1e-5
    critic_learning_rate: float | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> "HRINetOptions":
        """Checked options from plain data; unknown names or bad values raise :class:`InputError`."""
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown HRINet option(s) {unknown}: use {', '.join(sorted(known))}")
        for key in ("widths", "mixed_levels", "mix_channels"):
            if data.get(key) is not None:
                if not isinstance(data[key], (list, tuple)):
                    raise InputError(f"HRINet option {key} must be a list of whole numbers, got {data[key]!r}")
                data[key] = tuple(data[key])
        options = cls(**data)
        options.check()
        return options

    def check(self) -> None:
        def number(label: str, value: Any, low: float, high: float) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)) \
                    or not low <= float(value) <= high:
                raise InputError(f"HRINet option {label} must be a number from {low:g} to {high:g}, got {value!r}")

        def whole(label: str, value: Any, low: int, high: int) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
                raise InputError(f"HRINet option {label} must be a whole number from {low} to {high}, got {value!r}")

        number("adversarial_weight (lambda)", self.adversarial_weight, 0.0, 1e3)
        number("gan_weight (beta)", self.gan_weight, 0.0, 1e3)
        number("sequence_weight (epsilon)", self.sequence_weight, 0.0, 1e3)
        number("gamma", self.gamma, 0.0, 1.0)
        number("gradient_penalty", self.gradient_penalty, 0.0, 1e4)
        number("weight_decay", self.weight_decay, 0.0, 1.0)
        if self.critic_learning_rate is not None:
            number("critic_learning_rate", self.critic_learning_rate, 1e-12, 1.0)
        whole("sequence_length (n)", self.sequence_length, 3, 33)
        whole("sequence_stride", self.sequence_stride, 1, 16)
        whole("critic_updates", self.critic_updates, 1, 50)
        whole("patch_layers", self.patch_layers, 0, 6)
        whole("gan_start_step", self.gan_start_step, 0, 10 ** 9)
        if self.perceptual_level is not None:
            whole("perceptual_level", self.perceptual_level, 0, 7)
        if self.content_loss not in CONTENT_LOSSES:
            raise InputError(f"unknown HRINet content loss {self.content_loss!r}: use one of {', '.join(CONTENT_LOSSES)}")
        try:
            self.network_config()
        except (ValueError, CheckpointError) as exc:
            raise InputError(f"the HRINet options do not build a network: {exc}") from exc

    def network_config(self) -> HRINetConfig:
        """The network these options describe (for training from scratch)."""
        config = HRINetConfig.named(self.network)
        changes = {k: getattr(self, k) for k in ("widths", "mixed_levels", "mix_channels") if getattr(self, k) is not None}
        if changes:
            if "widths" in changes and "mixed_levels" not in changes and config.mixed_levels:
                changes["mixed_levels"] = ()  # the named network's levels need not exist in other widths
                if "mix_channels" not in changes:
                    changes["mix_channels"] = ()
            parts = [f"{k.replace('_', '')}{'-'.join(map(str, v))}" for k, v in changes.items() if v]
            changes["name"] = "-".join([config.name, *parts])
            config = dataclasses.replace(config, **changes)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("widths", "mixed_levels", "mix_channels"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d


# --------------------------------------------------------------------------- data
class PairSequenceDataset(Dataset):
    """Item ``i``: float32 ``[2 + n, P, P]``: a pair of slices for step I (the first from sequence ``i``'s
    volume, the second from a random slice of a random volume: unrelated slices, thesis 3.3.2.1), then
    ``n`` slices of one volume for step II (consecutive on anisotropic stacks, ``stride`` apart on fine
    volumes), all as one random patch position per part. Augmentation: rotations, flips and intensity
    changes (the pair and the sequence drawn separately); noise, when enabled, on the sequence's two
    endpoints only. ``thick_slice_probability``: share of fine-volume sequences whose endpoints come from a
    copy blurred along the slice axis with FWHM = the endpoints' distance (simulated thick slices).
    ``item`` and the epoch seed every draw (reproducible)."""

    def __init__(self, volumes: Sequence[TrainingVolume], patch_size: int, *, sequence_length: int = 7,
                 stride: int = 1, augmentation: Augmentation | None = None, seed: int = 0,
                 thick_slice_probability: float = 0.0) -> None:
        if not volumes:
            raise InputError("give at least one training volume")
        self.volumes = list(volumes)
        self.patch_size = int(patch_size)
        self.n = int(sequence_length)
        self.augmentation = augmentation if augmentation is not None else Augmentation()
        self.seed = int(seed)
        self.epoch = 0
        self.strides = [int(stride) if is_fine(v) else 1 for v in self.volumes]
        self.index = [(vi, first) for vi, v in enumerate(self.volumes)
                      for first in range(0, v.n_slices - (self.n - 1) * self.strides[vi])]
        if not self.index:
            longest = max(v.n_slices for v in self.volumes)
            raise InputError(f"no training volume has the {self.n} slices a step-II sequence needs (the longest has "
                             f"{longest}): give a smaller sequence length (HRINet option sequence_length) or more slices")
        self.thick_slice_probability = float(thick_slice_probability)
        self.thick = {vi: blur_slices(v.slices, (self.n - 1) * self.strides[vi])
                      for vi, v in enumerate(self.volumes) if self.thick_slice_probability > 0 and is_fine(v)}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def _corner(self, volume: TrainingVolume, rng: np.random.Generator) -> tuple[int, int]:
        h, w = volume.slice_shape
        return int(rng.integers(0, h - self.patch_size + 1)), int(rng.integers(0, w - self.patch_size + 1))

    def __getitem__(self, item: int) -> torch.Tensor:
        vi, first = self.index[item]
        volume, p, s = self.volumes[vi], self.patch_size, self.strides[vi]
        rng = np.random.default_rng([self.seed, self.epoch, int(item)])
        # step II: n slices of one volume
        rows = [first + j * s for j in range(self.n)]
        top, left = self._corner(volume, rng)
        sequence = volume.slices[rows, top:top + p, left:left + p].astype(np.float32, copy=True)
        if vi in self.thick and rng.random() < self.thick_slice_probability:
            sequence[[0, -1]] = self.thick[vi][[rows[0], rows[-1]], top:top + p, left:left + p]
        # step I: any slice of this volume and any slice of any volume
        other = self.volumes[int(rng.integers(0, len(self.volumes)))]
        pair = []
        for source in (volume, other):
            t, l = self._corner(source, rng)
            pair.append(source.slices[int(rng.integers(0, source.n_slices)), t:t + p, l:l + p])
        pair = np.stack(pair).astype(np.float32)
        aug = self.augmentation
        sequence = aug.apply_drawn(sequence, rng, clip=False)
        pair = aug.apply_drawn(pair, rng, clip=False)
        if aug.noise_std_max > 0 and rng.random() < aug.noise_probability:
            sigma = float(rng.uniform(0.0, aug.noise_std_max))
            sequence = np.array(sequence)
            sequence[[0, -1]] += rng.normal(0.0, sigma, (2, p, p)).astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(np.concatenate([pair, sequence]), dtype=np.float32))


# --------------------------------------------------------------------------- network step
class HRINetStep(torch.nn.Module):
    """The generator's forward pass as a module (so that DistributedDataParallel can wrap it).

    ``forward(first, second, alpha, pair_index, reconstruct)``: encodes ``first`` and ``second``
    ``[B, 1, P, P]`` once; returns the reconstructions of both ``[2B, 1, P, P]`` (None unless
    ``reconstruct``) and the slices decoded from the maps of pair ``pair_index[k]`` mixed at ``alpha[k]``
    ``[K, 1, P, P]`` (one decoder call for everything).
    """

    def __init__(self, model: HRINet) -> None:
        super().__init__()
        self.model = model

    def forward(self, first: torch.Tensor, second: torch.Tensor, alpha: torch.Tensor, pair_index: torch.Tensor,
                reconstruct: bool = True):
        b = first.shape[0]
        latents = self.model.encode(torch.cat([first, second]))
        mixed = mix_latents([z[:b].index_select(0, pair_index) for z in latents],
                            [z[b:].index_select(0, pair_index) for z in latents], alpha)
        if not reconstruct:
            return None, self.model.decode(mixed)
        decoded = self.model.decode([torch.cat([z, m]) for z, m in zip(latents, mixed)])
        return decoded[:2 * b], decoded[2 * b:]


def step_kind(global_step: int) -> str:
    """Algorithm 1: ``"I"`` (unsupervised) on even generator steps, ``"II"`` (supervised) on odd ones."""
    return "I" if int(global_step) % 2 == 0 else "II"


# --------------------------------------------------------------------------- the procedure
class HRINetTraining:
    """The trainer's hook for model type ``hrinet`` (see :class:`..trainer.Trainer`): network choice,
    data, optimisers, the alternating steps, critics' state and validation."""

    def __init__(self, trainer: Any, start: Any) -> None:
        self.trainer = trainer
        c = trainer.config
        self.options = HRINetOptions.from_mapping(getattr(c, "model_options", None))
        o = self.options
        if c.data_on_device:
            raise InputError("--data-on-device draws pair-unet batches; it does not apply to model type 'hrinet': drop it")
        if start is not None:
            wanted = {k for k in ("widths", "mixed_levels", "mix_channels") if getattr(o, k) is not None}
            if wanted and o.network_config() != start.config:
                raise CheckpointError(
                    f"the {'resumed' if c.resume else 'init'} checkpoint {start.path!r} holds the HRINet network "
                    f"{start.config.name!r}; fine-tuning keeps it: drop the HRINet network options "
                    f"({', '.join(sorted(wanted))}) or drop --init to train {o.network_config().name!r} from scratch")
            self.architecture = start.config
        else:
            self.architecture = o.network_config()
        if o.content_loss == "perceptual" and start is None:
            raise InputError("the perceptual content loss uses a frozen copy of a pretrained HRINet encoder: give "
                             "--init HRINET.pt (e.g. a run trained with the mse content loss, the thesis's first stage)")
        levels = len(self.architecture.widths)
        self.perceptual_level = min(3, levels - 1) if o.perceptual_level is None else int(o.perceptual_level)
        if self.perceptual_level >= levels:
            raise InputError(f"perceptual level {self.perceptual_level} does not exist in network "
                             f"{self.architecture.name!r} (levels 0..{levels - 1})")
        self.distance = None if o.content_loss == "perceptual" else make_synthesis_distance(o.content_loss)
        self.frozen_encoder: HRINet | None = None
        self.steps_done = {"I": 0, "II": 0}
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    # ---- trainer hooks ------------------------------------------------------
    def make_dataset(self, volumes: Sequence[TrainingVolume], patch_size: int, augmentation: Augmentation) -> Dataset:
        c = self.trainer.config
        layers = self.options.patch_layers
        smallest = max(3 * 2 ** layers, 16)
        if patch_size < smallest:
            raise InputError(f"patch size {patch_size} is too small for the critics (a PatchGAN with {layers} stride-2 "
                             f"layers needs at least {smallest}): give --patch-size {smallest} or more, or fewer "
                             "--patch-layers")
        return PairSequenceDataset(volumes, patch_size, sequence_length=self.options.sequence_length,
                                   stride=self.options.sequence_stride, augmentation=augmentation, seed=c.seed,
                                   thick_slice_probability=float(c.thick_slice_probability))

    def step_module(self, model: HRINet) -> torch.nn.Module:
        return HRINetStep(model)

    def make_optimizer(self, model: HRINet) -> torch.optim.Optimizer:
        """The generator's Adam (with the weight decay); builds the critics, their optimisers and, for the
        perceptual loss, the frozen copy of ``model``'s (starting) encoder."""
        c, o = self.trainer.config, self.options
        device = self.trainer.device
        self.model = model
        self.alpha_critic = AlphaCritic().to(device)
        self.patch_critic = PatchCritic(layers=o.patch_layers).to(device)
        g = torch.Generator().manual_seed(int(c.seed) + 1)
        for critic in (self.alpha_critic, self.patch_critic):
            for module in critic.modules():
                if isinstance(module, torch.nn.Conv2d):
                    with torch.no_grad():
                        module.weight.normal_(0.0, (2.0 / (1.04 * module.weight[0].numel())) ** 0.5, generator=g)
                        module.bias.zero_()
        critic_lr = float(o.critic_learning_rate or c.learning_rate)
        # Adam with beta1 0.5, 0.9 for the critics (the WGAN-GP paper's setting)
        self.alpha_optimizer = torch.optim.Adam(self.alpha_critic.parameters(), lr=critic_lr, betas=(0.5, 0.9))
        self.patch_optimizer = torch.optim.Adam(self.patch_critic.parameters(), lr=critic_lr, betas=(0.5, 0.9))
        if o.content_loss == "perceptual":
            self.frozen_encoder = copy.deepcopy(model).to(device).eval()
            for parameter in self.frozen_encoder.parameters():
                parameter.requires_grad_(False)
        return torch.optim.Adam(model.parameters(), lr=float(c.learning_rate), weight_decay=float(o.weight_decay))

    def state_dict(self) -> dict[str, Any]:
        """Critics, their optimisers, the frozen encoder and the step counts (plain data, for the training state)."""
        state = {"alpha_critic": self.alpha_critic.state_dict(), "patch_critic": self.patch_critic.state_dict(),
                 "alpha_critic_settings": dict(self.alpha_critic.settings),
                 "patch_critic_settings": dict(self.patch_critic.settings),
                 "alpha_optimizer": self.alpha_optimizer.state_dict(),
                 "patch_optimizer": self.patch_optimizer.state_dict(),
                 "steps_done": dict(self.steps_done), "options": self.options.to_dict()}
        if self.frozen_encoder is not None:
            state["frozen_encoder"] = self.frozen_encoder.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        if not isinstance(state, Mapping) or "alpha_critic" not in state:
            raise CheckpointError("the resumed HRINet run holds no critic state (it was not written by the HRINet "
                                  "training); start it again with --init instead of --resume")
        if dict(state.get("patch_critic_settings") or {}) != self.patch_critic.settings:
            raise CheckpointError(f"the resumed run's PatchGAN had settings {state.get('patch_critic_settings')}, "
                                  f"now {self.patch_critic.settings}: keep patch_layers as it was, or start anew")
        try:
            self.alpha_critic.load_state_dict(state["alpha_critic"])
            self.patch_critic.load_state_dict(state["patch_critic"])
            self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
            self.patch_optimizer.load_state_dict(state["patch_optimizer"])
            if self.frozen_encoder is not None and "frozen_encoder" in state:
                self.frozen_encoder.load_state_dict(state["frozen_encoder"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"the resumed HRINet run's critic state does not fit ({exc}); start anew") from exc
        critic_lr = float(self.options.critic_learning_rate or self.trainer.config.learning_rate)
        for optimizer in (self.alpha_optimizer, self.patch_optimizer):
            for group in optimizer.param_groups:
                group["lr"] = critic_lr
        self.steps_done = {k: int(v) for k, v in dict(state.get("steps_done") or {}).items()} or {"I": 0, "II": 0}

    def describe(self) -> str:
        o = self.options
        return (f"HRINet procedure: step I (lambda {o.adversarial_weight:g}, beta {o.gan_weight:g} from generator step "
                f"{o.gan_start_step}, {o.critic_updates} D2 updates, PatchGAN {self.patch_receptive_field()} px) "
                f"alternating with step II (n {o.sequence_length}, epsilon {o.sequence_weight:g}), content loss "
                f"{o.content_loss}, weight decay {o.weight_decay:g}")

    def patch_receptive_field(self) -> int:
        return PatchCritic(base_width=1, layers=self.options.patch_layers).receptive_field

    # ---- losses ---------------------------------------------------------------
    def content(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The content loss (eq. 3-11 / 3-12) of ``prediction`` against ``target``."""
        if self.distance is not None:
            return self.distance(prediction.float(), target.float())
        level = self.perceptual_level
        a = self.frozen_encoder.encoder_features(prediction.float(), up_to=level)[-1]
        b = self.frozen_encoder.encoder_features(target.float(), up_to=level)[-1]
        return (a - b).pow(2).mean()

    def _critic_step(self, optimizer: torch.optim.Optimizer, critic: torch.nn.Module, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        ctx = self.trainer.context
        if ctx.enabled:  # average the critics' gradients over the processes (no DDP: the penalty's double backward)
            for parameter in critic.parameters():
                if parameter.grad is not None:
                    ctx.all_reduce_sum(parameter.grad)
                    parameter.grad /= ctx.world_size
        optimizer.step()

    def _note(self, name: str, value: torch.Tensor | float) -> None:
        self._sums[name] = self._sums.get(name, 0.0) + float(value)
        self._counts[name] = self._counts.get(name, 0) + 1

    def train_step(self, step_module: torch.nn.Module, batch: torch.Tensor, optimizer: torch.optim.Optimizer,
                   global_step: int, memory_format: torch.memory_format) -> tuple[dict[str, torch.Tensor | None], int]:
        """One generator update (step I or II by ``global_step``), with the critics' updates before it in
        step I. Returns detached losses ``{"total", "reconstruction", "synthesis"}`` and the batch size."""
        o = self.options
        device = self.trainer.device
        batch = batch.to(device, non_blocking=True)
        b = batch.shape[0]
        kind = step_kind(global_step)
        zero = torch.zeros((), device=device)
        if kind == "I":
            x1 = batch[:, 0:1].contiguous(memory_format=memory_format)
            x2 = batch[:, 1:2].contiguous(memory_format=memory_format)
            real = torch.cat([x1, x2])
            alpha = 0.5 * torch.rand(b, device=device)
            recon, interp = step_module(x1, x2, alpha, torch.arange(b, device=device), True)
            recon, interp = recon.float(), interp.float()
            d1_loss = alpha_critic_loss(self.alpha_critic, interp.detach(), alpha, real, recon.detach(), o.gamma)
            self._critic_step(self.alpha_optimizer, self.alpha_critic, d1_loss)
            self._note("d1", d1_loss.detach())
            use_gan = o.gan_weight > 0 and self.steps_done["I"] + self.steps_done["II"] >= o.gan_start_step
            if use_gan:
                for _ in range(o.critic_updates):
                    d2_loss = wgan_critic_loss(self.patch_critic, x1, interp, o.gradient_penalty)
                    self._critic_step(self.patch_optimizer, self.patch_critic, d2_loss)
                self._note("d2", d2_loss.detach())
            reconstruction = self.content(recon, real)
            ac = adversarial_constraint_loss(self.alpha_critic, interp)
            total = reconstruction + o.adversarial_weight * ac
            gen = wgan_generator_loss(self.patch_critic, interp) if use_gan else zero
            total = total + o.gan_weight * gen if use_gan else total
            self._note("ac", ac.detach())
            if use_gan:
                self._note("gen", gen.detach())
            self._note("reconstruction", reconstruction.detach())
            synthesis = None
        else:
            sequence = batch[:, 2:]
            n = sequence.shape[1]
            first = sequence[:, 0:1].contiguous(memory_format=memory_format)
            last = sequence[:, n - 1:n].contiguous(memory_format=memory_format)
            inner = torch.arange(1, n - 1, device=device)
            alpha = (inner.float() / (n - 1)).repeat(b)
            pair_index = torch.arange(b, device=device).repeat_interleave(n - 2)
            _, synth = step_module(first, last, alpha, pair_index, False)
            target = sequence[:, 1:n - 1].reshape(b * (n - 2), 1, *sequence.shape[-2:])
            synthesis = self.content(synth.float(), target)
            total = o.sequence_weight * synthesis
            reconstruction = zero
            self._note("sequence", synthesis.detach())
        if not bool(torch.isfinite(total)):
            return {"total": total.detach(), "reconstruction": reconstruction.detach(),
                    "synthesis": None if synthesis is None else synthesis.detach()}, b
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        self.steps_done[kind] += 1
        return {"total": total.detach(), "reconstruction": reconstruction.detach(),
                "synthesis": None if synthesis is None else synthesis.detach()}, b

    def epoch_record(self) -> dict[str, Any]:
        """Means of this epoch's step losses (``train_hrinet_*``) and the step counts; resets the sums."""
        record = {f"train_hrinet_{k}": self._sums[k] / max(self._counts[k], 1) for k in sorted(self._sums)}
        record["hrinet_steps_I"] = int(self.steps_done["I"])
        record["hrinet_steps_II"] = int(self.steps_done["II"])
        self._sums, self._counts = {}, {}
        return record

    # ---- validation -----------------------------------------------------------
    @torch.no_grad()
    def validate(self, model: HRINet) -> dict[str, float | None]:
        """Reconstruction and synthesis PSNR/SSIM on real slices of the validation volumes, whole slices
        (edge-padded like the engine), in [0, 1]: the middle slice reconstructed (``val_rec_*``) and
        synthesised at alpha 0.5 from its neighbours ``s`` slices away (``s = 2`` on fine volumes: a gap of
        4, as K = 4 fills; 1 on anisotropic stacks), beside linear and B-spline on the same slices."""
        trainer = self.trainer
        c = trainer.config
        was_training = model.training
        model.eval()
        sums: dict[str, list[torch.Tensor]] = {k: [] for k in ("rec_psnr", "rec_ssim", "syn_psnr", "syn_ssim",
                                                               "lin_psnr", "lin_ssim", "bspline_psnr",
                                                               "bspline_ssim", "loss")}
        chunk = max(1, min(c.batch_size, 8))
        for volume in trainer.validation_volumes:
            s = 2 if is_fine(volume) and volume.n_slices > 8 else 1
            middles = validation_triplets(volume, triplet_stride=s, max_triplets=c.validation_triplets)
            h, w = volume.slice_shape
            for i in range(0, len(middles), chunk):
                mids = middles[i:i + chunk]
                k = len(mids)
                stack = pad_to_multiple(volume.slices[[m - s for m in mids] + [m + s for m in mids] + mids],
                                        self.architecture.size_multiple)
                x = torch.from_numpy(np.ascontiguousarray(stack)).unsqueeze(1).to(trainer.device)
                latents = model.encode(x)
                mixed = mix_latents([z[:k] for z in latents], [z[k:2 * k] for z in latents], 0.5)
                out = model.decode([torch.cat([z[2 * k:], m]) for z, m in zip(latents, mixed)]).float()
                x = x[..., :h, :w]
                out = out[..., :h, :w]
                real, rec, syn = x[2 * k:], out[:k], out[k:]
                spline = torch.from_numpy(np.stack([bspline_anchor(volume.slices, m, s) for m in mids]))
                spline = spline.unsqueeze(1).to(x.device)
                linear = 0.5 * (x[:k] + x[k:2 * k])
                for name, values in (("rec", rec), ("syn", syn), ("lin", linear), ("bspline", spline)):
                    sums[f"{name}_psnr"].append(psnr(values, real, reduction="none").cpu())
                    sums[f"{name}_ssim"].append(ssim(values, real, reduction="none").cpu())
                loss = self.content(rec, real) + self.content(syn, real) if self.distance is not None else \
                    (rec - real).pow(2).mean() + (syn - real).pow(2).mean()
                sums["loss"].append(loss.detach().float().reshape(1).expand(k).cpu())
        if was_training:
            model.train()
        mean = {k: float(torch.cat(v).mean()) for k, v in sums.items() if v}
        return {"val_loss": mean["loss"], "val_rec_psnr": mean["rec_psnr"], "val_rec_ssim": mean["rec_ssim"],
                "val_syn_psnr": mean["syn_psnr"], "val_syn_ssim": mean["syn_ssim"],
                "val_linear_psnr": mean["lin_psnr"], "val_linear_ssim": mean["lin_ssim"],
                "val_bspline_psnr": mean["bspline_psnr"], "val_bspline_ssim": mean["bspline_ssim"]}


# --------------------------------------------------------------------------- command line
#: (flag, option field, parse, help) of ``semantic-interpolation train``'s HRINet options
def _levels(text: str) -> list[int]:
    try:
        return [int(part) for part in str(text).replace(",", " ").split()]
    except ValueError:
        raise InputError(f"expected whole numbers separated by commas, got {text!r}") from None


CLI_OPTIONS = (
    ("--hrinet-network", "network", str, "HRINet network when training from scratch: small (default, CPU-sized: "
     "16-32-64-128-128 mixed at 1/4, 1/8, 1/16) or thesis (7 levels, mixed at 1/16, 1/32, 1/64, 16-8-8 channels)"),
    ("--hrinet-widths", "widths", _levels, "channels per level, full resolution first, e.g. 16,32,64,128,128"),
    ("--hrinet-mixed-levels", "mixed_levels", _levels, "levels whose maps are mixed (0 = full resolution; must "
     "include the coarsest; default the three coarsest), e.g. 1,2,3,4 to try finer scales"),
    ("--hrinet-mix-channels", "mix_channels", _levels, "1x1 bottleneck channels per mixed level (default none)"),
    ("--adversarial-weight", "adversarial_weight", float, "lambda: weight of the ACAI constraint L_ac in step I "
     "(default 0.5, the thesis's)"),
    ("--gan-weight", "gan_weight", float, "beta: weight of the PatchGAN generator loss in step I (default 5e-4)"),
    ("--sequence-weight", "sequence_weight", float, "epsilon: weight of the step-II content loss (default 1)"),
    ("--sequence-length", "sequence_length", int, "n: slices per step-II sequence, endpoints included (default 7)"),
    ("--sequence-stride", "sequence_stride", int, "slices between sequence members on fine volumes (default 1)"),
    ("--content-loss", "content_loss", str, "mse (default), l1, ssim or perceptual (frozen copy of the --init "
     "checkpoint's encoder)"),
    ("--perceptual-level", "perceptual_level", int, "encoder level of the perceptual features (default 3)"),
    ("--critic-updates", "critic_updates", int, "D2 (PatchGAN, WGAN-GP) updates per generator update (default 5)"),
    ("--gradient-penalty", "gradient_penalty", float, "WGAN-GP gradient penalty weight (default 10)"),
    ("--patch-layers", "patch_layers", int, "PatchGAN stride-2 layers: 1, 2, 3, 4 = receptive field 16, 34, 70, "
     "142 px (default 3)"),
    ("--gan-start-step", "gan_start_step", int, "generator steps without the PatchGAN first (default 0)"),
    ("--weight-decay", "weight_decay", float, "Adam weight decay of the generator (default 1e-5)"),
    ("--critic-learning-rate", "critic_learning_rate", float, "learning rate of the critics (default: the run's)"),
)


def add_cli_options(parser: Any) -> None:
    """Add the HRINet options (an argument group) to the ``train`` parser."""
    group = parser.add_argument_group("HRINet (--model-type hrinet; thesis defaults, use --learning-rate 1e-4 "
                                      "for the thesis's rate)")
    for flag, name, parse, text in CLI_OPTIONS:
        group.add_argument(flag, dest=f"hrinet_{name}", type=str if parse is _levels else parse, help=text,
                           metavar=name.split("_")[0].upper())


def options_from_args(args: Any) -> dict[str, Any]:
    """The ``model_options`` the parsed HRINet options give (only those given)."""
    options = {}
    for _, name, parse, _ in CLI_OPTIONS:
        value = getattr(args, f"hrinet_{name}", None)
        if value is not None:
            options[name] = parse(value) if parse is _levels else value
    return options

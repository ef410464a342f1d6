"""Training of Xuan et al.'s slice VAE (model type ``"xuan-vae"``): the losses of eq. 4-11 and their schedule.

The :class:`~.trainer.Trainer` runs it through a hook (:class:`XuanTrainingHook`, named by
``XuanVAE.training_hook``): the trainer keeps data, resume, best checkpoint, log, progress, cancel,
validation and torchrun; the hook gives the losses of each step, trains the critic and keeps the
critic and its optimiser in the resumable training state (never in the inference checkpoint).

Batches are the trainer's slice triplets ``[B, 3, P, P]`` (``x_{n-s}``, ``x_n``, ``x_{n+s}``, in
[0, 1] units). Per step, with the weights ``(alpha, beta, gamma, eta)`` of the current phase:

* ``L_center = mean |x_n - D(z_n)|`` (L1 fidelity, mean over pixels), ``z_n`` drawn from ``q(z|x_n)``
  with the reparameterisation;
* ``L_prior = KL(q(z|x_n) || N(0, I))`` (eq. 5), the closed form
  ``0.5 (mu^2 + sigma^2 - log sigma^2 - 1)``, **averaged** over latent elements and the batch (a
  spatial latent has thousands of elements; a sum would scale the weight with the slice size);
* ``L_comp = KL(q_n || q_{n+1}) + KL(q_n || q_{n-1})`` (eq. 8), KL of diagonal Gaussians
  ``0.5 (log s2^2/s1^2 + (s1^2 + (m1 - m2)^2) / s2^2 - 1)``, averaged the same way;
* ``L_adv = -H(D(z_n)) + H(x_n)`` (eq. 7) with the Wasserstein critic ``H``
  (:class:`~..models.xuan_vae.XuanCritic`). The critic maximises it (one Adam step per step on
  ``H(fake) - H(real)``, before the VAE's step); the decoder minimises ``-H(D(z))``; the encoder is
  trained with ``beta = 0`` (eq. 10): the adversarial term is computed on ``D(z.detach())``, so
  its gradient reaches the decoder only.

Total for the VAE's optimiser (the trainer's): ``alpha L_center + beta L_adv + gamma L_prior + eta L_comp``
(eq. 9-11), divided by the phase's ``alpha`` (option ``divide_by_alpha``, default on). Adam is invariant
to a constant scale of the loss but not to a change of scale during a run: after the warm-up (alpha
10000) its second-moment estimate holds gradients 100 times those of phase 2 (alpha 100) and forgets
them only over thousands of steps (beta2 = 0.999), which the paper's 8e5-step phase absorbs and a
short run does not (measured: L_center stalled at 0.15 after the switch on a real T1). Dividing keeps
the paper's ratios of the weights, which is what Adam's updates depend on. With ``beta = 0`` (warm-up) the critic is neither run nor trained.

Schedule (section 3.1: 1e5 warm-up iterations with (1e4, 0, 1, 0), 8e5 with (100, 1, 0.05, 0),
1.2e6 with (100, 1, 0.05, 0.02)), scaled to the run's step budget (epochs x steps per epoch): phase 1
for the first 1/21 of the steps, phase 2 up to 9/21, phase 3 after. Every number is an option
(``model_options`` of :class:`~.trainer.TrainingConfig`, ``--model-option KEY=VALUE`` on the command
line; see :data:`OPTION_HELP`). Resuming with more epochs stretches the schedule to the new budget.

A KL that becomes NaN or infinite raises :class:`~.trainer.TrainingDiverged` before the step; the
checkpoint of the last completed epoch stays as it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ..errors import InputError
from ..models.normalization import IntensityNormalization

#: (alpha, beta, gamma, eta) of the paper's three phases, and the step fractions where phases 1 and 2 end
PAPER_PHASES = ((1e4, 0.0, 1.0, 0.0), (100.0, 1.0, 0.05, 0.0), (100.0, 1.0, 0.05, 0.02))
PAPER_PHASE_ENDS = (1e5 / 2.1e6, 9e5 / 2.1e6)
PAPER_LEARNING_RATE = 2e-4

OPTION_HELP = {
    "warmup": "alpha,beta,gamma,eta of phase 1 (default 10000,0,1,0)",
    "middle": "alpha,beta,gamma,eta of phase 2 (default 100,1,0.05,0)",
    "final": "alpha,beta,gamma,eta of phase 3 (default 100,1,0.05,0.02)",
    "phase_ends": "step fractions where phases 1 and 2 end (default 0.0476,0.4286 = 1e5 and 9e5 of 2.1e6)",
    "critic_learning_rate": "Adam learning rate of the critic (default 2e-4, the paper's)",
    "critic_widths": "channels of the critic's stride-2 blocks (default 32,64,128)",
    "normalization": "network from scratch: instance (the paper's, default) or none (no normalisation layers)",
    "divide_by_alpha": "1 (default): the total is divided by the phase's alpha, so Adam's step size does not "
                       "collapse when alpha drops from 10000 to 100; 0: the paper's raw sum",
}


@dataclass(frozen=True)
class LossWeights:
    """``(alpha, beta, gamma, eta)`` of eq. 9 and the phase (1..3) they belong to."""

    alpha: float
    beta: float
    gamma: float
    eta: float
    phase: int = 0


def _numbers(value: Any, count: int | None, key: str) -> tuple[float, ...]:
    if isinstance(value, str):
        parts = [p for p in value.replace(";", ",").split(",") if p.strip()]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value]
    try:
        numbers = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise InputError(f"xuan-vae option {key}={value!r}: expected comma-separated numbers") from None
    if count is not None and len(numbers) != count:
        raise InputError(f"xuan-vae option {key}={value!r}: expected {count} numbers, got {len(numbers)}")
    if not all(math.isfinite(n) and n >= 0 for n in numbers):
        raise InputError(f"xuan-vae option {key}={value!r}: the numbers must be finite and >= 0")
    return numbers


@dataclass(frozen=True)
class XuanSchedule:
    """The three phases of (alpha, beta, gamma, eta), scaled to a step budget."""

    phases: tuple[tuple[float, float, float, float], ...] = PAPER_PHASES
    phase_ends: tuple[float, float] = PAPER_PHASE_ENDS

    def __post_init__(self) -> None:
        first, second = self.phase_ends
        if not 0.0 <= first <= second <= 1.0:
            raise InputError(f"xuan-vae phase ends must satisfy 0 <= first <= second <= 1, got {self.phase_ends}")

    def weights(self, step: int, total_steps: int) -> LossWeights:
        """The weights for 0-based ``step`` of a run of ``total_steps`` steps."""
        fraction = step / max(int(total_steps), 1)
        phase = 0 if fraction < self.phase_ends[0] else 1 if fraction < self.phase_ends[1] else 2
        return LossWeights(*self.phases[phase], phase=phase + 1)

    def boundaries(self, total_steps: int) -> tuple[int, int]:
        """First steps of phases 2 and 3 for ``total_steps``."""
        return tuple(int(math.ceil(f * total_steps - 1e-9)) for f in self.phase_ends)  # type: ignore[return-value]


@dataclass(frozen=True)
class XuanOptions:
    """The hook's settings, parsed from ``TrainingConfig.model_options``."""

    schedule: XuanSchedule = field(default_factory=XuanSchedule)
    critic_learning_rate: float = PAPER_LEARNING_RATE
    critic_widths: tuple[int, ...] = (32, 64, 128)
    divide_by_alpha: bool = True

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None) -> "XuanOptions":
        options = dict(options or {})
        unknown = sorted(set(options) - set(OPTION_HELP))
        if unknown:
            raise InputError(f"unknown xuan-vae option(s) {', '.join(unknown)}: known are "
                             + "; ".join(f"{k} ({v})" for k, v in OPTION_HELP.items()))
        phases = tuple(_numbers(options[k], 4, k) if k in options else default
                       for k, default in zip(("warmup", "middle", "final"), PAPER_PHASES))
        ends = _numbers(options["phase_ends"], 2, "phase_ends") if "phase_ends" in options else PAPER_PHASE_ENDS
        lr = _numbers(options.get("critic_learning_rate", PAPER_LEARNING_RATE), 1, "critic_learning_rate")[0]
        if not 0 < lr < 1:
            raise InputError(f"xuan-vae option critic_learning_rate must be between 0 and 1, got {lr}")
        widths = options.get("critic_widths", (32, 64, 128))
        widths = tuple(int(w) for w in _numbers(widths, None, "critic_widths"))
        if not widths or any(not 1 <= w <= 1024 for w in widths):
            raise InputError(f"xuan-vae option critic_widths must be whole numbers from 1 to 1024, got {widths}")
        divide = str(options.get("divide_by_alpha", "1")).strip().lower()
        if divide not in ("0", "1", "true", "false"):
            raise InputError(f"xuan-vae option divide_by_alpha must be 0 or 1, got {options['divide_by_alpha']!r}")
        return cls(XuanSchedule(phases, (float(ends[0]), float(ends[1]))), float(lr), widths,
                   divide in ("1", "true"))


# --------------------------------------------------------------------------- the losses
def kl_to_standard_normal(mu: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, sigma^2) || N(0, 1))`` per element, averaged over all elements (eq. 5)."""
    return 0.5 * (mu.square() + log_variance.exp() - log_variance - 1.0).mean()


def kl_diagonal_gaussians(mu_p: torch.Tensor, log_variance_p: torch.Tensor, mu_q: torch.Tensor,
                          log_variance_q: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu_p, s_p^2) || N(mu_q, s_q^2))`` per element, averaged over all elements (eq. 8's terms)."""
    return 0.5 * (log_variance_q - log_variance_p
                  + (log_variance_p.exp() + (mu_p - mu_q).square()) / log_variance_q.exp() - 1.0).mean()


def compactness_loss(mu: torch.Tensor, log_variance: torch.Tensor, b: int) -> torch.Tensor:
    """``L_comp`` (eq. 8) for posteriors stacked as ``[centre (b), previous (b), next (b)]``."""
    mc, lc = mu[:b], log_variance[:b]
    return (kl_diagonal_gaussians(mc, lc, mu[2 * b:3 * b], log_variance[2 * b:3 * b])
            + kl_diagonal_gaussians(mc, lc, mu[b:2 * b], log_variance[b:2 * b]))


class XuanStep(torch.nn.Module):
    """The VAE's forward pass of one step as a module (so DistributedDataParallel can wrap it).

    ``forward(x, b, adversarial)``: ``x`` = ``[3b, 1, P, P]`` (centres, previous, next). Returns
    ``mu``, ``log sigma^2`` of all 3b slices, the reconstructions of the centres from a drawn ``z``,
    and (``adversarial``) the same decoded from ``z.detach()`` for the decoder's adversarial term.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, b: int, adversarial: bool):
        mu, log_variance = self.model.posterior(x)
        z = self.model.sample(mu[:b], log_variance[:b])
        reconstruction = self.model.decode(z)
        for_critic = self.model.decode(z.detach()) if adversarial else None
        return mu, log_variance, reconstruction, for_critic


class XuanTrainingHook:
    """What the :class:`~.trainer.Trainer` asks of a model type with its own losses (see the module notes)."""

    def __init__(self) -> None:
        self.options: XuanOptions | None = None
        self.critic: torch.nn.Module | None = None
        self.critic_module: torch.nn.Module | None = None
        self.critic_optimizer: torch.optim.Optimizer | None = None
        self.total_steps = 1
        self._sums: dict[str, float] = {}
        self._count = 0

    # ---- preparation (Trainer._prepare)
    def architecture(self, trainer, start) -> tuple[Any, IntensityNormalization]:
        """The network configuration and intensity normalisation of the run; checks the options."""
        from ..models.xuan_vae import XuanVAEConfig

        options = dict(getattr(trainer.config, "model_options", None) or {})
        norm = options.pop("normalization", None)
        self.options = XuanOptions.parse(options)
        if start is not None:
            if norm is not None and norm != start.config.normalization:
                raise InputError(f"the checkpoint's network uses normalization {start.config.normalization!r}; "
                                 f"fine-tuning keeps it: drop the option normalization={norm}")
            return start.config, start.normalization
        if norm is not None and norm not in ("instance", "none"):
            raise InputError(f"xuan-vae option normalization must be instance or none, got {norm!r}")
        config = XuanVAEConfig() if norm is None else XuanVAEConfig(
            normalization=norm, name=f"{XuanVAEConfig.name}{'' if norm == 'instance' else '-nonorm'}")
        return config, IntensityNormalization()

    def describe(self) -> str:
        o = self.options or XuanOptions()
        return (f"xuan-vae losses: phases {o.schedule.phases} ending at {o.schedule.phase_ends} of the steps, "
                f"critic lr {o.critic_learning_rate:g}")

    def step_module(self, model: torch.nn.Module) -> torch.nn.Module:
        return XuanStep(model)

    # ---- start of the run (Trainer._run)
    def start(self, trainer, model: torch.nn.Module, state: Mapping[str, Any] | None) -> None:
        """Build the critic and its optimiser on the trainer's device (restored from ``state`` on resume)."""
        from ..models.xuan_vae import XuanCritic
        from .distributed import wrap_model

        o = self.options or XuanOptions()
        self.total_steps = max(1, int(trainer.config.epochs) * int(trainer.steps_per_epoch))
        self.critic = XuanCritic(o.critic_widths, float(model.config.negative_slope),
                                 bool(model.config.spectral_norm))
        self.critic.reset_parameters(torch.Generator().manual_seed(int(trainer.config.seed) + 1))
        if state:
            self.critic.load_state_dict(state["critic"])
        self.critic.to(trainer.device).train()
        self.critic_module = wrap_model(self.critic, trainer.context, trainer.device)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=o.critic_learning_rate,
                                                 betas=(0.9, 0.999))
        if state and state.get("critic_optimizer"):
            self.critic_optimizer.load_state_dict(state["critic_optimizer"])
            for group in self.critic_optimizer.param_groups:
                group["lr"] = o.critic_learning_rate

    def state_dict(self) -> dict[str, Any]:
        """Critic and critic optimiser, for the resumable training state."""
        return {"critic": {k: v.detach().cpu() for k, v in self.critic.state_dict().items()},
                "critic_optimizer": self.critic_optimizer.state_dict(), "total_steps": self.total_steps}

    # ---- one step
    def losses(self, trainer, step_module: torch.nn.Module, batch: torch.Tensor, global_step: int,
               memory_format: torch.memory_format, amp: bool) -> tuple[dict[str, Any], int]:
        """Train the critic one step (when beta > 0) and return the VAE's losses of eq. 9 and the batch size."""
        from .trainer import TrainingDiverged

        o = self.options or XuanOptions()
        weights = o.schedule.weights(global_step, self.total_steps)
        batch = batch.to(trainer.device, non_blocking=True)
        b = batch.shape[0]
        centre = batch[:, 1:2]
        x = torch.cat([centre, batch[:, 0:1], batch[:, 2:3]]).contiguous(memory_format=memory_format)
        adversarial = weights.beta > 0
        device_type = trainer.device.type
        with torch.autocast(device_type, dtype=trainer.compute_dtype, enabled=amp):
            mu, log_variance, reconstruction, for_critic = step_module(x, b, adversarial)
        mu, log_variance, reconstruction = mu.float(), log_variance.float(), reconstruction.float()
        center = (reconstruction - centre).abs().mean()
        prior = kl_to_standard_normal(mu[:b], log_variance[:b])
        comp = compactness_loss(mu, log_variance, b)
        for name, value in (("prior (KL to N(0, I))", prior.detach()),
                            ("local-linearity (KL between neighbours)", comp.detach())):
            if not bool(torch.isfinite(value)):
                raise TrainingDiverged(
                    f"the VAE's {name} divergence became {float(value)} at step {global_step + 1}: lower the learning "
                    f"rate (now {trainer.config.learning_rate:g}) or the gamma/eta weights; the checkpoint of the "
                    "last completed epoch is kept")
        adv = torch.zeros((), device=center.device)
        critic_loss = None
        if adversarial:
            self.critic.requires_grad_(True)
            with torch.autocast(device_type, dtype=trainer.compute_dtype, enabled=amp):
                scores = self.critic_module(torch.cat([reconstruction.detach(), centre]).contiguous(
                    memory_format=memory_format)).float()
            critic_loss = scores[:b].mean() - scores[b:].mean()  # minimise H(fake) - H(real) = maximise L_adv
            if not bool(torch.isfinite(critic_loss)):
                raise TrainingDiverged(f"the critic's loss became {float(critic_loss.detach())} at step {global_step + 1}: "
                                       "lower critic_learning_rate; the checkpoint of the last completed epoch is kept")
            self.critic_optimizer.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.critic_optimizer.step()
            self.critic.requires_grad_(False)
            with torch.autocast(device_type, dtype=trainer.compute_dtype, enabled=amp):
                fake_score = self.critic(for_critic.contiguous(memory_format=memory_format)).float().mean()
            real_score = scores[b:].mean().detach()
            adv = -fake_score + real_score  # eq. 7; the real term is a constant for the decoder
        total = weights.alpha * center + weights.beta * adv + weights.gamma * prior + weights.eta * comp
        if o.divide_by_alpha and weights.alpha > 0:
            total = total / weights.alpha
        self._accumulate(center=float(center.detach()), prior=float(prior.detach()), comp=float(comp.detach()),
                         adv=float(adv.detach()), critic=float(critic_loss.detach()) if critic_loss is not None else 0.0,
                         phase=float(weights.phase))
        return {"total": total, "reconstruction": center.detach(), "synthesis": None}, b

    def _accumulate(self, **values: float) -> None:
        for key, value in values.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        self._count += 1

    def epoch_record(self) -> dict[str, Any]:
        """Means of the loss terms over the epoch (for the log record), then reset."""
        n = max(self._count, 1)
        record = {f"train_{k}": v / n for k, v in self._sums.items() if k != "phase"}
        if self._count:
            record["train_phase_mean"] = self._sums.get("phase", 0.0) / n
        self._sums, self._count = {}, 0
        return record


class SRGeneratorTrainingHook:
    """The ``train`` command does not train ``sr-generator`` models: it says to use ``train-sr``."""

    message = ("model type sr-generator (Xuan et al.'s stage II) is trained on volumes synthesised by a stage-I model: "
               "use 'semantic-interpolation train-sr SCANS --stage1 CKPT --factor K --output sr.pt'")

    def __init__(self) -> None:  # noqa: D107
        raise InputError(self.message)

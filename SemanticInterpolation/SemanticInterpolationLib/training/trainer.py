"""Training and fine-tuning of the ASI autoencoder (journal paper sections III-D and IV).

Console / Slicer use (no Qt)::

    from SemanticInterpolationLib.training import TrainingConfig, train
    result = train(TrainingConfig(["a.nii.gz", "b.nii.gz"], output="asi-clinic.pt",
                                  validation_volumes=["c.nii.gz"], init="default", epochs=50),
                   progress=print)                       # or progress=None
    result.checkpoint            # the model to use: best on validation, else the last epoch

Every setting is checked, and every volume read, before any work starts (:class:`Trainer`
constructor); problems raise :class:`~SemanticInterpolationLib.errors.SemanticInterpolationError`
subclasses with the fix in the message.

Files written (rank 0 only, all atomically: write then rename):

* ``output``: the latest completed epoch, with the optimiser, step, epoch and random-number state in
  its ``extra_state`` so that ``resume=True`` continues exactly (bit-identical on the CPU);
* ``output`` with suffix ``.best.pt`` (:func:`default_best_path`): the epoch with the best validation
  score (``best_metric``), written only when validation volumes are given;
* ``output`` with suffix ``.log.jsonl`` (:func:`default_log_path`): one JSON object per line, flushed
  at once, for GUIs to poll (see :func:`read_training_log`): ``{"event": "start", ...}``, then
  ``"progress"`` (at most every ``progress_interval_s`` seconds), ``"epoch"`` (losses and validation
  metrics of each epoch), and ``"end"`` (``status``: ``finished``, ``cancelled`` or ``failed``).

Both checkpoints load with :func:`~SemanticInterpolationLib.models.checkpoint.load_checkpoint` and work with
:class:`~SemanticInterpolationLib.engine.ASIEngine` at once; they record the in-plane spacing of the
training data (median over the volumes) and the training settings.

Cancel: ``should_cancel()`` is polled after every optimisation step; when it returns True training
stops after that step, nothing more is written, and the files of the last completed epoch stay intact
(the unfinished epoch is lost; ``resume=True`` repeats it).

Model types (``model_type``, see :mod:`..models.registry`): ``"asi"`` (default) trains the ASI
autoencoder on slice triplets (eq. 3); ``"pair-unet"`` trains the pair U-Net to predict a slice
from two slices ``g`` apart and alpha (:class:`.data.GapDataset`, gaps ``2..max_gap`` on fine
volumes), with the synthesis loss only (``lam`` and ``synthesis_target`` do not apply). A type whose
network class names a ``training_procedure`` (``"hrinet"``: :mod:`.hrinet`, critics and alternating
steps) brings its own data, optimisers, steps, validation and extra training state, with its options in
``model_options``; the loop, logging, checkpoints, resume and cancel stay the trainer's. Fine-tuning
and resuming keep the checkpoint's model type; a checkpoint of another type than ``model_type`` is
refused before any work.

Architecture rule for ``init`` (fine-tuning): the network is the init checkpoint's. ``architecture``
(``"journal"`` or ``"spie"``) may be given as well only if it names the same network; an init
checkpoint of another architecture is refused before any work. Without ``init`` the network is
``architecture`` (default ``"journal"``), trained from scratch.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..models.checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint, save_checkpoint
from ..engine.devices import describe_device, resolve_device, resolve_precision
from ..errors import CheckpointError, InputError, SemanticInterpolationError
from ..volumes.fileio import atomic_output, check_writable_destination
from ..models.asi import ASIAutoencoder, AutoencoderConfig
from ..models.normalization import IntensityNormalization
from ..models.registry import DEFAULT_MODEL_TYPE, get_model_type, model_type_names
from .data import (Augmentation, GapDataset, TrainingVolume, TripletDataset, TripletSampler, blur_slices,
                   bspline_anchor, is_fine, pad_to_multiple,
                   validate_patch_size, validation_triplets)
from .distributed import DistributedContext, init_distributed, process_device, shutdown, wrap_model
from .losses import SYNTHESIS_LOSSES, ASILoss, make_synthesis_distance, psnr, ssim

logger = logging.getLogger("SemanticInterpolation")

ARCHITECTURES = {"journal": AutoencoderConfig.journal, "spie": AutoencoderConfig.spie}
BEST_METRICS = {  # name -> True when larger is better
    "val_syn_psnr": True, "val_syn_ssim": True, "val_rec_psnr": True, "val_rec_ssim": True, "val_loss": False,
    # pair networks with a slice-profile input: the mean of the thin and the thick-slice synthesis PSNR, and the
    # thick one alone (a network meant for thick slices, such as a profile-routed model's thick network)
    "val_thin_thick_psnr": True, "val_thick_syn_psnr": True,
}
#: ``best_metric="auto"``: the metric each model type is selected by when none is named (others: val_syn_psnr).
#: A profile-routed model holds a thin- and a thick-slice network, so both must count.
AUTO_BEST_METRIC = {"profile-routed": "val_thin_thick_psnr"}
TRAINING_STATE_VERSION = 1

#: Adam learning rate used when none is given. The paper's 1e-5 suits its 900-1300 epochs on a GPU;
#: a clinic fine-tuning on a few scans for tens of epochs, often on a CPU, would see little change.
#: Measured here (journal network from scratch, real 2 mm T1, patch 32, batch 8, 90 steps): training
#: loss 0.056 with 1e-5, 0.032 with 1e-4, 0.026 with 3e-4 and 0.025 with 1e-3. 3e-4 is almost as fast
#: as 1e-3 and, being smaller, less likely to undo a pre-trained model in the first steps of fine-tuning
#: (a judgement, not a measurement). Lower it (e.g. 1e-4) if the loss jumps or becomes NaN.
DEFAULT_LEARNING_RATE = 3e-4
DEFAULT_SYNTHESIS_LOSS = "ssim"
DEFAULT_LAMBDA = 0.05


SYNTHESIS_TARGETS = ("decoded", "residual", "residual-bspline")
#: the engine mode (``SemanticInterpolationLib.engine.SYNTHESIS_MODES``) each synthesis target trains
INFERENCE_MODE_OF_TARGET = {"decoded": "plain", "residual": "residual", "residual-bspline": "residual-bspline"}


def residual_synthesis(first: torch.Tensor, second: torch.Tensor, first_reconstruction: torch.Tensor,
                       second_reconstruction: torch.Tensor, decoded_mix: torch.Tensor,
                       anchor: torch.Tensor | None = None) -> torch.Tensor:
    """The engine's residual synthesis at alpha = 0.5 (see :mod:`..engine`), in [0, 1] units.

    ``anchor``: the interpolation the learned correction is added to; None = the linear mix of
    ``first`` and ``second`` (engine mode ``residual``); the B-spline anchor from
    :func:`.data.bspline_anchor` gives mode ``residual-bspline``.
    """
    if anchor is None:
        anchor = 0.5 * (first + second)
    return anchor + decoded_mix - 0.5 * (first_reconstruction + second_reconstruction)


def resolve_synthesis_target(target: str, start: Checkpoint | None) -> str:
    """The synthesis target a run trains: ``target``, or for ``"auto"`` the one matching the inference
    mode the starting checkpoint recommends (fine-tuning keeps the mode the model was made for: the
    bundled model's ``residual-bspline``), else ``"decoded"`` (the paper's)."""
    if target != "auto":
        return target
    recommended = None
    if start is not None:
        recommended = ((start.metadata or {}).get("inference") or {}).get("synthesis")
    for name, mode in INFERENCE_MODE_OF_TARGET.items():
        if mode == recommended:
            return name
    return "decoded"


class TrainingDiverged(SemanticInterpolationError):
    """The loss became NaN or infinite (usually: the learning rate is too high)."""


def default_best_path(output: str | os.PathLike) -> Path:
    """``model.pt`` -> ``model.best.pt`` (the best epoch on the validation volumes)."""
    return Path(output).expanduser().absolute().with_suffix(".best.pt")


def default_log_path(output: str | os.PathLike) -> Path:
    """``model.pt`` -> ``model.log.jsonl`` (the machine-readable training log)."""
    return Path(output).expanduser().absolute().with_suffix(".log.jsonl")


def _event_of(line: str) -> Any:
    try:
        return json.loads(line).get("event")
    except (ValueError, AttributeError):
        return None


def _keep_last_run_of_log(path: Path) -> None:
    """Rewrite the log (atomically) with only the records from its last ``start`` on: a new run that has
    written its first checkpoint replaces the earlier run's log."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.endswith("\n") and _event_of(line) == "start"]
    if starts and starts[-1] > 0:
        with atomic_output(path) as temporary:
            temporary.write_text("".join(lines[starts[-1]:]), encoding="utf-8")


def read_training_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a training log written so far (a GUI polls this while training runs).

    Incomplete last lines (being written) are skipped. Filter by ``record["event"]``:
    ``"start"``, ``"progress"``, ``"epoch"``, ``"end"``.
    """
    records = []
    try:
        with open(path, "r", encoding="utf-8") as handle:
            for line in handle:
                if not line.endswith("\n"):
                    break
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        return []
    return records


# --------------------------------------------------------------------------- settings
@dataclass
class TrainingConfig:
    """All settings of a training run (the CLI options map one to one onto these fields).

    ``training_volumes`` / ``validation_volumes``: paths (files or DICOM folders), SimpleITK images
    or :class:`~.data.TrainingVolume` objects. ``init``: checkpoint to fine-tune (path, ``"default"``
    for the bundled model, or None to train from scratch). ``batch_size`` is per process.
    ``steps_per_epoch``: None = one pass over all triplets (the paper's epoch).
    ``lam``: the paper's lambda (weight of the synthesis loss, >= 0; 0 = reconstruction only).
    ``synthesis_target``: what the synthesis loss compares with the real middle slice: ``"decoded"``
    (the paper: the decoded alpha=0.5 latent mix), ``"residual"`` (the engine's residual mode:
    the mean of the two neighbours plus the decoded mix minus the mean of their reconstructions)
    or ``"residual-bspline"`` (the same correction added to the cubic B-spline interpolation of the
    volume thinned to every second slice of the triplet lattice). The residual targets train exactly
    what that inference mode outputs; the checkpoint then recommends the mode. ``"auto"`` (default):
    the target matching the mode the ``init``/resumed checkpoint recommends, else ``"decoded"``.
    """

    training_volumes: Sequence[Any]
    output: str | os.PathLike
    validation_volumes: Sequence[Any] = ()
    model_type: str | None = None
    max_gap: int = 6
    init: str | os.PathLike | None = None
    resume: bool = False
    architecture: str | None = None
    epochs: int = 100
    steps_per_epoch: int | None = None
    batch_size: int = 12
    patch_size: int = 128
    learning_rate: float = DEFAULT_LEARNING_RATE
    synthesis_loss: str = DEFAULT_SYNTHESIS_LOSS
    synthesis_target: str = "auto"
    lam: float = DEFAULT_LAMBDA
    triplet_stride: int = 1
    slice_axis: int | str = "auto"
    augment: bool = True
    noise_std: float = 0.0
    thick_slice_probability: float = 0.0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    num_workers: int = 0
    #: pair-unet: hold the slices on the device and draw whole batches there (:mod:`.device_sampler`), no DataLoader
    data_on_device: bool = False
    validation_triplets: int | None = 16
    #: validation score that picks the best epoch (:data:`BEST_METRICS`), or "auto" (:data:`AUTO_BEST_METRIC`)
    best_metric: str = "auto"
    best_output: str | os.PathLike | None = None
    log_path: str | os.PathLike | None = None
    progress_interval_s: float = 2.0
    #: options of a model type's own training (hrinet: see ``training.hrinet.HRINetOptions``; xuan-vae: see
    #: ``training/xuan.py``), KEY -> value
    model_options: dict[str, Any] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        """The settings as plain data (volumes by name), as stored in checkpoints and the log."""
        def name(v: Any) -> str:
            return v.name if isinstance(v, TrainingVolume) else str(v)

        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["training_volumes"] = [name(v) for v in self.training_volumes]
        d["validation_volumes"] = [name(v) for v in self.validation_volumes]
        for key in ("output", "init", "best_output", "log_path"):
            d[key] = None if d[key] is None else str(d[key])
        d["lambda"] = d.pop("lam")
        return d

    def to_cli_args(self) -> list[str]:
        """Arguments for ``semantic-interpolation train`` (or ``python -m SemanticInterpolationLib.cli.train``)
        that reproduce this configuration; volumes must be paths. For GUIs that train in a background
        process."""
        args = [str(v) for v in self.training_volumes]
        args += ["--output", str(self.output)]
        if self.validation_volumes:
            args += ["--validation", *[str(v) for v in self.validation_volumes]]
        if self.init is not None:
            args += ["--init", str(self.init)]
        if self.resume:
            args.append("--resume")
        if self.architecture:
            args += ["--architecture", str(self.architecture)]
        if self.model_type is not None:
            args += ["--model-type", str(self.model_type)]
        if self.max_gap != 6:
            args += ["--max-gap", str(self.max_gap)]
        args += ["--epochs", str(self.epochs), "--batch-size", str(self.batch_size),
                 "--patch-size", str(self.patch_size), "--learning-rate", repr(float(self.learning_rate)),
                 "--synthesis-loss", str(self.synthesis_loss), "--lambda", repr(float(self.lam)),
                 "--synthesis-target", str(self.synthesis_target),
                 "--triplet-stride", str(self.triplet_stride), "--slice-axis", str(self.slice_axis),
                 "--seed", str(self.seed), "--device", str(self.device), "--precision", str(self.precision),
                 "--workers", str(self.num_workers), "--best-metric", self.best_metric]
        if self.steps_per_epoch:
            args += ["--steps-per-epoch", str(self.steps_per_epoch)]
        if self.validation_triplets is not None:
            args += ["--validation-triplets", str(self.validation_triplets)]
        if not self.augment:
            args.append("--no-augment")
        if self.data_on_device:
            args.append("--data-on-device")
        if self.noise_std:
            args += ["--noise-std", repr(float(self.noise_std))]
        if self.thick_slice_probability:
            args += ["--thick-slice-probability", repr(float(self.thick_slice_probability))]
        if self.best_output is not None:
            args += ["--best-output", str(self.best_output)]
        if self.log_path is not None:
            args += ["--log", str(self.log_path)]
        for key, value in sorted((self.model_options or {}).items()):
            args += ["--model-option", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
        return args


@dataclass
class TrainingProgress:
    """What a progress callback receives (after every step, and at the end of each epoch).

    ``phase``: ``"train"`` (after a step), ``"validate"`` (validation starts), ``"epoch"`` (the epoch
    is complete; ``record`` holds its log record).
    """

    phase: str
    epoch: int  # 1-based number of the current epoch
    epochs: int
    step: int  # steps done in this epoch
    steps: int  # steps per epoch
    global_step: int
    loss: float | None  # running mean of the total loss in this epoch
    triplets_per_second: float
    elapsed_s: float
    record: dict[str, Any] | None = None

    @property
    def fraction(self) -> float:
        """Share of the whole run done, 0..1."""
        total = self.epochs * max(self.steps, 1)
        return min(1.0, ((self.epoch - 1) * self.steps + self.step) / total) if total else 1.0

    def __str__(self) -> str:
        loss = "-" if self.loss is None else f"{self.loss:.5f}"
        return (f"epoch {self.epoch}/{self.epochs} step {self.step}/{self.steps} loss {loss} "
                f"({self.triplets_per_second:.1f} triplets/s)")


@dataclass
class TrainingResult:
    """Outcome of :func:`train`."""

    status: str  # "finished" or "cancelled"
    output: Path | None  # the latest completed epoch (None when no epoch completed and none existed)
    best_output: Path | None  # best epoch on validation (None without validation)
    epochs_done: int
    global_step: int
    history: list[dict[str, Any]]
    log_path: Path

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"

    @property
    def checkpoint(self) -> Path | None:
        """The checkpoint to use for upsampling: the best on validation, else the latest."""
        if self.best_output is not None and self.best_output.is_file():
            return self.best_output
        return self.output


ProgressCallback = Callable[[TrainingProgress], None]
CancelCallback = Callable[[], bool]


# --------------------------------------------------------------------------- network step
class _TripletStep(torch.nn.Module):
    """One forward pass of eq. 3 as a module, so that DistributedDataParallel can wrap it.

    ``forward(outer)``: ``outer`` = ``[2B, 1, P, P]`` (the B previous slices, then the B next ones).
    Returns the reconstructions ``[2B, 1, P, P]`` and, with ``synthesize``, the decodings of the
    alpha=0.5 latent mixes ``[B, 1, P, P]`` (one decoder call for both).
    """

    def __init__(self, model: ASIAutoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, outer: torch.Tensor, synthesize: bool = True):
        z = self.model.encode(outer)
        if not synthesize:
            return self.model.decode(z), None
        b = outer.shape[0] // 2
        mixed = ASIAutoencoder.mix(z[:b], z[b:], 0.5)
        decoded = self.model.decode(torch.cat([z, mixed]))
        return decoded[:2 * b], decoded[2 * b:]


class _PairStep(torch.nn.Module):
    """The pair network's forward pass as a module, so that DistributedDataParallel can wrap it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, first: torch.Tensor, second: torch.Tensor, alpha: torch.Tensor,
                anchor: torch.Tensor | None = None, thickness: torch.Tensor | None = None) -> torch.Tensor:
        if thickness is None:
            return self.model(first, second, alpha, anchor)
        return self.model(first, second, alpha, anchor, thickness)


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    np_state = np.random.get_state()
    state["numpy"] = {"keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}
    py = random.getstate()
    state["python"] = {"version": py[0], "state": list(py[1]), "gauss": py[2]}
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):
            pass
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "python" in state:
        p = state["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def training_hook(model_type) -> Any:
    """The training hook of a model type with its own losses (its network class names one as
    ``training_hook = "module:Class"``, a module of this package), else None."""
    spec = getattr(model_type.model_class, "training_hook", None)
    if not spec:
        return None
    module, _, name = str(spec).partition(":")
    return getattr(importlib.import_module(f".{module}", __package__), name)()


# --------------------------------------------------------------------------- trainer
class Trainer:
    """Checks a :class:`TrainingConfig` and prepares everything (constructor), then trains (:meth:`run`).

    The constructor reads and checks all volumes, the init/resume checkpoint, the output paths, the
    device and the synthesis loss (lpips availability): every user error surfaces here, before any
    training step.
    """

    def __init__(self, config: TrainingConfig, *, context: DistributedContext | None = None) -> None:
        self.config = config
        c = config
        self._thick_copies: dict[tuple[int, int], np.ndarray] = {}  # validation volumes blurred for thick scores
        # ---- plain settings
        if isinstance(c.lam, bool) or not isinstance(c.lam, (int, float)) or not math.isfinite(float(c.lam)) or c.lam < 0:
            raise InputError(f"lambda (weight of the synthesis loss) must be a number >= 0, got {c.lam!r}; "
                             "0 trains with the reconstruction loss only (the paper's ASI_lambda=0)")
        for label, value, minimum in (("epochs", c.epochs, 1), ("batch size", c.batch_size, 1),
                                      ("triplet stride", c.triplet_stride, 1), ("workers", c.num_workers, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise InputError(f"{label} must be a whole number >= {minimum}, got {value!r}")
        if c.steps_per_epoch is not None and (not isinstance(c.steps_per_epoch, (int, np.integer))
                                              or isinstance(c.steps_per_epoch, bool) or c.steps_per_epoch < 1):
            raise InputError(f"steps per epoch must be a whole number >= 1, got {c.steps_per_epoch!r}")
        if not isinstance(c.learning_rate, (int, float)) or not (0 < float(c.learning_rate) < 1):
            raise InputError(f"learning rate must be a number between 0 and 1, got {c.learning_rate!r} "
                             f"(default {DEFAULT_LEARNING_RATE:g}; the paper used 1e-5)")
        if str(c.synthesis_loss).lower() not in SYNTHESIS_LOSSES:
            raise InputError(f"unknown synthesis loss {c.synthesis_loss!r}: use one of {', '.join(SYNTHESIS_LOSSES)}")
        if c.synthesis_target != "auto" and c.synthesis_target not in SYNTHESIS_TARGETS:
            raise InputError(f"unknown synthesis target {c.synthesis_target!r}: use auto or one of "
                             f"{', '.join(SYNTHESIS_TARGETS)}")
        if (isinstance(c.noise_std, bool) or not isinstance(c.noise_std, (int, float))
                or not 0.0 <= float(c.noise_std) <= 0.5):
            raise InputError(f"noise std must be a number from 0 to 0.5 (a fraction of the intensity range), got "
                             f"{c.noise_std!r}; 0 adds no noise")
        if (isinstance(c.thick_slice_probability, bool) or not isinstance(c.thick_slice_probability, (int, float))
                or not 0.0 <= float(c.thick_slice_probability) <= 1.0):
            raise InputError(f"thick-slice probability must be a number from 0 to 1, got {c.thick_slice_probability!r}")
        if c.noise_std and not c.augment:
            raise InputError("noise augmentation (--noise-std) needs augmentation: drop --no-augment or --noise-std")
        if c.best_metric != "auto" and c.best_metric not in BEST_METRICS:
            raise InputError(f"unknown best metric {c.best_metric!r}: use one of {', '.join(BEST_METRICS)} (or auto)")
        if c.architecture is not None and str(c.architecture).lower() not in ARCHITECTURES:
            raise InputError(f"unknown architecture {c.architecture!r}: use one of {', '.join(ARCHITECTURES)}")
        if c.validation_triplets is not None and c.validation_triplets < 1:
            raise InputError(f"validation triplets must be >= 1 (or None for all), got {c.validation_triplets!r}")
        if c.model_type is not None and c.model_type not in model_type_names():
            raise InputError(f"unknown model type {c.model_type!r}: use one of {', '.join(model_type_names())}")
        if c.model_type not in (None, "asi") and c.architecture is not None:
            raise InputError(f"--architecture names ASI networks; it does not apply to model type {c.model_type!r}")
        if isinstance(c.max_gap, bool) or not isinstance(c.max_gap, (int, np.integer)) or not 2 <= c.max_gap <= 32:
            raise InputError(f"max gap must be a whole number from 2 to 32, got {c.max_gap!r}")
        if not c.training_volumes:
            raise InputError("give at least one training volume")
        if c.resume and c.init is not None:
            raise InputError("give either --resume (continue the run in --output) or --init (start a new run from "
                             "a checkpoint), not both")

        # ---- outputs: writable before any work
        self.output = check_writable_destination(c.output)
        self.best_output = (check_writable_destination(c.best_output) if c.best_output is not None
                            else check_writable_destination(default_best_path(self.output)))
        self.log_path = (check_writable_destination(c.log_path) if c.log_path is not None
                         else check_writable_destination(default_log_path(self.output)))
        if len({self.output, self.best_output, self.log_path}) < 3:
            raise InputError("the output checkpoint, the best checkpoint and the log must be three different files")
        for volume in [*c.training_volumes, *c.validation_volumes]:  # never overwrite an input volume
            if isinstance(volume, (str, os.PathLike)):
                source = Path(volume).expanduser().absolute()
                for label, written in (("--output", self.output), ("--best-output", self.best_output),
                                       ("--log", self.log_path)):
                    if written == source or (source.is_dir() and source in written.parents):
                        raise InputError(f"{label} {str(written)!r} would overwrite the training or validation "
                                         f"volume {str(volume)!r}: write the checkpoint, best checkpoint and log "
                                         "elsewhere")

        # ---- device, distributed
        self.context = context if context is not None else init_distributed(resolve_device(c.device))
        self._owns_context = context is None
        try:
            self._prepare()
        except BaseException:
            self.close()  # a bad setting must not leave this process in a process group
            raise

    def close(self) -> None:
        """Leave the process group this trainer joined (nothing for a single process). :meth:`run`
        calls it when it ends; call it yourself for a trainer that is never run."""
        if self._owns_context:
            self._owns_context = False
            shutdown(self.context)

    def _prepare(self) -> None:
        """Everything after the device and process group: start checkpoint, data, loss."""
        c = self.config
        self.device = process_device(resolve_device(c.device), self.context)
        self.compute_dtype = resolve_precision(self.device, c.precision)
        if self.compute_dtype != torch.float32 and self.device.type == "cpu":
            raise InputError("mixed precision training is for GPUs; on the CPU use --precision float32 (or auto)")

        # ---- starting point: resume state, init checkpoint or scratch
        self.resume_state: dict[str, Any] | None = None
        start: Checkpoint | None = None
        self.init_description = "scratch"
        if c.resume:
            if not self.output.is_file():
                raise InputError(f"nothing to resume: {str(self.output)!r} does not exist; start without --resume")
            start = load_checkpoint(self.output)
            state = start.extra_state.get("training_state")
            if not isinstance(state, dict) or state.get("version") != TRAINING_STATE_VERSION:
                raise CheckpointError(f"{str(self.output)!r} holds no resumable training state (e.g. it is a "
                                      "'.best.pt' file or was not written by the train command); use it with --init")
            if state["epochs_done"] >= c.epochs:
                raise InputError(f"{str(self.output)!r} has already been trained for {state['epochs_done']} epochs; "
                                 f"give --epochs larger than that to continue")
            self.resume_state = state
            self.init_description = f"resumed from {self.output} (epoch {state['epochs_done']})"
        elif c.init is not None:
            start = resolve_checkpoint(None if str(c.init).lower() == "default" else c.init)
            self.init_description = f"fine-tuned from {start.path}"
        if start is not None and c.model_type is not None and start.model_type != c.model_type:
            raise CheckpointError(
                f"the {'resumed' if c.resume else 'init'} checkpoint {start.path!r} is a {start.model_type} model, "
                f"but model type {c.model_type!r} was asked for: one run trains one model type. Give "
                f"--model-type {start.model_type} to fine-tune it, or drop --init to train a {c.model_type} model")
        self.model_type = get_model_type(c.model_type or (start.model_type if start is not None else DEFAULT_MODEL_TYPE))
        # a model type with its own training names it on its network class as "module:Class": a training procedure
        # (its own updates: critics, several optimisers; hrinet) or a training hook (its own losses; xuan-vae)
        procedure = getattr(self.model_type.model_class, "training_procedure", None)
        self.procedure = None
        if procedure:
            module, name = procedure.split(":")
            self.procedure = getattr(importlib.import_module(f".{module}", __package__), name)(self, start)
        self.hook = training_hook(self.model_type) if self.procedure is None else None
        if c.model_options and self.procedure is None and self.hook is None:
            raise InputError(f"model options {sorted(c.model_options)} do not apply to model type {self.model_type.name!r}")
        self.pair_model = self.model_type.name != "asi" and self.hook is None
        if c.best_metric == "auto":  # resolved once here; the caller's settings object is left as it is
            resolved = AUTO_BEST_METRIC.get(self.model_type.name, "val_syn_psnr") if self.procedure is None \
                else "val_syn_psnr"
            self.config = c = dataclasses.replace(c, best_metric=resolved)
        if c.best_metric == "val_thin_thick_psnr" and (not self.pair_model or self.procedure is not None):
            raise InputError(f"best metric val_thin_thick_psnr scores pair networks (pair-unet, profile-routed); model "
                             f"type {self.model_type.name!r} has no thick-slice score: use val_syn_psnr")
        if self.hook is not None:
            self.architecture, self.normalization = self.hook.architecture(self, start)
        elif self.pair_model:
            self.architecture = start.config if start is not None else self.model_type.config_class()
            if self.procedure is not None:
                self.architecture = self.procedure.architecture
            # no clipping: the pair network's output is not bounded, and the brightest 1 % must survive
            self.normalization = start.normalization if start is not None else IntensityNormalization(clip=False)
        elif start is not None:
            if c.architecture is not None:
                wanted = ARCHITECTURES[str(c.architecture).lower()]()
                if wanted != start.config:
                    raise CheckpointError(
                        f"the {'resumed' if c.resume else 'init'} checkpoint {start.path!r} holds the "
                        f"'{start.config.name}' network, but architecture '{c.architecture}' ({wanted.name}) was "
                        "requested. Fine-tuning keeps the checkpoint's network: drop --architecture to fine-tune "
                        f"'{start.config.name}', or drop --init to train '{wanted.name}' from scratch")
            self.architecture = start.config
            self.normalization = start.normalization
        else:
            self.architecture = ARCHITECTURES[str(c.architecture or "journal").lower()]()
            self.normalization = IntensityNormalization()
        if c.best_metric == "val_thick_syn_psnr" and not (self.pair_model and self.procedure is None and getattr(
                self.architecture, "thickness_input", False)):
            raise InputError(f"best metric val_thick_syn_psnr scores pair networks with a slice-profile input on thick "
                             f"slices; this {self.model_type.name} network has none: use val_syn_psnr")
        self.start_checkpoint = start
        self.synthesis_target = "decoded" if self.pair_model or self.hook is not None else resolve_synthesis_target(c.synthesis_target, start)

        # ---- data (read and checked before any work)
        self.patch_size = validate_patch_size(c.patch_size, self.architecture.size_multiple)
        self.volumes = [TrainingVolume.load(v, axis=c.slice_axis, normalization=self.normalization)
                        for v in c.training_volumes]
        for v in self.volumes:
            v.check_usable(patch_size=self.patch_size, triplet_stride=c.triplet_stride, role="training")
        self.validation_volumes = [TrainingVolume.load(v, axis=c.slice_axis, normalization=self.normalization)
                                   for v in c.validation_volumes]
        for v in self.validation_volumes:
            v.check_usable(patch_size=None, triplet_stride=c.triplet_stride, role="validation")
            if min(v.slice_shape) < 11:
                raise InputError(f"validation volume {v.name!r} has slices of {v.slice_shape[0]}x{v.slice_shape[1]} "
                                 "pixels; SSIM needs at least 11x11")
        augmentation = Augmentation(noise_std_max=float(c.noise_std)) if c.augment else Augmentation.none()
        self.device_sampler = None
        if c.data_on_device and not self.pair_model:
            raise InputError("--data-on-device draws pair-unet batches on the device; it does not apply to model "
                             f"type {self.model_type.name!r}: drop it or give --model-type pair-unet")
        if self.procedure is not None:
            self.dataset = self.procedure.make_dataset(self.volumes, self.patch_size, augmentation)
        elif self.pair_model:
            # data on the device: the GapDataset only lists the samples (its blurred copies would be unused)
            inputs = dict(bspline_anchor=bool(getattr(self.architecture, "anchor_input", False)),
                          slice_profile=bool(getattr(self.architecture, "thickness_input", False)))
            self.dataset = GapDataset(self.volumes, self.patch_size, max_gap=int(c.max_gap),
                                      augmentation=augmentation, seed=c.seed,
                                      thick_slice_probability=0.0 if c.data_on_device
                                      else float(c.thick_slice_probability), **inputs)
            if c.data_on_device:
                from .device_sampler import DeviceGapSampler

                self.device_sampler = DeviceGapSampler(
                    self.volumes, self.patch_size, max_gap=int(c.max_gap), augmentation=augmentation, seed=c.seed,
                    thick_slice_probability=float(c.thick_slice_probability), device=self.device, **inputs)
        else:
            self.dataset = TripletDataset(self.volumes, self.patch_size, triplet_stride=c.triplet_stride,
                                          augmentation=augmentation, seed=c.seed,
                                          bspline_anchor=self.synthesis_target == "residual-bspline",
                                          thick_slice_probability=float(c.thick_slice_probability))
        spacings = np.array([v.in_plane_spacing_mm for v in self.volumes], dtype=np.float64)
        self.in_plane_spacing_mm = tuple(float(s) for s in np.median(spacings, axis=0))

        # ---- loss (fails here when lpips cannot be used)
        if self.pair_model:
            distance = make_synthesis_distance(c.synthesis_loss)
            self.loss_fn = distance.to(self.device) if isinstance(distance, torch.nn.Module) else distance
        else:
            self.loss_fn = ASILoss(c.synthesis_loss, float(c.lam)).to(self.device)

        world = self.context.world_size
        samples = (c.steps_per_epoch * c.batch_size * world) if c.steps_per_epoch else len(self.dataset)
        self.samples_per_epoch = int(samples)
        self.steps_per_epoch = int(math.ceil(math.ceil(samples / world) / c.batch_size))

    # ------------------------------------------------------------------ helpers
    def describe(self) -> str:
        c = self.config
        if self.procedure is not None:
            return (f"{self.model_type.name} model {self.architecture.name} {self.init_description}; {len(self.volumes)} "
                    f"training volume(s), {len(self.dataset)} sequences, {len(self.validation_volumes)} validation "
                    f"volume(s); patch {self.patch_size}, batch {c.batch_size}x{self.context.world_size} process(es), "
                    f"{self.steps_per_epoch} steps/epoch, lr {c.learning_rate:g}; {self.procedure.describe()}; device "
                    f"{describe_device(self.device)}")
        if self.pair_model:
            return (f"{self.model_type.name} model {self.architecture.name} {self.init_description}; {len(self.volumes)} "
                    f"training volume(s), {len(self.dataset)} start slices (gaps 2..{c.max_gap} on fine volumes), "
                    f"{len(self.validation_volumes)} validation volume(s); patch {self.patch_size}, batch "
                    f"{c.batch_size}x{self.context.world_size} process(es), {self.steps_per_epoch} steps/epoch, lr "
                    f"{c.learning_rate:g}, loss {c.synthesis_loss}, noise std up to {c.noise_std:g}, thick-slice "
                    f"probability {c.thick_slice_probability:g}; device {describe_device(self.device)}")
        return (f"{self.architecture.name} {self.init_description}; {len(self.volumes)} training volume(s), "
                f"{len(self.dataset)} triplets, {len(self.validation_volumes)} validation volume(s); patch "
                f"{self.patch_size}, batch {c.batch_size}x{self.context.world_size} process(es), "
                f"{self.steps_per_epoch} steps/epoch, lr {c.learning_rate:g}, synthesis loss {c.synthesis_loss} "
                f"on the {self.synthesis_target} synthesis, lambda {c.lam:g}; device {describe_device(self.device)}")

    def _inference_metadata(self) -> dict[str, Any]:
        """The engine mode the checkpoint recommends: the one its synthesis loss trained."""
        return {"inference": {"synthesis": INFERENCE_MODE_OF_TARGET[self.synthesis_target]}}

    def _log(self, record: dict[str, Any]) -> None:
        if not self.context.is_main:
            return
        record = {"time": time.time(), **record}
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, allow_nan=False, default=str) + "\n")
            handle.flush()

    def _training_info(self, epochs_done: int, global_step: int, record: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "settings": self.config.settings(),
            "model_type": self.model_type.name,
            "architecture": self.architecture.name,
            "synthesis_target": self.synthesis_target,
            "started_from": self.init_description,
            "epochs_done": epochs_done,
            "global_step": global_step,
            "world_size": self.context.world_size,
            "device": str(self.device),
            "patch_size": self.patch_size,
            "triplets": len(self.dataset),
            "volumes": [{"name": v.name, "slices": v.n_slices, "slice_shape": list(v.slice_shape),
                         "slice_axis": v.slice_axis, "in_plane_spacing_mm": list(v.in_plane_spacing_mm),
                         "slice_spacing_mm": v.slice_spacing_mm} for v in self.volumes],
            "validation_volumes": [v.name for v in self.validation_volumes],
            "last_epoch": record,
        }

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self, model: ASIAutoencoder) -> dict[str, float | None]:
        """Reconstruction and synthesis PSNR/SSIM of real middle slices of the validation volumes.

        For each chosen triplet: the middle slice reconstructed from itself (``val_rec_*``), the middle
        slice synthesised from the alpha=0.5 mix of its neighbours (``val_syn_*``), and, for reference,
        the mean of the two neighbours (``val_linear_*``, linear interpolation). Whole slices, edge-padded
        to a multiple of 4 like the engine does, compared in [0, 1].
        """
        if not self.validation_volumes:
            return {}
        if self.procedure is not None:
            return self.procedure.validate(model)
        if self.pair_model:
            return self._validate_pair(model)
        was_training = model.training
        model.eval()
        c = self.config
        s = c.triplet_stride
        sums: dict[str, list[torch.Tensor]] = {k: [] for k in ("rec_psnr", "rec_ssim", "syn_psnr", "syn_ssim",
                                                               "lin_psnr", "lin_ssim", "bspline_psnr",
                                                               "bspline_ssim", "loss")}
        chunk = max(1, c.batch_size)
        for volume in self.validation_volumes:
            middles = validation_triplets(volume, triplet_stride=s, max_triplets=c.validation_triplets)
            h, w = volume.slice_shape
            for i in range(0, len(middles), chunk):
                mids = middles[i:i + chunk]
                b = len(mids)
                order = [m - s for m in mids] + [m + s for m in mids] + mids
                stack = pad_to_multiple(volume.slices[order], self.architecture.size_multiple)
                x = torch.from_numpy(np.ascontiguousarray(stack)).unsqueeze(1).to(self.device)
                with torch.autocast(self.device.type, dtype=self.compute_dtype,
                                    enabled=self.compute_dtype != torch.float32):
                    z = model.encode(x)
                    mixed = ASIAutoencoder.mix(z[:b], z[b:2 * b], 0.5)
                    # residual targets: the neighbours' reconstructions are needed too
                    extra = [z[:2 * b]] if self.synthesis_target != "decoded" else []
                    out = model.decode(torch.cat([z[2 * b:], mixed, *extra])).float()
                x = x.float()[..., :h, :w]
                out = out[..., :h, :w]
                real_mid, rec_mid, syn_mid = x[2 * b:], out[:b], out[b:2 * b]
                spline = torch.from_numpy(np.stack([bspline_anchor(volume.slices, m, s) for m in mids])).unsqueeze(1)
                spline = spline.to(x.device)
                if extra:
                    syn_mid = residual_synthesis(x[:b], x[b:2 * b], out[2 * b:3 * b], out[3 * b:], syn_mid,
                                                 spline if self.synthesis_target == "residual-bspline" else None)
                linear = 0.5 * (x[:b] + x[b:2 * b])
                sums["bspline_psnr"].append(psnr(spline, real_mid, reduction="none"))
                sums["bspline_ssim"].append(ssim(spline, real_mid, reduction="none"))
                sums["rec_psnr"].append(psnr(rec_mid, real_mid, reduction="none"))
                sums["rec_ssim"].append(ssim(rec_mid, real_mid, reduction="none"))
                sums["syn_psnr"].append(psnr(syn_mid, real_mid, reduction="none"))
                sums["syn_ssim"].append(ssim(syn_mid, real_mid, reduction="none"))
                sums["lin_psnr"].append(psnr(linear, real_mid, reduction="none"))
                sums["lin_ssim"].append(ssim(linear, real_mid, reduction="none"))
                # the neighbours' reconstructions are not computed here; the loss uses the middle slice
                loss = self.loss_fn(rec_mid, real_mid, syn_mid if c.lam > 0 else None,
                                    real_mid if c.lam > 0 else None)["total"]
                sums["loss"].append(loss.detach().float().reshape(1).expand(b).cpu())
        if was_training:
            model.train()
        mean = {k: float(torch.cat([t.cpu() for t in v]).mean()) for k, v in sums.items()}
        return {"val_loss": mean["loss"], "val_rec_psnr": mean["rec_psnr"], "val_rec_ssim": mean["rec_ssim"],
                "val_syn_psnr": mean["syn_psnr"], "val_syn_ssim": mean["syn_ssim"],
                "val_linear_psnr": mean["lin_psnr"], "val_linear_ssim": mean["lin_ssim"],
                "val_bspline_psnr": mean["bspline_psnr"], "val_bspline_ssim": mean["bspline_ssim"]}

    def _thick_copy(self, volume: TrainingVolume, fwhm: int) -> np.ndarray:
        """``volume.slices`` blurred through-plane with FWHM ``fwhm`` slices, made once per volume and kept
        (the validation volumes do not change during a run)."""
        key = (id(volume), int(fwhm))
        if key not in self._thick_copies:
            self._thick_copies[key] = blur_slices(volume.slices, fwhm)
        return self._thick_copies[key]

    @torch.no_grad()
    def _validate_pair(self, model: torch.nn.Module) -> dict[str, float | None]:
        """Synthesis PSNR/SSIM of real middle slices from neighbours ``2 s`` apart (alpha 0.5), with
        ``s = max(triplet_stride, 2)`` on fine volumes (a gap of 4 or more, as K = 4 fills) and 1 on
        anisotropic stacks, beside linear and B-spline on the same slices; whole slices, edge-padded.
        A network with a slice-profile input is told the thin slices of a fine volume (thickness / gap
        ``1 / (2 s)``, as the engine tells it for a known thin-slice scan); an anisotropic stack's is not known.

        A slice-profile network is also scored on *thick* slices of each fine volume (``val_thick_*``): the
        neighbours (and the anchor's lattice) come from a copy blurred through-plane with FWHM = the gap ``2 s``
        (contiguous thick slices, as ``evaluate --thick-slices`` simulates), told thickness / gap 1, the sharp
        middle slice the truth. ``val_thin_thick_psnr`` is the mean of the thin and thick synthesis PSNR (the
        thin one alone when there is no thick score): a selection metric that sees both regimes, which a
        ``profile-routed`` model answers with different networks."""
        was_training = model.training
        model.eval()
        c = self.config
        takes_profile = bool(getattr(self.architecture, "thickness_input", False))
        regimes = ("thin", "thick") if takes_profile else ("thin",)
        sums: dict[str, dict[str, list[torch.Tensor]]] = {
            regime: {k: [] for k in ("syn_psnr", "syn_ssim", "lin_psnr", "lin_ssim", "bspline_psnr", "bspline_ssim",
                                     "loss")} for regime in regimes}
        chunk = max(1, c.batch_size)
        for volume in self.validation_volumes:
            fine = is_fine(volume)
            s = max(c.triplet_stride, 2) if fine and volume.n_slices > 4 * max(c.triplet_stride, 2) else 1
            middles = validation_triplets(volume, triplet_stride=s, max_triplets=c.validation_triplets)
            for regime in regimes:
                if regime == "thick" and not fine:
                    continue  # an anisotropic stack is already what it is
                told = {"thickness": 1.0 / (2 * s)} if fine and takes_profile else {}
                inputs = volume.slices
                if regime == "thick":
                    told, inputs = {"thickness": 1.0}, self._thick_copy(volume, 2 * s)
                self._validate_pair_slices(model, volume, inputs, middles, s, told, chunk, sums[regime])
        if was_training:
            model.train()
        mean = {regime: {k: float(torch.cat([t.cpu() for t in v]).mean()) if v else None for k, v in values.items()}
                for regime, values in sums.items()}
        thin = mean["thin"]
        record = {"val_loss": thin["loss"], "val_rec_psnr": None, "val_rec_ssim": None,
                  "val_syn_psnr": thin["syn_psnr"], "val_syn_ssim": thin["syn_ssim"],
                  "val_linear_psnr": thin["lin_psnr"], "val_linear_ssim": thin["lin_ssim"],
                  "val_bspline_psnr": thin["bspline_psnr"], "val_bspline_ssim": thin["bspline_ssim"]}
        thick = mean.get("thick") or {}
        if thick.get("syn_psnr") is not None:
            record.update({"val_thick_syn_psnr": thick["syn_psnr"], "val_thick_syn_ssim": thick["syn_ssim"],
                           "val_thick_bspline_psnr": thick["bspline_psnr"],
                           "val_thick_bspline_ssim": thick["bspline_ssim"]})
        record["val_thin_thick_psnr"] = (0.5 * (thin["syn_psnr"] + thick["syn_psnr"])
                                         if thick.get("syn_psnr") is not None else thin["syn_psnr"])
        return record

    def _validate_pair_slices(self, model: torch.nn.Module, volume, inputs: np.ndarray, middles: list[int], s: int,
                              told: dict, chunk: int, sums: dict[str, list[torch.Tensor]]) -> None:
        """One regime of :meth:`_validate_pair`: neighbours ``middles -/+ s`` (and the B-spline anchor) from
        ``inputs`` ``[n, H, W]``, the truth from ``volume.slices``; scores appended to ``sums``."""
        h, w = volume.slice_shape
        for i in range(0, len(middles), chunk):
            mids = middles[i:i + chunk]
            b = len(mids)
            stack = pad_to_multiple(np.concatenate([inputs[[m - s for m in mids] + [m + s for m in mids]],
                                                    volume.slices[mids]]), self.architecture.size_multiple)
            x = torch.from_numpy(np.ascontiguousarray(stack)).unsqueeze(1).to(self.device)
            spline = np.stack([bspline_anchor(inputs, m, s) for m in mids])
            anchor = None
            if getattr(self.architecture, "anchor_input", False):
                anchor = torch.from_numpy(pad_to_multiple(spline, self.architecture.size_multiple)).unsqueeze(1)
                anchor = anchor.to(self.device)
            with torch.autocast(self.device.type, dtype=self.compute_dtype,
                                enabled=self.compute_dtype != torch.float32):
                out = model.synthesize(x[:b], x[b:2 * b], 0.5, anchor, **told).float()
            x = x.float()[..., :h, :w]
            syn_mid, real_mid = out[..., :h, :w], x[2 * b:]
            spline = torch.from_numpy(spline).unsqueeze(1).to(x.device)
            linear = 0.5 * (x[:b] + x[b:2 * b])
            for name, values in (("syn", syn_mid), ("lin", linear), ("bspline", spline)):
                sums[f"{name}_psnr"].append(psnr(values, real_mid, reduction="none"))
                sums[f"{name}_ssim"].append(ssim(values, real_mid, reduction="none"))
            sums["loss"].append(self.loss_fn(syn_mid, real_mid).detach().float().reshape(1).expand(b).cpu())

    # ------------------------------------------------------------------ training
    def run(self, progress: ProgressCallback | None = None,
            should_cancel: CancelCallback | None = None) -> TrainingResult:
        """Train; returns a :class:`TrainingResult` (``status`` ``"finished"`` or ``"cancelled"``)."""
        try:
            return self._run(progress, should_cancel)
        except BaseException as exc:
            status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
            try:
                self._log({"event": "end", "status": status, "message": f"{type(exc).__name__}: {exc}",
                           "checkpoint": str(self.output) if self._own_files() and self.output.is_file() else None})
            except OSError:
                pass
            raise
        finally:
            self._restore_earlier_log()
            self.close()

    def _restore_earlier_log(self) -> None:
        """A new run that ends before its first checkpoint leaves the earlier run's log as it was."""
        size = getattr(self, "_earlier_log_size", None)
        if size is not None and not getattr(self, "_wrote_output", False):
            self._earlier_log_size = None
            try:
                with open(self.log_path, "r+b") as handle:
                    handle.truncate(size)
            except OSError as exc:
                logger.warning("could not restore the earlier log %s: %s", self.log_path, exc)

    def _own_files(self) -> bool:
        """Whether the files at the output paths are this run's: it resumed them or wrote a checkpoint (a
        new run leaves an earlier run's files alone until its first epoch is saved)."""
        return getattr(self, "resume_state", None) is not None or getattr(self, "_wrote_output", False)

    def _triplet_losses(self, step_module: torch.nn.Module, batch: torch.Tensor, memory_format: torch.memory_format,
                        amp: bool) -> tuple[dict, int]:
        """Eq. 3 on a batch of triplets ``[B, 3 or 4, P, P]``; returns the losses and B."""
        c = self.config
        batch = batch.to(self.device, non_blocking=True)
        b = batch.shape[0]
        outer = torch.cat([batch[:, 0:1], batch[:, 2:3]]).contiguous(memory_format=memory_format)
        middle = batch[:, 1:2]
        anchor = batch[:, 3:4] if self.synthesis_target == "residual-bspline" else None
        with torch.autocast(self.device.type, dtype=self.compute_dtype, enabled=amp):
            recon, synth = step_module(outer, c.lam > 0)
            if synth is not None and self.synthesis_target != "decoded":
                synth = residual_synthesis(outer[:b], outer[b:], recon[:b], recon[b:], synth, anchor)
        return self.loss_fn(recon.float(), outer, None if synth is None else synth.float(), middle), b

    def _pair_losses(self, step_module: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
                     memory_format: torch.memory_format, amp: bool) -> tuple[dict, int]:
        """The synthesis distance of the pair network's prediction of the middle slice, for a
        :class:`.data.GapDataset` batch ``([B, 3, P, P], alpha [B][, thickness ratio [B]])``; returns the losses and B."""
        patches, alpha, *profile = (item.to(self.device, non_blocking=True) for item in batch)
        thickness = profile[0] if profile else None
        first = patches[:, 0:1].contiguous(memory_format=memory_format)
        second = patches[:, 2:3].contiguous(memory_format=memory_format)
        anchor = patches[:, 3:4].contiguous(memory_format=memory_format) if patches.shape[1] > 3 else None
        with torch.autocast(self.device.type, dtype=self.compute_dtype, enabled=amp):
            predicted = step_module(first, second, alpha, anchor, thickness)
        distance = self.loss_fn(predicted.float(), patches[:, 1:2])
        return {"total": distance, "reconstruction": torch.zeros(()), "synthesis": distance}, patches.shape[0]

    def _run(self, progress: ProgressCallback | None, should_cancel: CancelCallback | None) -> TrainingResult:
        c = self.config
        ctx = self.context
        device = self.device
        torch.manual_seed(c.seed)
        np.random.seed(c.seed % 2**32)
        random.seed(c.seed)

        model = self.model_type.build(self.architecture)
        if self.start_checkpoint is not None:
            model.load_state_dict(self.start_checkpoint.model.state_dict())
        else:
            g = torch.Generator().manual_seed(c.seed)
            model.reset_parameters(generator=g)
        model.to(device).train()
        # channels_last: 2x faster training steps on the CPU (oneDNN), and the fast layout on CUDA
        memory_format = torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format
        model.to(memory_format=memory_format)
        step_module = wrap_model(self.procedure.step_module(model) if self.procedure is not None
                                 else self.hook.step_module(model) if self.hook is not None
                                 else _PairStep(model) if self.pair_model else _TripletStep(model), ctx, device)
        optimizer = (self.procedure.make_optimizer(model) if self.procedure is not None
                     else torch.optim.Adam(model.parameters(), lr=float(c.learning_rate)))
        use_scaler = device.type == "cuda" and self.compute_dtype == torch.float16
        scaler = (torch.amp.GradScaler("cuda", enabled=use_scaler) if hasattr(torch.amp, "GradScaler")
                  else torch.cuda.amp.GradScaler(enabled=use_scaler))  # torch < 2.3

        epochs_done, global_step = 0, 0
        history: list[dict[str, Any]] = []
        best_value: float | None = None
        best_epoch: int | None = None
        if self.resume_state is not None:
            st = self.resume_state
            optimizer.load_state_dict(st["optimizer"])
            for group in optimizer.param_groups:  # a changed --learning-rate applies from now on
                group["lr"] = float(c.learning_rate)
            if use_scaler and st.get("scaler"):
                scaler.load_state_dict(st["scaler"])
            epochs_done, global_step = int(st["epochs_done"]), int(st["global_step"])
            best_value, best_epoch = st.get("best_value"), st.get("best_epoch")
            history = list(st.get("history") or [])
            _set_rng_state(st.get("rng") or {})
            if self.procedure is not None:
                self.procedure.load_state_dict(st.get("procedure"))
            previous = st.get("settings") or {}
            changed = [k for k in ("batch_size", "patch_size", "lambda", "synthesis_loss", "synthesis_target",
                                   "learning_rate", "seed",
                                   "triplet_stride", "steps_per_epoch", "noise_std",
                                   "thick_slice_probability", "model_options")
                       if k in previous and previous[k] != c.settings().get(k)]
            if changed:
                logger.warning("resuming with changed settings %s: the result will differ from an uninterrupted run",
                               ", ".join(changed))
        elif ctx.is_main:
            # a new run: an earlier run's checkpoint and log stay as they are until this run has written its
            # first checkpoint. Its records are appended to the earlier log (GUIs poll it); the earlier records
            # are dropped at the first checkpoint, or the log is cut back to them when the run ends before
            size = self.log_path.stat().st_size if self.log_path.is_file() else 0
            self._earlier_log_size = size if size else None
            if not size:
                with open(self.log_path, "w", encoding="utf-8"):
                    pass

        if self.hook is not None:
            self.hook.start(self, model, (self.resume_state or {}).get("hook"))
        sampler = TripletSampler(self.dataset, num_replicas=ctx.world_size, rank=ctx.rank, seed=c.seed,
                                 samples_per_epoch=self.samples_per_epoch)
        if self.device_sampler is not None:  # --data-on-device: the same start slices, batches drawn on the device
            loader = self.device_sampler.batches(sampler, c.batch_size)
        else:
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_size=c.batch_size, sampler=sampler, num_workers=c.num_workers,
                # no persistent workers: they would keep a copy of the dataset from before set_epoch()
                pin_memory=device.type == "cuda", drop_last=False, persistent_workers=False)

        self._log({"event": "start", "settings": c.settings(), "architecture": self.architecture.name,
                   "started_from": self.init_description, "device": str(device), "world_size": ctx.world_size,
                   "epochs": c.epochs, "first_epoch": epochs_done + 1, "steps_per_epoch": self.steps_per_epoch,
                   "triplets": len(self.dataset), "in_plane_spacing_mm": list(self.in_plane_spacing_mm),
                   "output": str(self.output), "best_output": str(self.best_output),
                   "description": self.describe()})
        logger.debug("training: %s", self.describe())

        maximise = BEST_METRICS[c.best_metric]
        started = time.perf_counter()
        last_progress_log = 0.0
        amp = self.compute_dtype != torch.float32
        status = "finished"

        for epoch in range(epochs_done, c.epochs):
            self.dataset.set_epoch(epoch)
            sampler.set_epoch(epoch)
            model.train()
            step_module.train()
            epoch_start = time.perf_counter()
            totals = torch.zeros(4, dtype=torch.float64)  # total, rec, syn, triplets
            cancelled = False
            step = 0
            for step, batch in enumerate(loader, start=1):
                if self.procedure is not None:  # its own updates (critics, generator); the losses come detached
                    losses, b = self.procedure.train_step(step_module, batch, optimizer, global_step, memory_format)
                elif self.hook is not None:
                    losses, b = self.hook.losses(self, step_module, batch, global_step, memory_format, amp)
                elif self.pair_model:
                    losses, b = self._pair_losses(step_module, batch, memory_format, amp)
                else:
                    losses, b = self._triplet_losses(step_module, batch, memory_format, amp)
                total = losses["total"]
                if not use_scaler and not bool(torch.isfinite(total)):
                    raise TrainingDiverged(
                        f"the loss became {float(total)} at epoch {epoch + 1}, step {step}: lower the learning rate "
                        f"(now {c.learning_rate:g}); the checkpoint of the last completed epoch is kept")
                if self.procedure is None:
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(total).backward()
                    scaler.step(optimizer)
                    scaler.update()
                global_step += 1
                syn_value = float(losses["synthesis"].detach()) if losses["synthesis"] is not None else 0.0
                totals += torch.tensor([float(total.detach()) * b, float(losses["reconstruction"].detach()) * b,
                                        syn_value * b, b],
                                       dtype=torch.float64)
                elapsed = time.perf_counter() - epoch_start
                if ctx.is_main:
                    running = float(totals[0] / max(totals[3], 1))
                    info = TrainingProgress("train", epoch + 1, c.epochs, step, self.steps_per_epoch, global_step,
                                            running, float(totals[3]) * ctx.world_size / max(elapsed, 1e-9),
                                            time.perf_counter() - started)
                    if progress is not None:
                        progress(info)
                    now = time.perf_counter()
                    if now - last_progress_log >= c.progress_interval_s:
                        last_progress_log = now
                        self._log({"event": "progress", "epoch": epoch + 1, "epochs": c.epochs, "step": step,
                                   "steps": self.steps_per_epoch, "global_step": global_step,
                                   "loss": _finite_or_none(running), "fraction": info.fraction})
                if ctx.any(bool(should_cancel()) if should_cancel is not None else False, device):
                    cancelled = True
                    break
            if cancelled:
                status = "cancelled"
                break

            # ---- end of epoch: reduce, validate, write
            ctx.all_reduce_sum(totals)
            epoch_seconds = time.perf_counter() - epoch_start
            n = max(float(totals[3]), 1.0)
            record: dict[str, Any] = {
                "event": "epoch", "epoch": epoch + 1, "epochs": c.epochs, "global_step": global_step,
                "train_loss": _finite_or_none(totals[0] / n),
                "train_reconstruction": None if self.pair_model else _finite_or_none(totals[1] / n),
                "train_synthesis": _finite_or_none(totals[2] / n) if c.lam > 0 else None,
                "learning_rate": float(optimizer.param_groups[0]["lr"]),
                "epoch_seconds": epoch_seconds, "triplets_per_second": float(totals[3]) / max(epoch_seconds, 1e-9),
            }
            if self.procedure is not None:
                record.update(self.procedure.epoch_record())
            if self.hook is not None:
                record.update({k: _finite_or_none(v) for k, v in self.hook.epoch_record().items()})
            if ctx.is_main:
                if progress is not None and self.validation_volumes:
                    progress(TrainingProgress("validate", epoch + 1, c.epochs, step, self.steps_per_epoch,
                                              global_step, record["train_loss"], record["triplets_per_second"],
                                              time.perf_counter() - started))
                metrics = self.validate(model)
                record.update({k: _finite_or_none(v) for k, v in metrics.items()})
                is_best = False
                value = record.get(c.best_metric)
                if value is not None and (best_value is None or (value > best_value if maximise else value < best_value)):
                    best_value, best_epoch, is_best = float(value), epoch + 1, True
                record["best"] = is_best
                record["best_epoch"] = best_epoch
                history.append(record)
                info = self._training_info(epoch + 1, global_step, record)
                if is_best:
                    save_checkpoint(self.best_output, model, normalization=self.normalization,
                                    in_plane_spacing_mm=self.in_plane_spacing_mm, training=info,
                                    metadata=self._inference_metadata())
                state = {
                    "version": TRAINING_STATE_VERSION, "epochs_done": epoch + 1, "global_step": global_step,
                    "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if use_scaler else None,
                    "best_value": best_value, "best_epoch": best_epoch, "history": history,
                    "rng": _rng_state(), "settings": c.settings(),
                    "hook": self.hook.state_dict() if self.hook is not None else None,
                }
                if self.procedure is not None:  # critics and their optimisers: training state only
                    state["procedure"] = self.procedure.state_dict()
                save_checkpoint(self.output, model, normalization=self.normalization,
                                in_plane_spacing_mm=self.in_plane_spacing_mm, training=info,
                                metadata=self._inference_metadata(), extra_state={"training_state": state})
                record["checkpoint"] = str(self.output)
                self._wrote_output = True
                if getattr(self, "_earlier_log_size", None) is not None:
                    self._earlier_log_size = None
                    _keep_last_run_of_log(self.log_path)
                self._log(record)
                if progress is not None:
                    progress(TrainingProgress("epoch", epoch + 1, c.epochs, step, self.steps_per_epoch, global_step,
                                              record["train_loss"], record["triplets_per_second"],
                                              time.perf_counter() - started, record))
            epochs_done = epoch + 1
            ctx.barrier()

        own = self._own_files()
        result = TrainingResult(
            status=status,
            output=self.output if own and self.output.is_file() else None,
            best_output=self.best_output if (own and self.validation_volumes and self.best_output.is_file()) else None,
            epochs_done=epochs_done, global_step=global_step, history=history, log_path=self.log_path)
        self._log({"event": "end", "status": status, "epochs_done": epochs_done,
                   "checkpoint": str(result.output) if result.output else None,
                   "best_checkpoint": str(result.best_output) if result.best_output else None,
                   "recommended_checkpoint": str(result.checkpoint) if result.checkpoint else None})
        return result


def train(config: TrainingConfig, *, progress: ProgressCallback | None = None,
          should_cancel: CancelCallback | None = None) -> TrainingResult:
    """Check ``config``, then train. See the module documentation for the files written.

    ``progress(TrainingProgress)`` is called on rank 0 after every step and epoch; ``should_cancel()``
    is polled after every step (True: stop, keep the last completed epoch's files).
    Raises :class:`~SemanticInterpolationLib.errors.SemanticInterpolationError` subclasses for bad input,
    before any work.
    """
    return Trainer(config).run(progress=progress, should_cancel=should_cancel)

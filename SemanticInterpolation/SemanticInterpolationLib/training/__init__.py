"""Training and fine-tuning of the ASI autoencoder (Qt-free; for the CLI, Python and Slicer).

Main entry points::

    from SemanticInterpolationLib.training import TrainingConfig, train, read_training_log
    result = train(TrainingConfig(["scan1.nii.gz", "scan2.nrrd"], output="asi.pt", epochs=20),
                   progress=print, should_cancel=lambda: False)

* :class:`TrainingConfig` - every setting (the ``train`` command's options map one to one);
  :meth:`TrainingConfig.to_cli_args` gives the command line for a background process.
* :func:`train` / :class:`Trainer` - checks everything first, then trains; progress and cancel callbacks.
* :func:`read_training_log` - the per-epoch JSON-lines log written next to the checkpoint, for GUIs to poll.
* :class:`TrainingVolume`, :class:`TripletDataset`, :class:`TripletSampler` - the data pipeline.
* :func:`ssim`, :func:`psnr`, :class:`ASILoss`, :data:`SYNTHESIS_LOSSES` - loss and metrics.
"""

from .data import Augmentation, TrainingVolume, TripletDataset, TripletSampler, validate_patch_size
from .distributed import DistributedContext, init_distributed, launched_distributed
from .losses import (SYNTHESIS_LOSSES, ASILoss, LPIPSDistance, SynthesisLossUnavailable, lpips_unavailable_reason,
                     make_synthesis_distance, psnr, ssim)
from .trainer import (ARCHITECTURES, BEST_METRICS, DEFAULT_LAMBDA, DEFAULT_LEARNING_RATE, DEFAULT_SYNTHESIS_LOSS,
                      Trainer, TrainingConfig, TrainingDiverged, TrainingProgress, TrainingResult,
                      default_best_path, default_log_path, read_training_log, train)

__all__ = [
    "ARCHITECTURES", "ASILoss", "Augmentation", "BEST_METRICS", "DEFAULT_LAMBDA", "DEFAULT_LEARNING_RATE",
    "DEFAULT_SYNTHESIS_LOSS", "DistributedContext", "LPIPSDistance", "SYNTHESIS_LOSSES", "SynthesisLossUnavailable",
    "Trainer", "TrainingConfig", "TrainingDiverged", "TrainingProgress", "TrainingResult", "TrainingVolume",
    "TripletDataset", "TripletSampler", "default_best_path", "default_log_path", "init_distributed",
    "launched_distributed", "lpips_unavailable_reason", "make_synthesis_distance", "psnr", "read_training_log",
    "ssim", "train", "validate_patch_size",
]

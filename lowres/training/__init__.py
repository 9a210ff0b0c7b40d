"""Training and evaluation (paper sections 7, 8, 10): recipe, pure loops, runs, checkpoints, DDP.

``train(cfg, out_dir)`` runs a whole training (``lowres train``); ``evaluate_checkpoint`` scores a checkpoint
(``lowres eval``); ``evaluate_model`` is the one evaluation path both use.
"""
from .evaluate import evaluate_checkpoint, evaluate_model, load_model_from_checkpoint
from .run import build_model_from_config, train

__all__ = ["train", "evaluate_checkpoint", "evaluate_model", "load_model_from_checkpoint", "build_model_from_config"]

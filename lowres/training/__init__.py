"""Training and evaluation (paper sections 7, 8, 10): recipe, pure loops, runs, resume state, DDP.

``train(cfg, out_dir)`` runs a whole training (``lowres train``) through a :class:`Trainer` and its
hooks; ``evaluate_checkpoint`` scores a checkpoint
(``lowres eval``); ``evaluate_loaded`` is the one evaluation entry point both it and the bench use, and
``evaluate_model`` the evaluation pass that validation during training shares with it. A checkpoint becomes a
model through :func:`lowres.builder.load_model`.
"""
from .evaluate import Evaluation, evaluate_checkpoint, evaluate_loaded, evaluate_model
from .run import train
from .trainer import Hook, Trainer

__all__ = ["train", "Trainer", "Hook", "evaluate_loaded", "Evaluation", "evaluate_checkpoint", "evaluate_model"]

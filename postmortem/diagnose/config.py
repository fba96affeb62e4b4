"""Every threshold the diagnosis compares against, in one frozen object (settable in postmortem.toml under
[diagnosis]); findings and the verdict print each number beside the threshold it was held to.

Whether a change is real is never a threshold here: a change counts only when its own bootstrap interval
excludes 0. The thresholds below say how large a real change must be to matter.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..analyze.reconcile import MATCH_TOLERANCE, REPRODUCE_TOLERANCE

__all__ = ["DiagnosisConfig", "DIAGNOSIS_TABLE"]

DIAGNOSIS_TABLE = "diagnosis"       # the postmortem.toml table that overrides these


@dataclass(frozen=True)
class DiagnosisConfig:
    """Thresholds of the causes (verdict), of the findings that show them, and of the mechanisms behind them."""

    # causes
    min_macro_f1_drop: float = 0.005         # macro-F1 fall (beyond its CI) that counts as genuine degradation
    min_recall_drop: float = 0.05            # a class's recall fall (beyond its CI) that counts as class collapse
    min_confusion_growth: float = 0.05       # growth of the share of c's items predicted c' (beyond its CI)
    min_confusion_share: float = 0.2         # the share of the rise those items must carry (learned confusion)
    min_collapse_explained: float = 0.5      # share of a class's recall fall one confusion must explain to take it
    min_miss_ratio: float = 2.0              # confident wrong predictions of a class / what calibration expects
    min_leading_share: float = 0.5           # "most of the rise": a cause naming items or classes that carries it
                                             # leads (label errors must, to count at all)
    candidate_window: int = 3                # candidates are wrong, with the same prediction, in this many last epochs
    candidate_min_confidence: float = 0.5    # and at least this confident (scaled) in that prediction
    # the training subset (--train-data)
    min_training_label_excess: float = 0.05  # share of c'-labelled training items placed in c (AUM < 0) beyond the
                                             # validation share (beyond its CI): noisy training labels behind c -> c'
    max_training_share_ratio: float = 0.5    # a class's share of the training subset / its validation share, at or
                                             # below which it is underrepresented in training
    fitted_training_recall: float = 0.99     # a class's training-subset recall at both epochs from which the subset
                                             # cannot show it losing its training signal (the model fits them all)
    train_mode_tolerance: float = 3.0        # a logged loss matches train mode within this many times the spread of
                                             # the seeded train-mode passes (or logged_loss_tolerance, if larger)
    min_recalibration_share: float = 0.2     # share of the rise that recomputing BatchNorm statistics removes
    # findings and mechanisms
    min_relative_loss_rise: float = 0.02     # (L_last - L_best) / L_best for the headline finding
    min_last_temperature: float = 1.05       # fitted T above which a calibration change is overconfidence
    min_wrong_share: float = 0.5             # share of dL carried by correct->wrong and wrong->wrong items
    min_class_share: float = 0.5             # share of dL (or of the class-weight part) the named classes reach
    max_concentrated_classes: int = 3        # "one or few" classes
    min_concentration_ratio: float = 2.0     # their share of dL / their share of the items
    min_norm_growth: float = 0.10            # relative rise of the median centred-logit norm
    min_margin_growth: float = 0.10          # relative rise of the median absolute margin
    max_listed_items: int = 200              # item ids listed in metrics.json (text shows 10)
    logged_loss_tolerance: float = MATCH_TOLERANCE        # relative difference between logged and recomputed loss
                                                          # that counts (1e-3)
    logged_loss_reproduction: float = REPRODUCE_TOLERANCE  # relative difference within which a reduction of the same
                                                          # predictions reproduces the logged loss (1e-6), or the
                                                          # log's own rounding
    # the training setup (analyze/schedule.py)
    min_lr_change: float = 0.2               # |lr_after - lr_before| / max(lr_before, lr_after) between checkpoints
                                             # that makes an LR event (0.2: a factor of 1.25)
    lr_event_window: int = 2                 # checkpoints after an LR event within which a loss rise that begins
                                             # is tied to it


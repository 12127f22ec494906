"""The reference profile an export records: calibration temperature and drift statistics.

Built from the same real rows the gates use and never from a substitute: the temperature is
fitted on the validation split, and the profile describes the held-out test split as the
fp32 model sees it. Without real rows (random gate images) there is no profile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fcls.infer.common.calibration import fit_temperature, nll, reliability
from fcls.infer.common.drift import Profile
from fcls.infer.common.spec import ImageSpec

from .gatedata import GateData

# the source model's logits (N, K) float32 for (N, P) uint8 rows: the model every gate trusts
Reference = Callable[[np.ndarray], np.ndarray]


def calibrate(
    reference: Reference, gate: GateData, heldout_logits: np.ndarray
) -> tuple[float, dict[str, Any] | None]:
    """The temperature fitted on the gate's validation rows (1.0 without labelled ones) and
    what it gives: NLL on those rows, ECE and NLL on the held-out rows, before and after."""
    if gate.val is None or gate.val_labels is None or not len(gate.val_labels):
        return 1.0, None
    val_logits = reference(gate.val)
    t = fit_temperature(val_logits, gate.val_labels)
    figures: dict[str, Any] = {
        "temperature": t,
        "fitted_on": f"{len(gate.val_labels)} validation rows",
        "validation_nll": {
            "before": nll(val_logits, gate.val_labels),
            "after": nll(val_logits, gate.val_labels, t),
        },
    }
    labels = gate.heldout_labels
    if labels is not None and len(labels):
        before = reliability(heldout_logits, labels)
        after = reliability(heldout_logits, labels, t)
        figures["heldout"] = {
            "rows": len(labels),
            "ece_bins": before.bins,
            "ece": {"before": before.ece(), "after": after.ece()},
            "nll": {"before": before.nll(), "after": after.nll()},
        }
    return t, figures


def build_profile(
    reference: Reference, spec: ImageSpec, gate: GateData, heldout_logits: np.ndarray
) -> Profile | None:
    """The profile of the gate's held-out rows as `reference` (the source model) scores them,
    with the fitted temperature; None without real rows."""
    if not gate.real or not len(gate.heldout):
        return None
    temperature, figures = calibrate(reference, gate, heldout_logits)
    image = (spec.height, spec.width, spec.channels)
    return Profile.build(gate.heldout, heldout_logits, gate.source, temperature, figures, image)

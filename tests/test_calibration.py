"""Temperature scaling, NLL and ECE (fcls.infer.common.calibration) against independent sums."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import naive_ece_nll

from fcls.infer.common.calibration import Reliability, fit_temperature, nll, reliability
from fcls.infer.common.numeric import softmax


def sampled(n: int, temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits / temperature): T is the true temperature."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=4.0, size=(n, 10)).astype(np.float32)
    p = softmax(logits, temperature).astype(np.float64)
    cumulative = p.cumsum(axis=1)
    labels = (rng.random((n, 1)) > cumulative).sum(axis=1).clip(0, 9)
    return logits, labels.astype(np.int64)


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_recovers_the_temperature_the_labels_were_drawn_with(true_t):
    logits, labels = sampled(20_000, true_t)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(true_t, rel=0.06)
    # a minimum: no nearby temperature does better
    for other in (t * 0.9, t * 1.1, 1.0 if abs(t - 1) > 0.1 else 2.0):
        assert nll(logits, labels, t) <= nll(logits, labels, other)


def test_ece_and_nll_equal_a_row_by_row_computation():
    logits, labels = sampled(3_000, 2.0, seed=1)
    for t in (1.0, 2.0, 0.7):
        tally = reliability(logits, labels, t)
        ece, mean_nll = naive_ece_nll(logits.astype(np.float64) / t, labels)
        assert tally.ece() == pytest.approx(ece, abs=1e-9)
        assert tally.nll() == pytest.approx(mean_nll, rel=1e-9)
        assert tally.nll() == pytest.approx(nll(logits, labels, t), rel=1e-9)
    # temperature scaling fixes what the drawn labels made overconfident
    fitted = fit_temperature(logits, labels)
    assert reliability(logits, labels, fitted).ece() < 0.3 * reliability(logits, labels).ece()


def test_streaming_equals_one_batch_and_survives_extreme_logits():
    logits, labels = sampled(1_000, 1.0, seed=2)
    logits[:10] *= 1e4  # softmax underflows to 0 for the true class of some rows
    whole = reliability(logits, labels)
    parts = Reliability()
    for i in range(0, 1_000, 97):
        parts.add(logits[i : i + 97], labels[i : i + 97])
    a, b = parts.to_dict(), whole.to_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert np.asarray(a[key]) == pytest.approx(np.asarray(b[key])), key
    assert np.isfinite(whole.nll()) and whole.nll() == pytest.approx(nll(logits, labels))
    assert whole.total == 1_000 and sum(whole.to_dict()["bin_rows"]) == 1_000  # type: ignore[arg-type]


def test_empty_inputs_say_so():
    assert np.isnan(Reliability().ece()) and np.isnan(Reliability().nll())
    with pytest.raises(ValueError, match="at least one"):
        fit_temperature(np.empty((0, 10), np.float32), np.empty(0, np.int64))


def test_softmax_at_temperature_one_is_bit_for_bit_the_plain_one():
    logits = np.random.default_rng(3).normal(size=(50, 10)).astype(np.float32)
    plain = np.exp(logits - logits.max(axis=1, keepdims=True))
    plain = (plain / plain.sum(axis=1, keepdims=True)).astype(np.float32)
    assert np.array_equal(softmax(logits), plain) and np.array_equal(softmax(logits, 1.0), plain)
    assert np.allclose(softmax(logits, 2.0), softmax(logits / 2))

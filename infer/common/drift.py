"""The model's reference profile and the drift check of a scored batch against it.

`fcls-export` summarises the held-out real rows it gates on into a `Profile` (a few KB of JSON
in the ONNX metadata): the distribution of four per-image input statistics, of an
out-of-distribution score and of the predicted classes, the score's 99th percentile, and the
calibration temperature. `fcls-infer` counts the same things over the rows it scores into a
flat vector of integers per file (histograms, never rows: constant memory, and vectors of
pieces, partitions or resumed runs simply add up), then compares them with the profile:

- the population stability index (PSI) of each statistic and of the predicted-class mix;
- the share of rows whose OOD score lies beyond the reference's 99th percentile (1% of the
  reference rows do, by construction).

The OOD score is the energy of the logits, -logsumexp(logits): low where the model has seen
images like this one (large logits), high where nothing in it responds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .numeric import logsumexp

PROFILE_KEY = "fcls_profile"  # the ONNX metadata key that holds the profile's JSON
PROFILE_FORMAT = 1
TAIL_QUANTILE = 0.99  # a row scoring above this quantile of the reference is flagged OOD
# Interior bin edges at these quantiles of the reference: ten bins of about equal reference mass
EDGE_QUANTILES = tuple(np.round(np.linspace(0.1, 0.9, 9), 2).tolist())
PSI_FLOOR = 1e-4  # an empty bin counts as this share (PSI is infinite at 0)
INPUT_STATISTICS = ("mean_intensity", "zero_fraction", "centre_x", "centre_y")
OOD_SCORE = "ood_score"
CLASSES = "predicted_class"

OK, DRIFT, OOD, FEW = "ok", "drift", "out-of-distribution", "too few rows"


@dataclass(frozen=True)
class DriftRule:
    """When a batch is called drifted or out of distribution (the README documents these)."""

    psi_drift: float = 0.25  # PSI at or above this on any statistic or the class mix: drift
    ood_share: float = 0.05  # this share of rows beyond the reference's OOD tail, or more: OOD
    min_rows: int = 200  # fewer rows: figures only, no verdict


def input_statistics(pixels: np.ndarray, image: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Per image of (n, H*W*C) uint8 HWC rows of an `image` = (H, W, C): mean intensity
    (0..255), the share of zero values, and the column and row of the intensity's centre of
    mass (0..W-1 and 0..H-1; the middle for a blank image)."""
    n, (h, w, c) = len(pixels), image
    images = pixels.reshape(n, h, w * c)
    # a row of up to 257 values of at most 255 sums within uint16: exact, and the fastest
    acc = np.uint16 if w * c <= 257 else np.uint32
    by_row = images.sum(axis=2, dtype=acc)  # (n, H)
    by_column = images[:, 0, :].astype(acc)
    for r in range(1, h):  # a row at a time: contiguous adds, unlike a reduction over axis 1
        by_column += images[:, r, :]
    if c > 1:
        by_column = by_column.reshape(n, w, c).sum(axis=2, dtype=np.int64)
    total = by_row.sum(axis=1, dtype=np.int64)
    weight = np.maximum(total, 1)
    blank = total == 0
    values = h * w * c
    return {
        "mean_intensity": total / values,
        "zero_fraction": (values - np.count_nonzero(pixels, axis=1)) / values,
        "centre_x": np.where(blank, (w - 1) / 2, (by_column @ np.arange(w)) / weight),
        "centre_y": np.where(blank, (h - 1) / 2, (by_row @ np.arange(h)) / weight),
    }


def ood_score(logits: np.ndarray) -> np.ndarray:
    """The energy score of (n, k) logits: -logsumexp; higher means less familiar."""
    return -logsumexp(np.asarray(logits, np.float32)).astype(np.float64)


@dataclass(frozen=True)
class Histogram:
    """Bins of one statistic, fitted on the reference rows, and the reference's share per bin."""

    edges: tuple[float, ...]  # interior edges, ascending and distinct; len(edges) + 1 bins
    reference: tuple[float, ...]

    @classmethod
    def fit(cls, values: np.ndarray) -> Histogram:
        edges = np.unique(np.quantile(values, EDGE_QUANTILES))
        counts = _bin_counts(edges, values)
        return cls(tuple(edges.tolist()), tuple((counts / len(values)).tolist()))

    def count(self, values: np.ndarray) -> np.ndarray:
        """(bins,) int64 counts of `values` in these bins."""
        return _bin_counts(np.asarray(self.edges), values)


def _bin_counts(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    where = np.searchsorted(edges, values, side="right")
    return np.bincount(where, minlength=len(edges) + 1).astype(np.int64)


def psi(reference: np.ndarray, counts: np.ndarray) -> float:
    """Population stability index of observed `counts` against `reference` shares."""
    n = counts.sum()
    if n == 0:
        return float("nan")
    seen = np.maximum(counts / n, PSI_FLOOR)
    expected = np.maximum(np.asarray(reference, np.float64), PSI_FLOOR)
    return float(((seen - expected) * np.log(seen / expected)).sum())


@dataclass(frozen=True)
class Profile:
    """What the model's held-out reference rows look like; see the module's docstring."""

    rows: int
    source: str
    histograms: dict[str, Histogram]  # INPUT_STATISTICS and OOD_SCORE
    classes: tuple[float, ...]  # share of reference rows predicted as each class
    ood_threshold: float  # TAIL_QUANTILE of the reference's OOD score
    temperature: float = 1.0  # divides the logits for calibrated probabilities
    calibration: dict[str, Any] | None = None  # how the temperature was fitted, what it gave
    # (height, width, channels) of the images; profiles written before it were all 32x32x1
    image: tuple[int, int, int] = (32, 32, 1)

    @classmethod
    def build(
        cls,
        pixels: np.ndarray,
        logits: np.ndarray,
        source: str,
        temperature: float = 1.0,
        calibration: dict[str, Any] | None = None,
        image: tuple[int, int, int] = (32, 32, 1),
    ) -> Profile:
        """The profile of reference rows (n, H*W*C) uint8 of `image` = (H, W, C) and the
        model's (n, k) logits."""
        if not len(pixels):
            raise ValueError("a profile needs at least one reference row")
        stats = input_statistics(pixels, image)
        score = ood_score(logits)
        hists = {name: Histogram.fit(stats[name]) for name in INPUT_STATISTICS}
        hists[OOD_SCORE] = Histogram.fit(score)
        k = logits.shape[1]
        mix = np.bincount(logits.argmax(axis=1), minlength=k) / len(pixels)
        threshold = float(np.quantile(score, TAIL_QUANTILE))
        mix_shares = tuple(mix.tolist())
        return cls(
            len(pixels), source, hists, mix_shares, threshold, temperature, calibration, image
        )

    def to_json(self) -> str:
        """The profile as the JSON fcls-export stores in the model's metadata."""
        body = asdict(self)
        return json.dumps({"format": PROFILE_FORMAT, **body}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Profile:
        """Read a stored profile; ValueError says why one cannot be used."""
        try:
            data = json.loads(text)
            if data.get("format") != PROFILE_FORMAT:
                raise ValueError(f"profile format {data.get('format')!r}, this fcls reads 1")
            hists = {
                k: Histogram(tuple(v["edges"]), tuple(v["reference"]))
                for k, v in data["histograms"].items()
            }
            if set(hists) != {*INPUT_STATISTICS, OOD_SCORE}:
                raise ValueError(f"profile statistics {sorted(hists)}")
            return cls(
                int(data["rows"]),
                str(data["source"]),
                hists,
                tuple(float(x) for x in data["classes"]),
                float(data["ood_threshold"]),
                float(data.get("temperature", 1.0)),
                data.get("calibration"),
                _image(data.get("image", (32, 32, 1))),
            )
        except (TypeError, KeyError, AttributeError, json.JSONDecodeError) as e:
            raise ValueError(f"unreadable profile ({type(e).__name__}: {e})") from None

    def _sizes(self) -> list[int]:
        return [len(h.reference) for h in self.histograms.values()] + [len(self.classes), 1, 1]

    def empty(self) -> np.ndarray:
        """The counts of no rows: a flat int64 vector (histograms, classes, tail, rows)."""
        return np.zeros(sum(self._sizes()), np.int64)

    def is_ood(self, logits: np.ndarray, score: np.ndarray | None = None) -> np.ndarray:
        """(n,) bool: the rows whose OOD score (`score`, if already computed) is beyond the
        reference's tail."""
        return (ood_score(logits) if score is None else score) > self.ood_threshold

    def count(
        self, pixels: np.ndarray, logits: np.ndarray, score: np.ndarray | None = None
    ) -> np.ndarray:
        """The counts of one block of rows and their logits (and their OOD `score`, if already
        computed), as a flat vector (see `empty`)."""
        stats = input_statistics(pixels, self.image)
        score = ood_score(logits) if score is None else score
        parts = [self.histograms[name].count(stats[name]) for name in INPUT_STATISTICS]
        parts.append(self.histograms[OOD_SCORE].count(score))
        parts.append(np.bincount(logits.argmax(axis=1), minlength=len(self.classes)))
        parts.append(np.array([np.count_nonzero(score > self.ood_threshold), len(pixels)]))
        return np.concatenate(parts).astype(np.int64)

    def check_counts(self, counts: Any) -> np.ndarray | None:
        """`counts` as a vector of this profile's layout, or None if it is not one."""
        vector = np.asarray(counts if counts is not None else [], np.int64)
        return vector if vector.shape == (sum(self._sizes()),) else None

    def assess(self, counts: np.ndarray, rule: DriftRule) -> dict[str, Any]:
        """Verdict and figures of `counts` against this profile under `rule`."""
        sizes = np.cumsum(self._sizes())[:-1]
        *hist_counts, class_counts, tail, rows = np.split(counts, sizes)
        n = int(rows[0])
        names = [*INPUT_STATISTICS, OOD_SCORE]
        found = {
            name: psi(np.asarray(self.histograms[name].reference), c)
            for name, c in zip(names, hist_counts)
        }
        found[CLASSES] = psi(np.asarray(self.classes), class_counts)
        share = int(tail[0]) / n if n else 0.0
        reasons = []
        if n and share >= rule.ood_share:
            reasons.append(
                f"{share:.1%} of rows beyond the reference's {1 - TAIL_QUANTILE:.0%} OOD tail"
            )
        worst = sorted(
            ((v, k) for k, v in found.items() if n and v >= rule.psi_drift), reverse=True
        )
        reasons += [f"PSI {k} {v:.2f}" for v, k in worst]
        if n < rule.min_rows:
            verdict = FEW
        elif n and share >= rule.ood_share:
            verdict = OOD
        else:
            verdict = DRIFT if worst else OK
        return {
            "verdict": verdict,
            "rows": n,
            "ood_share": share,
            "reference_ood_share": round(1 - TAIL_QUANTILE, 6),
            "psi": {k: (v if n else None) for k, v in found.items()},  # JSON has no NaN
            "reasons": reasons,
        }


def _image(value: Any) -> tuple[int, int, int]:
    h, w, c = (int(v) for v in value)
    if min(h, w, c) < 1:
        raise ValueError(f"profile image size {value!r}")
    return h, w, c


def drift_report(
    profile: Profile, model: str, files: list[tuple[str, np.ndarray]], rule: DriftRule
) -> dict[str, Any]:
    """drift.json: the verdict of the whole run and of each input file."""
    total = sum((c for _, c in files), profile.empty())
    return {
        "format": "fcls-drift/1",
        "model": model,
        "profile": {"rows": profile.rows, "source": profile.source},
        "thresholds": asdict(rule),
        "run": profile.assess(total, rule),
        "files": [{"input": name, **profile.assess(c, rule)} for name, c in files],
    }


def drift_line(report: dict[str, Any], where: str | None = None) -> str:
    """The run's verdict in one line, with the figures that decided it."""
    run = report["run"]
    top = max(run["psi"].items(), key=lambda kv: kv[1] if kv[1] is not None else -1.0)
    figures = f"{run['rows']:,} rows"
    if run["rows"]:
        figures += (
            f", {run['ood_share']:.1%} beyond the OOD tail (reference "
            f"{run['reference_ood_share']:.0%}), largest PSI {top[1]:.3f} ({top[0]})"
        )
    bad = [f["input"] for f in report["files"] if f["verdict"] in (DRIFT, OOD)]
    files = ""
    if bad and len(report["files"]) > 1:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        files = f"; {len(bad)} of {len(report['files'])} files flagged: {', '.join(bad[:3])}{more}"
    report_at = f"; report {where}" if where else ""
    return f"drift: {run['verdict']}: {figures}{files}{report_at}"

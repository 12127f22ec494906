"""The fastest correct path of a report: which of fcls's own ways to score (a runtime at a
precision, `backends.ROUTES`) a user should pick on this machine, and by how much.

Pure functions of a report, so what the line picks can be tested on a made-up one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fcls.infer.common.spec import DEFAULT_BATCH_SIZE

from .backends import ROUTE_OF, ROUTES, Route

BASELINE = ROUTES[0]  # onnxruntime fp32: what fcls-infer runs by default


def _failed(report: dict[str, Any]) -> set[Route]:
    """Routes any of whose labels missed a bar: model alone, or fcls-infer end to end."""
    failed = {
        ROUTE_OF[r["backend"]]
        for r in report.get("rows", [])
        if r["backend"] in ROUTE_OF and r.get("agreement_ok") is False
    }
    keys = {(r.runtime, r.precision): r for r in ROUTES}
    for e in report.get("e2e", []):
        if e.get("kind") == "fcls-infer" and e.get("agreement_ok") is False:
            failed.add(keys[e["runtime"], e["precision"]])
    return failed


def _passed(ok: bool | None, unchecked: bool) -> bool:
    """A row qualifies when its labels passed; one not checked only when the whole run had
    no check set (agreement not measured: the report says so)."""
    return ok is True or (ok is None and unchecked)


def _candidates(report: dict[str, Any]) -> tuple[dict[Route, float], str, str]:
    """Speed per route that qualifies (see _passed), then the basis and its unit: end to end
    when the report has that section, else model alone at fcls-infer's batch size (the
    largest measured when that one is not)."""
    unchecked = report.get("agreement_rows") is None
    failed = _failed(report)
    keys = {(r.runtime, r.precision): r for r in ROUTES}
    if report.get("e2e"):
        speed = {
            keys[e["runtime"], e["precision"]]: e["rows_per_s"]
            for e in report["e2e"]
            if e.get("kind") == "fcls-infer" and _passed(e.get("agreement_ok"), unchecked)
        }
        return {k: v for k, v in speed.items() if k not in failed}, "end to end", "rows/s"
    rows = [r for r in report.get("rows", []) if r["backend"] in ROUTE_OF]
    batches = {r["batch"] for r in rows}
    batch = DEFAULT_BATCH_SIZE if DEFAULT_BATCH_SIZE in batches else max(batches, default=0)
    speed = {
        ROUTE_OF[r["backend"]]: r["throughput"]
        for r in rows
        if r["batch"] == batch and _passed(r.get("agreement_ok"), unchecked)
    }
    return (
        {k: v for k, v in speed.items() if k not in failed},
        f"model alone, batch {batch}",
        "img/s",
    )


def command(route: Route, models: dict[str, str]) -> str:
    """The fcls-infer command line of a route: `fcls-infer --runtime openvino --precision
    bf16`; the int8 file named by its own name."""
    parts = ["fcls-infer"]
    if route.variant != BASELINE.variant:
        parts += ["-m", Path(models.get(route.variant, route.variant)).name]
    if route.runtime != BASELINE.runtime:
        parts += ["--runtime", route.runtime]
    if route.hint != BASELINE.hint:
        parts += ["--precision", route.hint]
    return " ".join(parts)


def fastest_path(report: dict[str, Any], cpu: str) -> dict[str, Any] | None:
    """Among fcls's own routes whose labels passed their checks (a route any of whose rows
    failed is out), the fastest end to end (model alone without that section), with its
    ratio to onnxruntime fp32 on the same basis (None when that one is not in the report);
    `cpu`: system.describe_cpu(). None when no route qualifies."""
    speed, basis, unit = _candidates(report)
    if not speed:
        return None
    best = max(speed, key=lambda r: speed[r])
    base = speed.get(BASELINE)
    return {
        "runtime": best.runtime,
        "precision": best.precision,
        "backend": best.backend,
        "command": command(best, report.get("models", {})),
        "basis": basis,
        "speed": speed[best],
        "unit": unit,
        "vs_ort_fp32": speed[best] / base if base else None,
        "labels_checked": report.get("agreement_rows") is not None,
        "cpu": cpu,
    }


def format_fastest(fastest: dict[str, Any] | None) -> str:
    """`fastest here: fcls-infer --runtime openvino --precision bf16, 1.93x onnxruntime fp32
    end to end (AMD EPYC, 2 CPUs, ...)`; one line, also when nothing qualified."""
    if fastest is None:
        return "fastest here: none of fcls's runtimes passed its agreement checks"
    if fastest["vs_ort_fp32"] is None:
        figure = f"{fastest['speed']:.0f} {fastest['unit']} (onnxruntime fp32 not in this run)"
    else:
        figure = f"{fastest['vs_ort_fp32']:.2f}x onnxruntime fp32"
    unchecked = "" if fastest["labels_checked"] else ", labels not checked (see the notes)"
    return (
        f"fastest here: {fastest['command']}, {figure} {fastest['basis']}{unchecked} "
        f"({fastest['cpu']})"
    )

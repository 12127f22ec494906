"""Typed errors of fcls.bench (all FclsError: the CLI turns them into one line)."""

from __future__ import annotations

from fcls.infer.common.errors import FclsError, ParityError


class BenchError(FclsError):
    """A benchmark that cannot run as asked (unknown backend, missing baseline, bad model)."""


class AgreementError(BenchError, ParityError):
    """A backend whose labels disagree with the reference beyond its bar: a fast wrong path.
    A failed gate, like the exporter's ParityError: exit 3 (fcls.infer.cli.kit.MODEL)."""

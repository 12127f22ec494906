"""Typed errors shared by every fcls command (torch-free, so the deployment has them too)."""

from __future__ import annotations


class FclsError(Exception):
    """Base of every error fcls raises for bad input, bad models or bad configuration."""


class DataError(FclsError):
    """A CSV file that cannot be read as fcls data; the message names file, line and column."""

    def __init__(
        self, source: str, message: str, line: int | None = None, column: str | None = None
    ) -> None:
        self.source, self.line, self.column, self.reason = source, line, column, message
        where = source
        if line is not None:
            where += f":{line}"
        if column is not None:
            where += f" column {column}"
        super().__init__(f"{where}: {message}")


class ModelError(FclsError):
    """A model file that is missing, unreadable or does not fit the data."""


class ProviderError(FclsError):
    """An execution provider that was asked for but is not available."""


class OutputError(FclsError):
    """An output path that cannot be written."""


class ConfigError(FclsError):
    """Options that contradict each other or the machine (e.g. --device cuda without CUDA)."""


class CheckpointError(FclsError):
    """A checkpoint that is missing, corrupt, or whose weights do not fit its network."""


class ParityError(FclsError):
    """An exported model whose outputs differ from the source model beyond tolerance."""

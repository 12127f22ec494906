"""`ScoringOptions`: how one scoring run reads, scores and writes, as one validated value.

Built once at the edge (the CLI, or `predict_csv`'s keywords) and handed whole to the local
pipeline and the Ray engine. The fields that change output bytes carry, in their metadata, the
words a refused `--resume` uses for them: the journal identity and its refusal messages are both
derived from that one list (`output_fields`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..common.errors import ConfigError
from ..common.spec import DEFAULT_BATCH_SIZE
from ..formats.csvfile import DEFAULT_CHUNK_BYTES
from .runtimes import Choice

# A resumable run fsyncs its output and rewrites its journal at most every CHECKPOINT_SECONDS,
# and less often when fsyncs are slow, so that checkpoints take at most CHECKPOINT_BUDGET of
# the run's time (figures: bench/README.md). A killed run redoes the work since its last one.
CHECKPOINT_SECONDS = 2.0

RESUME = "resume"  # metadata key: the field changes output bytes; value: its name in a refusal
# metadata key: a field added after journals existed, recorded only when it differs from its
# default, so a journal written before it was added still resumes
WHEN_SET = "when_set"


def _output(words: str, when_set: bool = False) -> Any:
    return {RESUME: words, WHEN_SET: when_set}


@dataclass(frozen=True, kw_only=True)
class ScoringOptions:
    """What a scoring run does besides choosing its inputs, outputs and model.

    `proba`: one probability column per class; `class_names`: names from the model's metadata
    instead of indices; `provider`: auto, cuda or cpu; `batch_size`: rows per onnxruntime call
    (the output does not depend on it); `threads`: onnxruntime threads (None: the CPUs this
    process may use); `parse_threads`: CSV blocks parsed at once (None: by provider);
    `progress`: a bar on stderr (None: when stderr is a terminal); `chunk_bytes`: bytes of input
    per CSV block; `durable`: fsync outputs before renaming them into place;
    `checkpoint_seconds`: the least time between two resume checkpoints; `runtime`:
    onnxruntime or openvino; `precision`: fp32 or bf16 (openvino only); `proba_raw`: plain
    softmax probabilities, not divided by the model's calibration temperature; `flag_ood`: an
    `ood` column (1: the row's OOD score is beyond the reference's tail); `drift`: compare the
    rows with the model's reference profile (None: when the model carries one).
    """

    # the fields with RESUME metadata, in the order a refusal checks them
    proba: bool = field(default=False, metadata=_output("option --proba"))
    class_names: bool = field(default=False, metadata=_output("option --class-names"))
    provider: str = field(default="auto", metadata=_output("execution provider"))
    proba_raw: bool = field(default=False, metadata=_output("option --proba-raw", when_set=True))
    flag_ood: bool = field(default=False, metadata=_output("option --flag-ood", when_set=True))
    runtime: str = field(default="onnxruntime", metadata=_output("option --runtime", when_set=True))
    precision: str = field(default="fp32", metadata=_output("option --precision", when_set=True))
    drift: bool | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: int | None = None
    parse_threads: int | None = None
    progress: bool | None = None
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    durable: bool = True
    checkpoint_seconds: float = CHECKPOINT_SECONDS

    def __post_init__(self) -> None:
        for name in ("batch_size", "chunk_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("threads", "parse_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1 (or None), got {value}")
        Choice(self.runtime, self.precision)  # ConfigError for names that cannot run
        if self.checkpoint_seconds < 0:
            raise ConfigError(f"checkpoint_seconds must be >= 0, got {self.checkpoint_seconds}")

    @classmethod
    def of(cls, options: ScoringOptions | None = None, **changes: Any) -> ScoringOptions:
        """`options` (default: all defaults) with `changes` applied: the keyword call form."""
        base = options if options is not None else cls()
        return replace(base, **changes) if changes else base

    def identity(self, **resolved: Any) -> dict[str, Any]:
        """The output-changing fields as a resume journal records them (`options.<name>`);
        `resolved` replaces a requested value by the one in use (provider auto -> cpu)."""
        found = {f.name: resolved.get(f.name, getattr(self, f.name)) for f in output_fields()}
        return {
            f.name: found[f.name]
            for f in output_fields()
            if not f.metadata[WHEN_SET] or found[f.name] != f.default
        }


def output_fields() -> list[Any]:
    """The fields of `ScoringOptions` that change output bytes."""
    return [f for f in fields(ScoringOptions) if RESUME in f.metadata]


def refusal_words() -> dict[str, str]:
    """Journal key (`options.<name>`) -> the words a refused resume uses for it."""
    return {f"options.{f.name}": f.metadata[RESUME] for f in output_fields()}

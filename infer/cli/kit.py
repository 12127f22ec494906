"""What every fcls command shares: --version, -q/-v, JSON summaries, exit codes, one error path.

Torch-free and cheap to import (click and the standard library only, at import time), so that
`--help` and `--version` of any command stay fast. A command opts in with one decorator:

    @click.command(context_settings=CONTEXT)
    @click.option(...)
    @standard("fcls-infer")
    def main(..., run: Run) -> None:
        run.log("notice")                      # stderr, hidden by -q
        run.summary({"rows": 3}, "3 rows")     # human line, or JSON with --json/--summary-json

`standard` adds `--version`, `-q/--quiet`, `-v/--verbose` (counted), `--json` (the summary as
one JSON object on stdout instead of the human line) and `--summary-json FILE` (written
atomically), and turns every FclsError into `Error: <message>` plus the exit code of its kind
(EXIT_CODES, the one table; the README's is checked against it). Ctrl-C, SIGTERM and SIGHUP
stop a command the same way (`stop_signals`): the cleanup of a KeyboardInterrupt runs and the
exit status is 128 + the signal's number.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import click

from ..common.errors import (
    CheckpointError,
    FclsError,
    ModelError,
    OutputError,
    ParityError,
    ProviderError,
)
from ..common.spec import DEFAULT_BATCH_SIZE

CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"]}


class ExitCode(NamedTuple):
    """One exit status of every fcls command and what it means."""

    code: int
    meaning: str


OK = ExitCode(0, "success")
FAILED = ExitCode(1, "bad input data or options (DataError, ConfigError, a refused run)")
USAGE = ExitCode(2, "command-line usage: unknown option, bad value, missing argument (click)")
MODEL = ExitCode(
    3, "model, checkpoint or provider: missing, unreadable, wrong kind, failed gate, no CUDA"
)
OUTPUT = ExitCode(4, "an output cannot be written (disk full, permission, a file in the way)")
MISSING = ExitCode(5, "an optional dependency is not installed (the message names the extra)")
HANGUP = ExitCode(129, "hung up (SIGHUP); stopped as for Ctrl-C")
INTERRUPTED = ExitCode(130, "interrupted (Ctrl-C); nothing written unless --resume keeps it")
PIPE = ExitCode(141, "stdout closed early by its reader (`head` after `fcls-infer ... -o -`)")
TERMINATED = ExitCode(143, "terminated (SIGTERM: `kill`, `timeout`, a scheduler); as for Ctrl-C")
EXIT_CODES: tuple[ExitCode, ...] = (
    OK,
    FAILED,
    USAGE,
    MODEL,
    OUTPUT,
    MISSING,
    HANGUP,
    INTERRUPTED,
    PIPE,
    TERMINATED,
)
# Signals that stop a command like Ctrl-C: its cleanup runs, then exit 128 + the number
STOP_SIGNALS = {signal.SIGTERM: TERMINATED, signal.SIGHUP: HANGUP}


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread where Ctrl-C raises KeyboardInterrupt, so
    that every cleanup written for Ctrl-C (temps unlinked, journals kept) runs for them too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_code(error: KeyboardInterrupt) -> int:
    """128 + the signal's number: 143 for SIGTERM, 129 for SIGHUP, 130 for Ctrl-C."""
    return 128 + error.signum if isinstance(error, Stopped) else INTERRUPTED.code


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise `Stopped` in the main thread.

    After the first one, further stop signals are ignored: a scheduler that sends SIGTERM
    twice must not break the cleanup the first one started (SIGKILL still ends the process).
    Outside the main thread (signals cannot be handled there) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _: object) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def exit_code(error: BaseException) -> int:
    """The exit status for an error of fcls (1 for any FclsError not listed)."""
    if isinstance(error, (ModelError, CheckpointError, ParityError, ProviderError)):
        return MODEL.code
    if isinstance(error, OutputError):
        return OUTPUT.code
    if type(error).__name__ == "MissingExtraError":  # fcls.infer.extras, imported lazily
        return MISSING.code
    return FAILED.code


def exit_code_table() -> str:
    """The exit codes as the Markdown table the README carries."""
    rows = [f"| {c.code} | {c.meaning} |" for c in EXIT_CODES]
    return "\n".join(["| exit | meaning |", "| --- | --- |", *rows])


class Failure(click.ClickException):
    """A one-line `Error: ...` with the exit status of its kind."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code  # type: ignore[misc]  # click declares it a ClassVar


def fail(error: FclsError) -> Failure:
    """The click exception that prints `error` in one line and exits with its code."""
    return Failure(str(error), exit_code(error))


def _dist_version(*names: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version  # only --version pays for it

    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def versions(torch: bool = False) -> dict[str, str]:
    """fcls, onnxruntime and (when `torch`) torch versions, read from package metadata
    (nothing heavy is imported); a package that is not installed is 'not installed'."""
    from ..common.system import fcls_version

    found = {"fcls": fcls_version()}
    found["onnxruntime"] = _dist_version("onnxruntime", "onnxruntime-gpu") or "not installed"
    if torch:
        found["torch"] = _dist_version("torch") or "not installed"
    found["python"] = ".".join(map(str, sys.version_info[:3]))
    return found


def version_line(command: str, torch: bool = False) -> str:
    """`fcls-export 0.1.0 (onnxruntime 1.32.0, torch 2.13.0, python 3.11.9)`."""
    v = versions(torch)
    rest = ", ".join(f"{k} {val}" for k, val in v.items() if k != "fcls")
    return f"{command} {v['fcls']} ({rest})"


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def _finite(value: Any) -> Any:
    """NaN and infinities become null: JSON has no spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(summary: dict[str, Any]) -> str:
    """One JSON object on one line (paths as strings, NaN as null)."""
    return json.dumps(_finite(summary), default=_json_default, allow_nan=False)


@dataclass
class Run:
    """The conventions of one command invocation: verbosity and where the summary goes."""

    command: str
    verbosity: int = 1  # 0: -q, 1: default, 2+: -v
    json_stdout: bool = False
    summary_path: Path | None = None
    stdout_taken: bool = False  # set when stdout carries data (fcls-infer -o -)
    interrupt_note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def quiet(self) -> bool:
        """-q: errors only."""
        return self.verbosity <= 0

    @property
    def verbose(self) -> bool:
        """-v: details (versions, model hashes, per-stage lines)."""
        return self.verbosity >= 2

    @property
    def progress(self) -> bool | None:
        """Progress bars: never with -q, else when stderr is a terminal (None)."""
        return False if self.quiet else None

    def log(self, message: str) -> None:
        """A notice on stderr, prefixed with the command name; hidden by -q."""
        if not self.quiet:
            click.echo(f"{self.command}: {message}", err=True)

    def echo(self, line: str) -> None:
        """A line on stderr as it is (progress of a long run); hidden by -q."""
        if not self.quiet:
            click.echo(line, err=True)

    def detail(self, message: str) -> None:
        """A notice shown only with -v."""
        if self.verbose:
            click.echo(f"{self.command}: {message}", err=True)

    def summary(self, data: dict[str, Any], human: str, *, err: bool = False) -> None:
        """Print the run's result: `human` (stdout, or stderr with `err`) unless -q or --json;
        with --json the JSON object on stdout instead; with --summary-json also to that file."""
        record = {"command": self.command, "fcls_version": versions()["fcls"], **data}
        if self.summary_path is not None:
            from ..common.output import atomic_write_text

            atomic_write_text(self.summary_path, dumps(record) + "\n")
        if self.json_stdout:
            click.echo(dumps(record))
        elif not self.quiet:
            click.echo(human, err=err or self.stdout_taken)


F = TypeVar("F", bound=Callable[..., Any])


def scoring_options(threads_help: str) -> Callable[[F], F]:
    """--provider, --batch-size, --threads, --runtime and --precision, as every command that
    runs a model takes them."""

    def decorate(fn: F) -> F:
        for option in reversed(
            [
                click.option(
                    "--provider",
                    type=click.Choice(["auto", "cuda", "cpu"]),
                    default="auto",
                    show_default=True,
                ),
                click.option(
                    "--batch-size",
                    type=click.IntRange(min=1),
                    default=DEFAULT_BATCH_SIZE,
                    show_default=True,
                ),
                click.option(
                    "--threads", type=click.IntRange(min=1), default=None, help=threads_help
                ),
                click.option(
                    "--runtime",
                    type=click.Choice(["onnxruntime", "openvino"]),
                    default="onnxruntime",
                    show_default=True,
                    help="What runs the model file. openvino (CPU only; pip install "
                    '"fcls[openvino]") pays at --precision bf16 on CPUs with AVX512-BF16 or '
                    "AMX, and often at int8; -v says which ran fastest at export.",
                ),
                click.option(
                    "--precision",
                    type=click.Choice(["fp32", "bf16"]),
                    default="fp32",
                    show_default=True,
                    help="bf16: the fp32 file through OpenVINO in bfloat16, on CPUs with "
                    "AVX512-BF16 or AMX, for a model whose bf16 check passed (fcls-export "
                    "--bf16). int8 is the .int8.onnx file.",
                ),
            ]
        ):
            fn = option(fn)
        return fn

    return decorate


def standard(command: str, *, torch: bool = False) -> Callable[[F], F]:
    """Add --version, -q/-v, --json and --summary-json to a click command function, pass it
    a `run: Run`, and turn FclsError, Ctrl-C, SIGTERM and SIGHUP into one line and the
    documented exit code. Place it directly below `@click.command`."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            quiet, verbose = kwargs.pop("quiet"), kwargs.pop("verbose")
            if quiet and verbose:
                raise click.UsageError("-q/--quiet and -v/--verbose contradict each other")
            run = Run(
                command,
                verbosity=0 if quiet else 1 + verbose,
                json_stdout=kwargs.pop("json_stdout"),
                summary_path=kwargs.pop("summary_json"),
            )
            try:
                with stop_signals():
                    return fn(run=run, **kwargs)
            except FclsError as e:
                raise fail(e) from None
            except KeyboardInterrupt as e:
                what = f"stopped by {e.args[0]}" if isinstance(e, Stopped) else "interrupted"
                note = f"; {run.interrupt_note}" if run.interrupt_note else ""
                click.echo(f"{command}: {what}{note}", err=True)
                sys.exit(stop_code(e))

        options = _standard_options(command, torch)
        # click lists __click_params__ in reverse: these go after the command's own options
        params = getattr(wrapper, "__click_params__", [])
        wrapper.__click_params__ = [*reversed(options), *params]  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _standard_options(command: str, torch: bool) -> list[click.Option]:
    """The options `standard` adds to every command, in the order --help lists them."""
    return [
        click.Option(
            ["--version"],
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_print_version(command, torch),
            help="Print the fcls, onnxruntime"
            + (", torch" if torch else "")
            + " and Python versions and exit.",
        ),
        click.Option(["-q", "--quiet"], is_flag=True, help="Errors only: no notices, no bars."),
        click.Option(
            ["-v", "--verbose"], count=True, help="More detail (versions, hashes, timings)."
        ),
        click.Option(
            ["--json", "json_stdout"],
            is_flag=True,
            help="Print the summary as one JSON object on stdout instead of the human line.",
        ),
        click.Option(
            ["--summary-json"],
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Also write the summary as JSON to this file.",
        ),
    ]


def _print_version(
    command: str, torch: bool
) -> Callable[[click.Context, click.Parameter, bool], None]:
    def callback(ctx: click.Context, _: click.Parameter, value: bool) -> None:
        if not value or ctx.resilient_parsing:
            return
        click.echo(version_line(command, torch))
        ctx.exit(0)

    return callback

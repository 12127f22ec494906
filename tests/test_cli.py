"""The conventions every command shares (fcls.infer.cli.kit), fcls-infer's -o rule, the messages
that say what to do next, and the README's command lines checked against the CLIs."""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from helpers import sparse_pixels as pixels
from helpers import tiny_model

from fcls.bench import runner as bench_runner
from fcls.bench.cli import legacy_json
from fcls.bench.cli import main as bench_main
from fcls.export.cli import main as export_main
from fcls.infer.cli import infer as infer_cli
from fcls.infer.cli import kit as clikit
from fcls.infer.cli.convert import main as convert_main
from fcls.infer.cli.eval import main as eval_main
from fcls.infer.cli.infer import main as infer_main
from fcls.infer.common.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    ModelError,
    OutputError,
    ParityError,
    ProviderError,
)
from fcls.infer.common.extras import MissingExtraError
from fcls.infer.common.modelfile import looks_like_onnx, sniff
from fcls.infer.common.system import file_sha256
from fcls.infer.formats.csvfile import write_eval_csv
from fcls.train.cli import main as train_main
from fcls.train.study_cli import main as study_main

ROOT = Path(__file__).resolve().parents[1]
COMMANDS: dict[str, click.Command] = {
    "fcls-train": train_main,
    "fcls-export": export_main,
    "fcls-infer": infer_main,
    "fcls-convert": convert_main,
    "fcls-eval": eval_main,
    "fcls-bench": bench_main,
    "fcls-study": study_main,
}
TORCH_FREE = ("fcls-infer", "fcls-convert", "fcls-eval")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """tmp_path as the working directory, holding a.csv (20 rows) and b.csv (10 rows)."""
    monkeypatch.chdir(tmp_path)
    write_eval_csv(tmp_path / "a.csv", pixels(20))
    write_eval_csv(tmp_path / "b.csv", pixels(10, 1))
    return tmp_path


def infer(*args: str, stdin: bytes | None = None) -> click.testing.Result:
    result = CliRunner().invoke(infer_main, list(args), input=stdin)
    assert "Traceback" not in result.output, result.output
    return result


def _rows(path: Path) -> int:
    return len(path.read_text().splitlines()) - 1


# -- the -o rule --------------------------------------------------------------------------


def test_o_file_and_missing_parent_is_created(work, tiny):
    assert infer("a.csv", "-m", str(tiny), "-o", "r.csv").exit_code == 0
    assert _rows(work / "r.csv") == 20
    assert infer("a.csv", "-m", str(tiny), "-o", "new/deeper/r.csv").exit_code == 0
    assert _rows(work / "new/deeper/r.csv") == 20


@pytest.mark.parametrize(
    "inputs",
    [["a.csv"], ["a.csv", "a.csv"], ["a*.csv"]],
    ids=["one input", "same input twice", "glob matching one"],
)
@pytest.mark.parametrize("out", ["existing", "slash"])
def test_o_directory_whatever_the_input_count(work, tiny, inputs, out):
    if out == "existing":
        (work / "outdir").mkdir()
    arg = "outdir" if out == "existing" else "outdir/"
    result = infer(*inputs, "-m", str(tiny), "-o", arg)
    assert result.exit_code == 0, result.output
    assert [p.name for p in (work / "outdir").iterdir()] == ["a.results.csv"]


def test_o_directory_with_several_inputs(work, tiny):
    result = infer("a.csv", "b.csv", "-m", str(tiny), "-o", "out/")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (work / "out").iterdir()) == ["a.results.csv", "b.results.csv"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a.csv", "b.csv", "-o", "x"], "-o x: 2 inputs need an output directory"),
        (["a.csv", "b.csv"], "2 inputs write one results file each: give an output directory"),
        (["a.csv", "b.csv", "-o", "-"], "-o - (stdout) takes one input, got 2"),
        (["a.csv", "-"], "'-' (stdin) must be the only input"),
        (["-", "a.csv"], "'-' (stdin) must be the only input"),
        (["a.csv", "-o", "-", "--json"], "use --summary-json FILE, not --json"),
        (["a.csv", "-o", "-", "--resume"], "--resume needs an output file"),
    ],
)
def test_o_refusals_are_one_line(work, tiny, args, message):
    result = infer(*args, "-m", str(tiny))
    assert result.exit_code == clikit.FAILED.code, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in work.iterdir()) == ["a.csv", "b.csv"]


def test_o_under_a_file_is_an_output_error(work, tiny):
    result = infer("a.csv", "-m", str(tiny), "-o", "a.csv/r.csv")
    assert result.exit_code == clikit.OUTPUT.code
    assert "a.csv: cannot create the output directory" in result.output


def test_o_dash_is_stdout_with_the_summary_on_stderr(work, tiny):
    assert infer("a.csv", "-m", str(tiny), "-o", "file.csv").exit_code == 0
    result = infer("a.csv", "-m", str(tiny), "-o", "-")
    assert result.exit_code == 0
    assert result.stdout == (work / "file.csv").read_text()
    assert "20 rows in" in result.stderr and "-> <stdout>" in result.stderr
    piped = infer("-", "-m", str(tiny), "-o", "-", "-q", stdin=(work / "a.csv").read_bytes())
    assert piped.exit_code == 0 and piped.stdout == result.stdout and piped.stderr == ""
    assert sorted(p.name for p in work.iterdir()) == ["a.csv", "b.csv", "file.csv"]


def test_o_dash_failure_midway_writes_nothing_to_stdout(work, tiny):
    lines = (work / "a.csv").read_text().splitlines()
    lines[-1] = lines[-1].replace(",0,", ",x,", 1)  # the last row is bad
    (work / "bad.csv").write_text("\n".join(lines) + "\n")
    result = infer("bad.csv", "-m", str(tiny), "-o", "-")
    assert result.exit_code == clikit.FAILED.code
    assert result.stdout == "" and "bad.csv:21 column" in result.stderr


def test_o_dash_reader_gone_is_exit_141(work, tiny, monkeypatch):
    class Closed:
        def write(self, data: bytes) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            pass

    monkeypatch.setattr(infer_cli, "_stdout", Closed)
    result = infer("a.csv", "-m", str(tiny), "-o", "-", "-q")
    assert result.exit_code == clikit.PIPE.code and result.output == ""


# -- messages that say what to do next -----------------------------------------------------


def test_no_model_names_model_option_and_fcls_export(work):
    result = infer("a.csv")
    assert result.exit_code == clikit.MODEL.code
    assert "-m/--model" in result.output and "fcls-export" in result.output
    assert "artifacts/model.onnx" in result.output


def test_default_model_is_found_in_artifacts(work, tiny):
    (work / "artifacts").mkdir()
    shutil.copy(tiny, work / "artifacts" / "model.onnx")
    assert infer("a.csv", "-q").exit_code == 0 and _rows(work / "results.csv") == 20


def test_missing_and_directory_models(work, tiny):
    missing = infer("a.csv", "-m", "none.onnx")
    assert missing.exit_code == clikit.MODEL.code
    assert "none.onnx: no such model file; -m/--model picks" in missing.output
    assert "fcls-export" in missing.output
    (work / "models").mkdir()
    folder = infer("a.csv", "-m", "models")
    assert folder.exit_code == clikit.MODEL.code
    assert "models: is a directory, not a model file" in folder.output
    shutil.copy(tiny, work / "models" / "model.onnx")
    assert "did you mean -m models/model.onnx?" in infer("a.csv", "-m", "models").output


def _torch_checkpoint(path: Path) -> Path:
    import torch

    torch.save({"model": {"w": torch.zeros(2)}}, path)
    return path


def test_a_checkpoint_given_to_fcls_infer_names_fcls_export(work):
    ckpt = _torch_checkpoint(work / "model.onnx")  # by content, not by its name
    result = infer("a.csv", "-m", str(ckpt))
    assert result.exit_code == clikit.MODEL.code
    assert "is a PyTorch checkpoint, not an ONNX model; convert it with fcls-export" in (
        result.output
    )


def test_an_onnx_model_given_to_fcls_export_names_fcls_infer(work, tiny):
    fake = work / "model.pt"
    fake.write_bytes(tiny.read_bytes())
    result = CliRunner().invoke(export_main, [str(fake)])
    assert result.exit_code == clikit.MODEL.code
    assert "is an ONNX model (what fcls-export writes), not a PyTorch checkpoint" in result.output
    assert "fcls-infer" in result.output and "weights_only" not in result.output


def test_fcls_export_defaults_and_its_messages(work, tiny):
    result = CliRunner().invoke(export_main, [])
    assert result.exit_code == clikit.MODEL.code
    assert "artifacts/model.pt: no such checkpoint (fcls-train writes it)" in result.output
    both = CliRunner().invoke(export_main, ["a.pt", "-m", "b.pt"])
    assert both.exit_code == clikit.FAILED.code and "give one of them" in both.output
    (work / "artifacts").mkdir()
    folder = CliRunner().invoke(export_main, ["-m", "artifacts"])
    assert "artifacts: is a directory, not a checkpoint file" in folder.output


def test_sniff_tells_the_two_artefacts_apart(tmp_path, tiny):
    assert sniff(tiny) == "onnx"
    assert sniff(_torch_checkpoint(tmp_path / "c.bin")) == "torch"
    (tmp_path / "t.csv").write_text("ID,pix1\n1,0\n")
    assert sniff(tmp_path / "t.csv") == "unknown"
    data = tiny.read_bytes()
    assert looks_like_onnx(data, complete=True)
    assert not looks_like_onnx(data[:-3], complete=True)  # a cut graph field
    assert looks_like_onnx(data[:50], complete=False)  # a head: fine so far
    assert not looks_like_onnx(b"\x00junk", complete=True)


# -- --version, -q/-v, --json on all four --------------------------------------------------


@pytest.mark.parametrize("name", list(COMMANDS))
def test_version_on_every_command(name):
    result = CliRunner().invoke(COMMANDS[name], ["--version"])
    assert result.exit_code == 0
    line = result.output.strip()
    assert re.fullmatch(rf"{name} \S+ \(onnxruntime \S+(, torch \S+)?, python \S+\)", line), line
    assert ("torch" in line) == (name not in TORCH_FREE)


def test_help_and_version_import_neither_torch_nor_onnxruntime():
    code = (
        "import sys\n"
        "from fcls.train.cli import main as t\nfrom fcls.export.cli import main as e\n"
        "from fcls.infer.cli.infer import main as i\nfrom fcls.bench.cli import main as b\n"
        "from fcls.infer.cli.convert import main as c\nfrom fcls.infer.cli.eval import main as v\n"
        "from fcls.train.study_cli import main as s\n"
        "for m in (t, e, i, b, c, v, s):\n"
        "    for arg in ('--help', '--version'):\n"
        "        try:\n            m([arg])\n        except SystemExit as x:\n"
        "            assert x.code == 0, (m, arg)\n"
        "heavy = sorted(k for k in ('torch', 'onnxruntime', 'numpy', 'pyarrow') if k in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_infer_quiet_verbose_json(work, tiny):
    quiet = infer("a.csv", "-m", str(tiny), "-q")
    assert quiet.exit_code == 0 and quiet.output == ""
    verbose = infer("a.csv", "-m", str(tiny), "-v")
    assert f"sha256 {file_sha256(tiny)}" in verbose.stderr and "onnxruntime" in verbose.stderr
    assert "20 rows in" in verbose.stderr
    both = infer("a.csv", "-m", str(tiny), "-q", "-v")
    assert both.exit_code == clikit.USAGE.code
    result = infer(
        "a.csv", "b.csv", "-m", str(tiny), "-o", "out/", "--json", "--summary-json", "s.json"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # one object, nothing else on stdout
    assert summary == json.loads((work / "s.json").read_text())
    assert summary["command"] == "fcls-infer" and summary["rows"] == 30
    assert 0 < summary["seconds"] < 60 and summary["provider"] == "cpu"
    # seconds are rounded to the millisecond in the summary
    assert summary["rows_per_s"] == pytest.approx(summary["rows"] / summary["seconds"], rel=0.01)
    assert summary["model"] == str(tiny) and summary["model_sha256"] == file_sha256(tiny)
    assert [f["rows"] for f in summary["files"]] == [20, 10]
    assert summary["files"][0]["output"] == str(Path("out") / "a.results.csv")
    assert "rows in" not in result.stderr  # --json replaces the human line


def test_train_json_and_quiet_on_a_finished_run(tmp_path, trained, digits_csv):
    out = tmp_path / "run"
    shutil.copytree(trained, out)  # finished: re-evaluated, not retrained
    args = ["--data", str(digits_csv), "-o", str(out), "--max-epochs", "1", "--device", "cpu"]
    result = CliRunner().invoke(train_main, [*args, "--write-test-csv", "-q", "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    summary = json.loads(result.stdout)
    report = json.loads((out / "report.json").read_text())
    assert summary["test_accuracy"] == pytest.approx(report["test_accuracy"])
    assert summary["model"] == str(out / "model.pt")
    assert summary["model_sha256"] == file_sha256(out / "model.pt")
    assert summary["epochs"] == {"adam": 1, "sgd_wd": 1, "sgd": 1}  # --max-epochs 1
    with (out / "history.csv").open(newline="") as f:
        history = list(csv.DictReader(f))
    mean = sum(float(row["seconds"]) for row in history) / len(history)
    assert summary["seconds_per_epoch"] == pytest.approx(mean, abs=1e-3)
    assert summary["device"] == "cpu"


def test_export_json_and_summary_file(tmp_path, trained):
    dest = tmp_path / "m.onnx"
    result = CliRunner().invoke(
        export_main,
        ["-m", str(trained / "model.pt"), "-o", str(dest), "-q", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    summary = json.loads(result.stdout)
    assert summary["output"] == str(dest) and summary["model_sha256"] == file_sha256(dest)
    assert summary["checkpoint_sha256"] == file_sha256(trained / "model.pt")
    assert summary["top1_agreement"] == 1.0 and summary["max_abs_dlogit"] < 1e-3


def test_bench_json_and_the_old_json_file_spelling(tmp_path, monkeypatch):
    report = {"rows": 3, "figures": [1.5, float("nan")]}
    seen = []
    monkeypatch.setattr(
        bench_runner, "run_bench", lambda config, log: seen.append(config) or report
    )
    monkeypatch.setattr(bench_runner, "format_report", lambda r: "THE TABLE")
    out = tmp_path / "b.json"
    old = CliRunner().invoke(bench_main, ["--workdir", str(tmp_path), "--json", str(out)])
    assert old.exit_code == 0 and old.stdout == "THE TABLE\n"
    written = json.loads(out.read_text())
    assert written["rows"] == 3 and written["figures"] == [1.5, None]
    new = CliRunner().invoke(bench_main, ["--workdir", str(tmp_path), "--json", "-m", "x.onnx"])
    assert new.exit_code == 0 and json.loads(new.stdout)["command"] == "fcls-bench"
    assert seen[-1].model == Path("x.onnx")
    assert CliRunner().invoke(bench_main, ["--workdir", str(tmp_path), "-q"]).output == ""
    assert legacy_json(["--json=a.json", "--quick"]) == ["--summary-json=a.json", "--quick"]


# -- exit codes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (DataError("x.csv", "bad", 3), clikit.FAILED),
        (ConfigError("x"), clikit.FAILED),
        (ModelError("x"), clikit.MODEL),
        (CheckpointError("x"), clikit.MODEL),
        (ParityError("x"), clikit.MODEL),
        (ProviderError("x"), clikit.MODEL),
        (OutputError("x"), clikit.OUTPUT),
        (MissingExtraError("x"), clikit.MISSING),
    ],
)
def test_exit_code_of_each_error_kind(error, code):
    assert clikit.exit_code(error) == code.code
    assert clikit.fail(error).exit_code == code.code


def test_readme_exit_code_table_is_clikits():
    assert clikit.exit_code_table() in (ROOT / "README.md").read_text()


# -- README command lines against the CLIs ---------------------------------------------------


def _blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, re.S)


def _commands(block: str) -> list[list[str]]:
    """Each fcls-* command line of a shell block (continuations joined, `&&` and `|` split)."""
    lines = block.replace("\\\n", " ").splitlines()
    found = []
    for line in lines:
        line = line.split(" #", 1)[0]
        for part in re.split(r"&&|\||;", line):
            words = shlex.split(re.split(r"\s[<>]\s", part)[0])  # drop redirections
            if words and words[0] in COMMANDS:
                found.append(words)
    return found


def _section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start : end if end > 0 else None]


def test_every_readme_command_line_parses():
    """The quickstart and every example: each line is valid for the current CLI."""
    text = (ROOT / "README.md").read_text()
    lines = [words for block in _blocks(text) for words in _commands(block)]
    assert len(lines) >= 5
    for words in lines:
        if any("[" in w for w in words):
            continue  # a synopsis, checked below
        command = COMMANDS[words[0]]
        command.make_context(words[0], [w for w in words[1:] if w != "..."])  # raises if not valid


def test_readme_synopses_match_the_options():
    """Each command's synopsis names every option it has (one spelling is enough), and
    nothing it does not have."""
    text = _section((ROOT / "README.md").read_text(), "## Commands")
    for name, command in COMMANDS.items():
        synopses = [b for b in _blocks(text) if re.match(rf"{name} [\[A-Z]", b)]
        assert synopses, f"no synopsis for {name}"
        named = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][a-z0-9-]*)", " ".join(synopses)))
        options = [p for p in command.params if isinstance(p, click.Option) and not p.hidden]
        spellings = {o for p in options for o in (*p.opts, *p.secondary_opts)}
        assert named - spellings == set(), f"{name}: README names options it lacks"
        missing = [p.opts for p in options if "--help" not in p.opts and not set(p.opts) & named]
        assert missing == [], f"{name}: options missing from its README synopsis"


def _writes_to_bullet(command: str) -> str:
    """The `- Writes to ...` bullet of a command's README section, whitespace flattened."""
    section = _section((ROOT / "README.md").read_text(), "## Commands")
    start = section.index(f"### `{command}`")
    bullet = section.index("\n- Writes to ", start)
    end = min(i for i in (section.find("\n- ", bullet + 1), section.find("\n###", bullet)) if i > 0)
    return " ".join(section[bullet:end].split())


@pytest.mark.slow
def test_readme_names_every_file_fcls_train_writes(tmp_path, digits_csv):
    """Every file a finished run leaves in -o (hidden ones included: a lock or temp file would
    be one) is named in the README's Writes-to bullet, so users know what they may delete."""
    out = tmp_path / "run"
    args = ["--data", digits_csv, "-o", out, "--max-epochs", 1, "--limit", 200]
    summary = tmp_path / "summary.json"  # written where it is asked for, not into -o
    result = CliRunner().invoke(
        train_main, [str(a) for a in [*args, "--write-test-csv", "--summary-json", summary]]
    )
    assert result.exit_code == 0, result.output
    assert summary.exists()
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert "state.pt" in written and "model.pt" in written  # the resume state stays
    bullet = _writes_to_bullet("fcls-train")
    unnamed = [name for name in written if f"`{name}`" not in bullet]
    assert unnamed == [], f"README's fcls-train 'Writes to' bullet does not name {unnamed}"


def test_output_paths_str_and_path(tmp_path):
    """The CLI's -o is a string (a trailing '/' means a directory); a library caller's Path
    cannot carry the '/', so with several inputs it names a directory."""
    from fcls.infer.formats.paths import output_paths

    inputs = [tmp_path / "a.csv", tmp_path / "b.csv"]
    with pytest.raises(ConfigError, match="2 inputs need an output directory"):
        output_paths(inputs, str(tmp_path / "o"))
    assert output_paths(inputs, tmp_path / "o") == [
        tmp_path / "o" / f"{s}.results.csv" for s in "ab"
    ]
    assert output_paths(inputs[:1], tmp_path / "f.csv") == [tmp_path / "f.csv"]

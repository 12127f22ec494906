"""fcls.train.config: --class-names parsing and checks, and the names' way to every artefact."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import deadline

from fcls.infer.common.errors import ConfigError
from fcls.train.config import (
    FAST,
    RECIPES,
    Recipe,
    TrainConfig,
    check_class_names,
    parse_class_names,
)

TEN = tuple(f"c{i}" for i in range(10))
# a comma, a quote, a slash and non-ASCII: all must survive into CSV headers and cells
ODD = ("zero", 'one, "1"', "two/2", "drei", "four", "five", "six", "seven", "eight", "neuñ")


def test_comma_list_and_file(tmp_path: Path):
    assert parse_class_names(" c0, c1 ,c2,c3,c4,c5,c6,c7,c8,c9") == TEN
    names = tmp_path / "names.txt"
    names.write_bytes(("\ufeff" + "\r\n".join(ODD) + "\r\n\n").encode())  # BOM, CRLF, blank tail
    assert parse_class_names(f"@{names}") == ODD


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a", "1 name given: a classifier has at least 2 classes"),
        (",".join([*TEN[:9], " "]), "name 10 is empty"),
        (",".join([*TEN[:9], "c0"]), "names repeat ('c0')"),
        (",".join([*TEN[:9], "a\rb"]), "name 10 ('a\\rb') contains a line break"),
        (",".join([*TEN[:9], "a\x07b"]), "contains a control character"),
    ],
)
def test_bad_names_are_refused(value: str, message: str):
    with pytest.raises(ConfigError, match=f"^--class-names: .*{re.escape(message)}"):
        parse_class_names(value)


def test_bad_files(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"cannot read .*gone\.txt"):
        parse_class_names(f"@{tmp_path / 'gone.txt'}")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n".join([*TEN[:5], "", *TEN[6:]]) + "\n")  # a blank line inside: a name
    with pytest.raises(ConfigError, match="name 6 is empty"):
        parse_class_names(f"@{blank}")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("\n".join(ODD).encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        parse_class_names(f"@{latin1}")


def test_config_checks_names_and_keeps_them_out_of_the_identity():
    with pytest.raises(ConfigError, match="at least 2 classes"):
        TrainConfig(class_names=("a",))
    config = TrainConfig(class_names=TEN)
    assert config.to_dict()["class_names"] == list(TEN)  # plain types for the checkpoint
    assert config.identity() == TrainConfig().identity()  # renaming never blocks a resume
    assert check_class_names(list(TEN)) == TEN


def test_cli_refuses_bad_names_before_any_work(tmp_path: Path):
    from fcls.train.cli import main

    result = CliRunner().invoke(main, ["--out", str(tmp_path / "o"), "--class-names", "a,a"])
    assert result.exit_code == 2
    assert "Invalid value for --class-names: names repeat ('a')" in result.output
    assert not (tmp_path / "o").exists()


def test_image_size_and_arch_are_checked_before_any_work(tmp_path: Path):
    from fcls.train.cli import main

    out = tmp_path / "o"
    bad_size = CliRunner().invoke(main, ["--out", str(out), "--image-size", "32by32"])
    assert bad_size.exit_code == 2 and "Invalid value for --image-size" in bad_size.output
    bad_arch = CliRunner().invoke(main, ["--out", str(out), "--arch", "NoSuchNet"])
    assert bad_arch.exit_code == 2 and "unknown network 'NoSuchNet'" in bad_arch.output
    assert "FinalCNNet" in bad_arch.output and "Traceback" not in bad_arch.output
    with pytest.raises(ConfigError, match="--image-size"):
        TrainConfig(image_size="0x5")
    assert not out.exists()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (("a", "b", "c"), "3 names given, the data has 10 classes (labels 0..9): give exactly 10"),
        (tuple(f"n{i}" for i in range(11)), "11 names given, the data has 10 classes"),
    ],
)
def test_class_name_count_is_checked_against_the_data(given: tuple[str, ...], message: str):
    from fcls.train.data import load_dataset

    with pytest.raises(ConfigError, match=f"^--class-names: {re.escape(message)}"):
        load_dataset(None, limit=200, class_names=given)
    assert load_dataset(None, limit=200, class_names=TEN)[2] == TEN


def test_new_fields_keep_old_identities_and_record_themselves():
    """A run saved before --arch and --image-size existed still resumes; others differ."""
    plain = TrainConfig().identity()
    assert "arch" not in plain and "image_size" not in plain
    other = TrainConfig(arch="CNN", image_size="32x32").identity()
    assert other["arch"] == "CNN" and other["image_size"] == "32x32"
    assert TrainConfig(arch="CNN").to_dict()["arch"] == "CNN"


@pytest.mark.slow
def test_names_flow_from_fcls_train_to_every_artefact(tmp_path: Path, trained: Path, digits_csv):
    """fcls-train --class-names @FILE -> model.pt, report.json -> ONNX metadata -> Predictor
    -> fcls-infer --class-names/--proba and fcls-eval.

    The finished session run is copied and re-evaluated under new names (the trainer's path
    through load, split, report and checkpoint, without the epochs: names are not part of a
    run's identity, so renaming a finished run is allowed and costs seconds).
    """
    from fcls.export import ExportConfig, export_onnx
    from fcls.infer import Predictor
    from fcls.infer.cli.eval import main as fcls_eval
    from fcls.infer.cli.infer import main as infer
    from fcls.train.checkpoint import Checkpoint
    from fcls.train.cli import main as fcls_train

    run = shutil.copytree(trained, tmp_path / "run")
    names_file = tmp_path / "names.txt"
    names_file.write_text("\n".join(ODD) + "\n")
    with deadline(120):
        result = CliRunner().invoke(
            fcls_train,
            [
                "--data",
                str(digits_csv),
                "--out",
                str(run),
                "--max-epochs",
                "1",
                "--device",
                "cpu",
                "--class-names",
                f"@{names_file}",
            ],
        )
    assert result.exit_code == 0, result.output
    assert "training already finished" in result.output  # no epochs were run again
    assert Checkpoint.load(run / "model.pt").class_names == ODD
    report = json.loads((run / "report.json").read_text())
    assert report["class_names"] == list(ODD) and list(report["per_class"]) == list(ODD)

    onnx_path = tmp_path / "model.onnx"
    export_onnx(run / "model.pt", onnx_path, ExportConfig(), log=lambda s: None)
    assert Predictor(onnx_path, "cpu").class_names == list(ODD)

    results = tmp_path / "results.csv"
    args = [str(run / "test.csv"), "--model", str(onnx_path), "-o", str(results)]
    result = CliRunner().invoke(infer, [*args, "--class-names", "--proba", "--quiet"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(results.read_text())))
    assert rows[0] == ["ID", "label", *(f"p_{n}" for n in ODD)]
    assert len(rows) == 81 and {r[1] for r in rows[1:]} <= set(ODD)
    plain = tmp_path / "plain.csv"
    result = CliRunner().invoke(infer, [*args[:3], "-o", str(plain), "--quiet"])
    assert result.exit_code == 0, result.output
    indices = [int(r[1]) for r in list(csv.reader(io.StringIO(plain.read_text())))[1:]]
    assert [r[1] for r in rows[1:]] == [ODD[i] for i in indices]  # the same labels, named

    out = tmp_path / "eval"
    result = CliRunner().invoke(fcls_eval, [str(digits_csv), "-m", str(onnx_path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "report.json").read_text())["class_names"] == list(ODD)


@pytest.mark.parametrize("recipe", list(RECIPES.values()), ids=list(RECIPES))
def test_recipe_round_trips_through_the_saved_config(recipe: Recipe):
    config = TrainConfig(recipe=recipe)
    saved = config.to_dict()
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert Recipe.of_run(saved) == recipe
    assert Recipe.of_run(json.loads(json.dumps(saved))) == recipe  # report.json's JSON too


def test_notebook_recipe_keeps_the_identity_runs_had_before_recipes():
    """A state.pt written before recipes existed must still resume."""
    identity = TrainConfig().identity()
    assert "recipe" not in identity
    assert identity["stages"] == [
        {"name": "adam", "optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-3},
        {"name": "sgd_wd", "optimizer": "sgd", "lr": 1e-3, "weight_decay": 1e-3},
        {"name": "sgd", "optimizer": "sgd", "lr": 1e-3, "weight_decay": 0.0},
    ]
    fast = TrainConfig(recipe=FAST).identity()
    assert fast["recipe"]["name"] == "fast" and fast["stages"][0]["nesterov"] is True


# -- the recipes' figures: --help and README.md say what train/config.py holds -----------------

WORDS = {"one": 1, "two": 2, "three": 3, "four": 4}
README = Path(__file__).resolve().parents[1] / "README.md"


def _flat(text: str) -> str:
    """Text with every run of whitespace one space (click wraps --help, Markdown wraps lines)."""
    return " ".join(text.split())


def _figure(pattern: str, text: str, where: str) -> tuple[str, ...]:
    found = re.search(pattern, text)
    assert found is not None, f"{where} no longer says {pattern!r}"
    return found.groups()


def _fcls_train_section() -> str:
    text = README.read_text()
    start = text.index("### `fcls-train`")
    return _flat(text[start : text.index("\n### ", start + 1)])


def test_help_and_readme_state_the_recipes_of_config():
    from fcls.train.cli import main as train_main
    from fcls.train.config import NOTEBOOK

    result = CliRunner().invoke(train_main, ["--help"])
    assert result.exit_code == 0, result.output
    help_text = _flat(result.output)
    notebook = (len(NOTEBOOK.stages), NOTEBOOK.patience)
    fast = (len(FAST.stages), FAST.epochs, FAST.patience)
    defaults = (TrainConfig.max_epochs, TrainConfig.batch_size)

    n, p = _figure(
        r"the reference notebook's (\w+) stages \([^;]*; patience (\d+)\)", help_text, "--help"
    )
    assert (WORDS[n], int(p)) == notebook, "--help: the notebook recipe"
    n, e, p = _figure(
        r"fast: (\w+) stages? of .*? \((\d+) epochs\), .*? early stopping \(patience (\d+)\)",
        help_text,
        "--help",
    )
    assert (WORDS[n], int(e), int(p)) == fast, "--help: the fast recipe"
    m = _figure(r"--max-epochs .*? (\d+)-epoch schedule .*?\[default: (\d+)", help_text, "--help")
    assert int(m[0]) == FAST.epochs and int(m[1]) == TrainConfig.max_epochs
    b = _figure(r"--batch-size .*?\[default: (\d+)", help_text, "--help")
    assert int(b[0]) == TrainConfig.batch_size
    p = _figure(r"Default: the recipe's \(notebook (\d+), fast (\d+)\)", help_text, "--help")
    assert tuple(map(int, p)) == (NOTEBOOK.patience, FAST.patience)

    readme = _fcls_train_section()
    n, b = _figure(r"then (\w+) stages \([^;]*; batch (\d+)\)", readme, "README")
    p, m = _figure(
        r"`--patience` \((\d+)\) epochs or after `--max-epochs` \((\d+)\)", readme, "README"
    )
    assert (WORDS[n], int(p)) == notebook, "README: the notebook recipe"
    assert (int(m), int(b)) == defaults, "README: --max-epochs and the batch size"
    n, e, p = _figure(
        r"`--recipe fast` .*? (\w+) stages? of .*? schedule over (\d+) epochs, .*?"
        r"early stopping \(patience (\d+)\)",
        readme,
        "README",
    )
    assert (WORDS[n], int(e), int(p)) == fast, "README: the fast recipe"

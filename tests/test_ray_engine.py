"""fcls-infer --engine ray: byte-identical outputs, order restored, same bad-input rules."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import deadline, write_eval_csv

from fcls.infer.cli.infer import main
from fcls.infer.common.errors import ConfigError, DataError, OutputError
from fcls.infer.common.spec import DEFAULT_SPEC, SPEC_KEY, ImageSpec
from fcls.infer.engine import ray as ray_engine
from fcls.infer.engine.options import ScoringOptions
from fcls.infer.engine.pipeline import predict_csv, predict_files
from fcls.infer.engine.predictor import Predictor
from fcls.infer.engine.ray import WorkerError, _OrderedWriter, plan_shards
from fcls.infer.formats.paths import expand_inputs, output_paths
from fcls.infer.formats.results import header_line

SIZES = (1200, 1000, 1300)  # 3,500 rows in all


def _mirrored(pixels: np.ndarray) -> np.ndarray:
    """The images of (n, P) grayscale rows of the default spec, flipped left to right."""
    s = DEFAULT_SPEC
    return pixels.reshape(-1, s.height, s.width)[:, :, ::-1].reshape(-1, s.n_pixels)


@pytest.fixture(scope="module")
def parts(tmp_path_factory, digits) -> list[Path]:
    """Three evaluate files cut from the digits (twice over, flipped), with string IDs."""
    pixels = np.concatenate([digits[0], _mirrored(digits[0])])
    folder = tmp_path_factory.mktemp("parts")
    paths, start = [], 0
    for i, n in enumerate(SIZES):
        ids = [f"f{i}-{j}" for j in range(n)]
        paths.append(write_eval_csv(folder / f"part{i}.csv", pixels[start : start + n], ids))
        start += n
    return paths


def test_plan_shards_cover_the_file_on_row_boundaries(parts):
    path = parts[2]
    header, blocks = plan_shards(0, path, DEFAULT_SPEC, shard_bytes=100_000)
    data = path.read_bytes()
    assert len(blocks) > 5 and data.startswith(header)
    assert b"".join(data[b.start : b.end] for b in blocks) == data[len(header) :]
    for b in blocks:
        assert data[b.start - 1 : b.start] == b"\n"
        assert b.first_row_at == data[: b.start].count(b"\n") + 1


def test_inputs_and_outputs(tmp_path, parts):
    folder = parts[0].parent
    assert expand_inputs([str(folder)]) == [p.resolve() for p in parts]
    assert expand_inputs([str(folder / "part[02].csv")]) == [parts[0].resolve(), parts[2].resolve()]
    with pytest.raises(DataError, match="no such file"):
        expand_inputs([str(tmp_path / "missing.csv")])
    assert output_paths([parts[0]], None) == [Path("results.csv")]
    outs = output_paths(list(parts), tmp_path / "out")
    assert [p.name for p in outs] == ["part0.results.csv", "part1.results.csv", "part2.results.csv"]
    with pytest.raises(ConfigError, match="directory"):
        output_paths(list(parts), None)


def test_local_engine_handles_several_inputs(tmp_path, parts, exported):
    result = CliRunner().invoke(
        main, [*map(str, parts), "--model", str(exported), "-o", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    for p in parts:
        single = tmp_path / "single.csv"
        predict_csv(p, single, exported)
        assert (tmp_path / f"{p.stem}.results.csv").read_bytes() == single.read_bytes()


def test_local_engine_is_all_or_nothing(tmp_path, parts, exported):
    bad = tmp_path / "zbad.csv"
    bad.write_text(parts[0].read_text().replace(",0,", ",x,", 1))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, [str(parts[0]), str(bad), "--model", str(exported), "-o", f"{out}/"]
    )
    assert result.exit_code != 0 and "zbad.csv:2 column" in result.output
    assert list(out.iterdir()) == []  # part0's finished output was not published either


def _pieces(file: int, rows_per_part: list[list[int]], tag: str) -> list[dict]:
    """The scoring stage's pieces for one file: blocks of parts of `n` rows, each cut in two."""
    pieces = []
    for block, parts in enumerate(rows_per_part):
        for part, n in enumerate(parts):
            for lo, hi in ((0, n // 2), (n // 2, n)):
                if hi > lo or n == 0:
                    text = "".join(f"{tag}{block}.{part}.{r}\n" for r in range(lo, hi)).encode()
                    pieces.append(
                        {
                            "file": file,
                            "shard": block,
                            "part": part,
                            "row": lo,
                            "rows": hi - lo,
                            "part_rows": n,
                            "last": part == len(parts) - 1,
                            "text": text,
                            "drift": b"",
                            "error": "",
                        }
                    )
                if n == 0:
                    break
    return pieces


def _error(file: int, block: int, part: int, line: int) -> dict:
    fields = {"source": f"in{file}.csv", "message": "bad", "line": line, "column": "pix1"}
    return {
        "file": file,
        "shard": block,
        "part": part,
        "row": 0,
        "rows": 0,
        "part_rows": 0,
        "last": True,
        "text": b"",
        "drift": b"",
        "error": json.dumps(fields),
    }


def _writer(tmp_path: Path, blocks: list[int]) -> _OrderedWriter:
    temps = [tmp_path / f"t{i}" for i in range(len(blocks))]
    dests = [tmp_path / f"d{i}.csv" for i in range(len(blocks))]
    return _OrderedWriter(temps, dests, blocks, b"ID,label\n")


def test_ordered_writer_puts_shuffled_pieces_back_in_input_order(tmp_path):
    layout = [[[3, 4], [5]], [[2], [0], [7, 1]], []]  # file -> block -> part rows
    pieces = [p for f, blocks in enumerate(layout) for p in _pieces(f, blocks, f"f{f}:")]
    expected = [
        b"ID,label\n" + b"".join(p["text"] for p in pieces if p["file"] == f) for f in (0, 1, 2)
    ]
    for seed in range(5):
        random.Random(seed).shuffle(pieces)
        with _writer(tmp_path, [len(b) for b in layout]) as writer:
            for piece in pieces:
                writer.add(piece)
                assert writer.first_error() is None
            writer.finish()
        assert [(tmp_path / f"t{f}").read_bytes() for f in (0, 1, 2)] == expected
        assert writer.rows == [12, 10, 0] and writer.buffered == 0
    # pieces in input order never wait
    with _writer(tmp_path, [len(b) for b in layout]) as writer:
        for piece in sorted(pieces, key=lambda p: (p["file"], p["shard"], p["part"], p["row"])):
            writer.add(piece)
        writer.finish()
    assert writer.peak == 1


def test_ordered_writer_reports_the_first_bad_row_in_input_order(tmp_path):
    good = _pieces(0, [[4], [4], [4]], "a") + _pieces(1, [[4], [4]], "b")
    late = _error(0, 2, 0, 20)  # file 0, block 2
    early = _error(1, 0, 0, 2)  # file 1, block 0: later in input order
    with _writer(tmp_path, [3, 2]) as writer:
        writer.add(early)
        assert writer.first_error() is None  # file 0 is not complete: it may hold a bad row
        for piece in [p for p in good if p["file"] == 1] + [late]:
            writer.add(piece)
        assert writer.first_error() is None  # blocks 0-1 of file 0 have not arrived
        for piece in [p for p in good if p["file"] == 0 and p["shard"] < 2]:
            writer.add(piece)
        error = writer.first_error()
    assert isinstance(error, DataError) and str(error) == "in0.csv:20 column pix1: bad"
    # at the end of the stream the first one is reported too
    with _writer(tmp_path, [3, 2]) as writer:
        for piece in [early, late]:
            writer.add(piece)
        with pytest.raises(DataError, match=r"in0\.csv:20 column pix1"):
            writer.finish()


def test_ordered_writer_refuses_a_missing_piece(tmp_path):
    pieces = _pieces(0, [[4], [6]], "a")
    with _writer(tmp_path, [2]) as writer:
        for piece in pieces[:-1]:
            writer.add(piece)
        with pytest.raises(
            WorkerError, match=r"d0.csv: Ray returned no result for shard 1 part 0 row 3"
        ):
            writer.finish()


def test_ordered_writer_names_the_destination_when_writing_fails(tmp_path):
    (tmp_path / "t0").mkdir()  # the temp cannot be opened as a file
    with (
        _writer(tmp_path, [1]) as writer,
        pytest.raises(OutputError, match=r"d0\.csv: cannot write"),
    ):
        for piece in _pieces(0, [[2]], "a"):
            writer.add(piece)


@pytest.mark.slow
def test_ray_outputs_equal_single_process_bytes(tmp_path, parts, exported, ray_local):
    from fcls.infer.engine.ray import predict_csv_ray

    out = tmp_path / "out"
    out.mkdir()
    summaries = predict_csv_ray(
        [str(p) for p in parts],
        out,
        exported,
        workers=2,
        shard_bytes=150_000,
        flag_ood=True,
        drift_report=tmp_path / "ray.drift.json",
    )
    assert [s.rows for s in summaries] == list(SIZES)
    for p in parts:
        single = tmp_path / f"{p.stem}.single.csv"
        predict_csv(p, single, exported, flag_ood=True)
        assert (out / f"{p.stem}.results.csv").read_bytes() == single.read_bytes()
    # the workers' drift counts, added up in the driver, give the local engine's report
    local = predict_files(
        parts,
        [tmp_path / f"{p.stem}.local.csv" for p in parts],
        exported,
        drift_report=tmp_path / "local.drift.json",
    )
    ray_report = json.loads((tmp_path / "ray.drift.json").read_text())
    local_report = json.loads((tmp_path / "local.drift.json").read_text())
    assert ray_report["run"] == local_report["run"] and ray_report["run"]["rows"] == sum(SIZES)
    assert [f["verdict"] for f in ray_report["files"]] == [s.drift["verdict"] for s in local]
    assert [s.drift for s in summaries] == [s.drift for s in local]

    # one input: -o is the file itself, and --proba output matches too
    result = CliRunner().invoke(
        main,
        [
            str(parts[1]),
            "--engine",
            "ray",
            "--model",
            str(exported),
            "-o",
            str(tmp_path / "one.csv"),
            "--proba",
        ],
    )
    assert result.exit_code == 0, result.output
    predict_csv(parts[1], tmp_path / "one_single.csv", exported, proba=True)
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "one_single.csv").read_bytes()


@pytest.mark.slow
def test_ray_bad_row_names_file_and_line_and_writes_nothing(tmp_path, parts, exported, ray_local):
    bad = tmp_path / "bad.csv"
    lines = parts[0].read_text().splitlines()
    cells = lines[500].split(",")
    cells[10] = "300"
    lines[500] = ",".join(cells)
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [str(parts[1]), str(bad), "--engine", "ray", "--model", str(exported), "-o", f"{out}/"],
    )
    assert result.exit_code != 0
    assert f"{bad}:501 column pix10: pixel 300 is out of range 0..255" in result.output
    assert sorted(p.name for p in out.iterdir()) == []


@pytest.mark.slow
def test_scored_pieces_rebuild_the_file_however_ray_batches_them(
    tmp_path, parts, exported, ray_local
):
    """Parse outputs merged and cut across parts and blocks (as GPU batches are), blocks of
    blank lines only, pieces arriving shuffled: the output is still the single-process one."""
    lines = parts[0].read_text().splitlines(keepends=True)
    src = tmp_path / "gaps.csv"
    src.write_text("".join(lines[:600]) + "\n" * 250_000 + "".join(lines[600:]))
    _, blocks = plan_shards(0, src, DEFAULT_SPEC, shard_bytes=100_000)
    parsed = [
        part
        for b in blocks
        for part in ray_engine._parse({k: np.array([v]) for k, v in b.__dict__.items()})
    ]
    assert any(int(p["part_rows"][0]) == 0 for p in parsed)  # a block of blank lines only
    columns = {k: np.concatenate([p[k] for p in parsed]) for k in parsed[0]}
    model = [ray_local.put(exported.read_bytes())]
    scorer = ray_engine._Scorer(
        model, ScoringOptions(provider="cpu", threads=1, batch_size=64, proba=True)
    )
    pieces = []
    for lo in range(0, len(columns["file"]), 170):  # batches cut across parts and blocks
        out = scorer({k: v[lo : lo + 170] for k, v in columns.items()})
        pieces += [{k: v[i] for k, v in out.items()} for i in range(len(out["file"]))]
    random.Random(0).shuffle(pieces)
    names = Predictor(exported, "cpu", 1).class_names
    dest = tmp_path / "ray.csv"
    with _OrderedWriter([dest], [dest], [len(blocks)], header_line(True, False, names)) as w:
        for piece in pieces:
            w.add(piece)
        w.finish()
    predict_csv(src, tmp_path / "single.csv", exported, proba=True)
    assert dest.read_bytes() == (tmp_path / "single.csv").read_bytes()
    assert w.rows == [len(lines) - 1]


def _faulty_stages(monkeypatch, stage: str, marker: Path, always: bool) -> list[_OrderedWriter]:
    """Make the `stage` workers SIGKILL themselves mid-run: once (marker), or on every call.

    The replacements are local functions and classes (Ray ships them by value: the workers
    cannot import this module); the driver's writers are recorded to read their buffer peak.
    """

    def die() -> None:
        if not always:  # only the first caller, across processes: the marker file is the flag
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer or a lost node would

    if stage == "actor":
        base = ray_engine._Scorer

        class Dying(base):  # type: ignore[misc,valid-type]
            calls = 0

            def __call__(self, batch):
                self.calls += 1
                if self.calls == 3 or always:
                    die()
                return super().__call__(batch)

        monkeypatch.setattr(ray_engine, "_Scorer", Dying)
    else:
        parse = ray_engine._parse

        def dying_parse(batch):
            if always or (int(batch["file"][0]) == 1 and int(batch["index"][0]) == 4):
                die()
            yield from parse(batch)

        monkeypatch.setattr(ray_engine, "_parse", dying_parse)
    writers: list[_OrderedWriter] = []

    class Recorded(_OrderedWriter):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            writers.append(self)

    monkeypatch.setattr(ray_engine, "_OrderedWriter", Recorded)
    return writers


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["actor", "parse"])
def test_ray_survives_a_killed_worker(stage, tmp_path, parts, exported, ray_local, monkeypatch):
    """A scoring actor / parse worker SIGKILLed mid-run: Ray redoes its work, same bytes."""
    marker = tmp_path / "killed"
    writers = _faulty_stages(monkeypatch, stage, marker, always=False)
    out = tmp_path / "out"
    inputs = parts[:2]
    with deadline(240):
        summaries = ray_engine.predict_csv_ray(
            [str(p) for p in inputs], out, exported, workers=2, shard_bytes=150_000, proba=True
        )
    assert marker.exists()  # the kill did happen
    assert [s.rows for s in summaries] == list(SIZES[:2])
    for p in inputs:
        single = tmp_path / f"{p.stem}.single.csv"
        predict_csv(p, single, exported, proba=True)
        assert (out / f"{p.stem}.results.csv").read_bytes() == single.read_bytes()
    # results arrive in input order even around the redone work: nothing waits in the driver
    assert writers[0].peak == 1
    assert sorted(p.name for p in out.iterdir()) == [f"{p.stem}.results.csv" for p in inputs]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["actor", "parse"])
def test_ray_worker_that_keeps_dying_ends_in_a_typed_error(
    stage, tmp_path, parts, exported, ray_local, monkeypatch
):
    """Past its restart/retry budget a lost worker fails the run (WorkerError), never hangs."""
    _faulty_stages(monkeypatch, stage, tmp_path / "unused", always=True)
    monkeypatch.setattr(ray_engine, "MAX_RESTARTS", 1)
    monkeypatch.setattr(ray_engine, "MAX_RETRIES", 1)
    out = tmp_path / "out"
    out.mkdir()
    args = [str(parts[0]), str(parts[1]), "--engine", "ray", "--model", str(exported)]
    with deadline(240):
        result = CliRunner().invoke(main, [*args, "-o", str(out), "--workers", "2"])
    assert result.exit_code != 0
    assert "Ray could not finish the run" in result.output, result.output
    assert "a lost worker is restarted 1 times and its task retried 1 times" in result.output
    assert "Traceback" not in result.output
    assert list(out.iterdir()) == []  # nothing published, no temp left


@pytest.mark.slow
def test_ray_reports_the_first_bad_row_in_input_order(tmp_path, parts, exported, ray_local):
    """Bad rows in several blocks and files: the one the single-process run meets first."""

    def spoil(src: Path, dest: Path, rows: list[int]) -> Path:
        lines = src.read_text().splitlines()
        for r in rows:
            cells = lines[r].split(",")
            cells[5] = "-1"
            lines[r] = ",".join(cells)
        dest.write_text("\n".join(lines) + "\n")
        return dest

    first = spoil(parts[0], tmp_path / "a.csv", [900, 1100])  # late in its file, 2 blocks
    second = spoil(parts[1], tmp_path / "b.csv", [1])  # early in its file, a later input
    out = tmp_path / "out"
    out.mkdir()
    with deadline(240), pytest.raises(DataError) as caught:
        ray_engine.predict_csv_ray(
            [str(parts[2]), str(first), str(second)],
            out,
            exported,
            workers=2,
            shard_bytes=150_000,
        )
    with pytest.raises(DataError) as single:
        predict_csv(first, tmp_path / "single.csv", exported)
    assert str(caught.value) == str(single.value)
    assert str(caught.value).startswith(f"{first}:901 column pix5:")
    assert list(out.iterdir()) == []


def test_infer_without_ray_installed_never_imports_it(tmp_path, parts, exported):
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import fcls.infer.cli.infer, fcls.infer.formats.paths\n"
        "from fcls.infer import predict_csv\n"
        f"assert predict_csv({str(parts[0])!r}, {str(tmp_path / 'r.csv')!r}, {str(exported)!r}).rows == {SIZES[0]}\n"
        "assert 'ray' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _rgb_model(path: Path, spec: ImageSpec) -> Path:
    """A one-layer graph for `spec`'s rows, the spec recorded as fcls-export records it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(5).normal(size=(spec.n_pixels, spec.n_classes)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["pixels"], ["x"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["x", "w"], ["logits"]),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
        ],
        "rgb",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", spec.n_pixels])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", spec.n_classes]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.metadata_props.add(key=SPEC_KEY, value=spec.to_json())
    onnx.save(model, str(path))
    return path


@pytest.mark.slow
def test_ray_scores_other_geometries_as_the_local_engine(tmp_path, ray_local):
    """RGB 20x12 rows (720 values, not a square: the size comes from the model's spec) in
    `id,pixel0..` files: Ray's bytes are the local engine's; a file of another pixel count
    is refused before anything is scored."""
    from fcls.infer.engine.ray import predict_csv_ray

    spec = ImageSpec(20, 12, 3, ("bag", "shirt", "shoe"))
    model = _rgb_model(tmp_path / "rgb.onnx", spec)
    rng = np.random.default_rng(0)
    header = "id," + ",".join(f"pixel{i}" for i in range(spec.n_pixels))
    parts = []
    for k, n in enumerate((700, 400)):
        rows = rng.integers(0, 256, (n, spec.n_pixels))
        lines = [header, *(f"r{k}-{j}," + ",".join(map(str, r)) for j, r in enumerate(rows))]
        parts.append(tmp_path / f"rgb{k}.csv")
        parts[-1].write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    summaries = predict_csv_ray([str(p) for p in parts], out, model, shard_bytes=200_000)
    assert [s.rows for s in summaries] == [700, 400]
    for p in parts:
        predict_csv(p, tmp_path / f"{p.stem}.local.csv", model, class_names=True)
        predict_csv(p, tmp_path / f"{p.stem}.ids.csv", model)
        assert (out / f"{p.stem}.results.csv").read_bytes() == (
            tmp_path / f"{p.stem}.ids.csv"
        ).read_bytes()
    assert (tmp_path / "rgb0.local.csv").read_text().splitlines()[1].split(",")[
        1
    ] in spec.class_names
    gray = write_eval_csv(tmp_path / "gray.csv", np.zeros((5, 1024), np.uint8))
    with pytest.raises(DataError, match=r"1024 pixel columns .*the model takes 720 \(20x12x3\)"):
        predict_csv_ray([str(gray)], tmp_path / "gray.results.csv", model)
    assert not (tmp_path / "gray.results.csv").exists()


CLUSTERS = {"1 node x 2": [2.0], "2 x 2": [2.0, 2.0], "3 x 1": [1.0, 1.0, 1.0]}


def _placements(nodes: list[float], share: float, workers: int) -> list[tuple[int, ...]]:
    """Every way Ray could spread `workers` actors of `share` CPUs over `nodes` (a count
    per node, each node within its CPUs), found by brute force."""
    units = ray_engine.CPU_UNIT
    room = [round(c * units) // round(share * units) for c in nodes]
    found = []
    for counts in np.ndindex(*(r + 1 for r in room)):
        if sum(counts) == workers:
            found.append(tuple(int(n) for n in counts))
    return found


def _reading_always_fits(nodes: list[float], share: float, parse: float, workers: int) -> bool:
    """Whether the actors can all be placed and, wherever they go, some node keeps `parse`."""
    units = ray_engine.CPU_UNIT
    a, p = round(share * units), round(parse * units)
    spreads = _placements(nodes, share, workers)
    return bool(spreads) and all(
        any(round(c * units) - n * a >= p for c, n in zip(nodes, counts)) for counts in spreads
    )


@pytest.mark.parametrize("name", CLUSTERS)
def test_cpu_shares_leave_a_parse_task_room_however_ray_spreads_the_actors(name):
    nodes = CLUSTERS[name]
    for workers in range(1, 11):
        shares = ray_engine.cpu_shares(nodes, workers)
        assert ray_engine.MIN_ACTOR_CPUS <= shares.actor <= 1.0
        assert shares.parse in ray_engine.PARSE_CPUS
        assert _reading_always_fits(nodes, shares.actor, shares.parse, workers), (workers, shares)
        # the largest such share: one unit more leaves some spread without room to read
        more = shares.actor + 1 / ray_engine.CPU_UNIT
        assert more > 1.0 or not _reading_always_fits(nodes, more, shares.parse, workers)
        # and the largest parse share with which any actor share works
        for parse in [p for p in ray_engine.PARSE_CPUS if p > shares.parse]:
            least = ray_engine.MIN_ACTOR_CPUS
            assert not _reading_always_fits(nodes, least, parse, workers), (workers, parse)
        assert 1 <= shares.threads <= max(nodes)


def test_cpu_shares_of_the_cases_that_hung():
    """Workers as many as the cluster's CPUs: sized by the total, the actors took 0.75 CPUs
    each on 2 nodes of 2, 1.5 per node, and a parse task of 1 CPU found no node."""
    assert ray_engine.cpu_shares([2.0, 2.0], 4) == ray_engine.CpuShares(0.5, 1.0, 1)
    assert ray_engine.cpu_shares([2.0, 2.0], 3) == ray_engine.CpuShares(1.0, 1.0, 1)
    assert ray_engine.cpu_shares([1.0, 1.0, 1.0], 3) == ray_engine.CpuShares(0.5, 0.5, 1)
    # one node: what the engine always gave a private local Ray
    assert ray_engine.cpu_shares([2.0], 1) == ray_engine.CpuShares(1.0, 1.0, 2)
    assert ray_engine.cpu_shares([2.0], 2) == ray_engine.CpuShares(0.5, 1.0, 1)
    # a head node without CPUs takes no actor
    assert ray_engine.cpu_shares([0.0, 4.0], 2) == ray_engine.CpuShares(1.0, 1.0, 2)


@pytest.mark.parametrize(
    ("nodes", "most", "seen"),
    [
        ([2.0], 17, "2 CPUs in all (per node: 2)"),
        ([2.0, 2.0], 35, "4 CPUs in all (per node: 2, 2)"),
        ([1.0, 1.0, 1.0], 23, "3 CPUs in all (per node: 1, 1, 1)"),
        ([0.5], 2, "0.5 CPUs in all (per node: 0.5)"),
        ([0.0], 0, "0 CPUs in all (per node: 0)"),
        ([], 0, "0 CPUs in all (per node: no node alive)"),
        ([1.0] * 12, 95, "12 CPUs in all (per node: 12 x 1)"),
    ],
)
def test_cpu_shares_refuse_more_workers_than_the_nodes_hold(nodes, most, seen):
    if most:
        shares = ray_engine.cpu_shares(nodes, most)
        if len(nodes) <= 3:  # the brute force grows as (CPUs / share) ** nodes
            assert _reading_always_fits(nodes, shares.actor, shares.parse, most)
    workers = most + 1
    with pytest.raises(ConfigError) as refused:
        ray_engine.cpu_shares(nodes, workers)
    message = str(refused.value)
    assert message.startswith(f"--workers {workers}: the Ray cluster has {seen};")
    least = f"{workers * ray_engine.MIN_ACTOR_CPUS:g}"
    assert f"({least} for {workers}) plus 0.25 for reading" in message
    assert f"holds at most {most} workers" in message and "\n" not in message


def test_node_cpus_count_alive_nodes_only():
    nodes = [
        {"Alive": True, "Resources": {"CPU": 2.0, "memory": 1.0}},
        {"Alive": False, "Resources": {"CPU": 8.0}},
        {"Alive": True, "Resources": {"GPU": 1.0}},
    ]
    assert ray_engine.node_cpus(SimpleNamespace(nodes=lambda: nodes)) == [2.0, 0.0]


def test_bounded_waits_unless_rays_own_variables_are_set(monkeypatch):
    for name in (
        "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S",
        "RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S",
    ):
        monkeypatch.delenv(name, raising=False)
    context = SimpleNamespace(wait_for_min_actors_s=-1, execution_no_progress_timeout_s=-1)
    ray_engine._bound_waits(context)
    assert context.wait_for_min_actors_s == ray_engine.ACTOR_START_S > 0
    assert context.execution_no_progress_timeout_s == ray_engine.STALL_S > 0
    monkeypatch.setenv("RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S", "-1")
    context = SimpleNamespace(wait_for_min_actors_s=-1, execution_no_progress_timeout_s=-1)
    ray_engine._bound_waits(context)
    assert context.execution_no_progress_timeout_s == -1  # the user's choice stands


def test_ray_waits_that_ran_out_are_one_line_worker_errors():
    data = pytest.importorskip("ray.data", reason="Ray is not installed (pip install 'fcls[ray]')")
    from ray import exceptions
    from ray.data.exceptions import ExecutionTimeoutError

    fake = SimpleNamespace(
        nodes=lambda: [{"Alive": True, "Resources": {"CPU": 2.0}}], data=data, exceptions=exceptions
    )
    cluster = ray_engine._Cluster("auto", 4, 0.0, "cpu")
    shares = ray_engine.CpuShares(0.5, 1.0, 1)
    context = SimpleNamespace(wait_for_min_actors_s=300, execution_no_progress_timeout_s=600)
    stalled = ExecutionTimeoutError("Dataset execution made no progress\nOperators...")
    error = ray_engine._worker_error(fake, stalled, cluster, shares, context)
    assert isinstance(error, WorkerError) and "\n" not in str(error)
    assert str(error).startswith("Ray moved no data for 600 s")
    assert "nodes now have 2 CPUs for 4 workers of 0.5 CPUs" in str(error)
    late = exceptions.GetTimeoutError("Timed out while starting actors.")
    error = ray_engine._worker_error(fake, late, cluster, shares, context)
    assert str(error).startswith("Ray could not start 4 workers of 0.5 CPUs within 300 s")
    assert ray_engine._worker_error(fake, ValueError("ours"), cluster, shares, context) is None


def test_ray_with_openvino_equals_the_local_engine(tmp_path, parts, exported, ray_local):
    """The actors score with the runtime the options name: OpenVINO's bytes, not onnxruntime's."""
    pytest.importorskip("openvino", reason='openvino is not installed ("fcls[openvino]")')
    from fcls.infer.engine.ray import predict_csv_ray

    out = tmp_path / "out"
    out.mkdir()
    options = ScoringOptions(runtime="openvino", proba=True)
    summaries = predict_csv_ray(
        [str(p) for p in parts[:2]], out, exported, options, workers=2, shard_bytes=150_000
    )
    assert [s.rows for s in summaries] == list(SIZES[:2])
    assert summaries[0].runtime.startswith("OpenVINO ") and "(ray x2)" in summaries[0].runtime
    for p in parts[:2]:
        single = tmp_path / f"{p.stem}.single.csv"
        predict_csv(p, single, exported, options)
        assert (out / f"{p.stem}.results.csv").read_bytes() == single.read_bytes()

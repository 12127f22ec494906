"""The reference profile and the drift check (fcls.infer.common.drift), through fcls-infer."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from helpers import deadline, sparse_pixels, tiny_logits, tiny_model, with_profile, write_eval_csv

from fcls.infer import Predictor
from fcls.infer.cli.infer import main
from fcls.infer.common.drift import (
    DRIFT,
    FEW,
    OK,
    OOD,
    DriftRule,
    Profile,
    input_statistics,
    ood_score,
    psi,
)
from fcls.infer.common.numeric import softmax
from fcls.infer.engine.options import ScoringOptions
from fcls.infer.engine.pipeline import predict_files

REFERENCE = sparse_pixels(2000, seed=1)


@pytest.fixture(scope="module")
def profile() -> Profile:
    return Profile.build(REFERENCE, tiny_logits(REFERENCE), "reference rows", temperature=1.7)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory, profile) -> Path:
    """The tiny model with a profile of REFERENCE and a temperature of 1.7."""
    return with_profile(tiny_model(tmp_path_factory.mktemp("m") / "tiny.onnx"), profile)


def test_input_statistics_equal_a_pixel_by_pixel_computation():
    images = sparse_pixels(20, seed=3)
    images[0] = 0  # blank
    images[1] = 0
    images[1, 5 * 32 + 30] = 9  # one pixel: row 5, column 30
    stats = input_statistics(images, (32, 32, 1))
    for i, row in enumerate(images):
        grid = row.reshape(32, 32).astype(np.float64)
        total = grid.sum()
        ys, xs = np.mgrid[0:32, 0:32]
        cx = (grid * xs).sum() / total if total else 15.5
        cy = (grid * ys).sum() / total if total else 15.5
        assert stats["mean_intensity"][i] == pytest.approx(row.mean())
        assert stats["zero_fraction"][i] == pytest.approx((row == 0).mean())
        assert (stats["centre_x"][i], stats["centre_y"][i]) == pytest.approx((cx, cy))
    assert (stats["centre_x"][1], stats["centre_y"][1]) == (30, 5)


@pytest.mark.parametrize("image", [(28, 28, 1), (12, 20, 3), (8, 100, 3)])
def test_input_statistics_at_any_geometry_equal_a_pixel_by_pixel_computation(image):
    h, w, c = image
    rng = np.random.default_rng(0)
    images = (rng.integers(0, 256, (12, h * w * c)) * (rng.random((12, h * w * c)) < 0.3)).astype(
        np.uint8
    )
    images[0] = 0
    stats = input_statistics(images, image)
    for i, row in enumerate(images):
        grid = row.reshape(h, w, c).astype(np.float64).sum(axis=2)  # HWC: channels interleaved
        total = grid.sum()
        ys, xs = np.mgrid[0:h, 0:w]
        cx = (grid * xs).sum() / total if total else (w - 1) / 2
        cy = (grid * ys).sum() / total if total else (h - 1) / 2
        assert stats["mean_intensity"][i] == pytest.approx(row.mean())
        assert stats["zero_fraction"][i] == pytest.approx((row == 0).mean())
        assert (stats["centre_x"][i], stats["centre_y"][i]) == pytest.approx((cx, cy))


def test_profile_records_its_image_size_and_reads_old_profiles_as_32x32():
    rows = np.random.default_rng(1).integers(0, 256, (50, 28 * 28 * 3), dtype=np.uint8)
    logits = np.random.default_rng(2).normal(size=(50, 3)).astype(np.float32)
    profile = Profile.build(rows, logits, "rgb", image=(28, 28, 3))
    again = Profile.from_json(profile.to_json())
    assert again.image == (28, 28, 3) and again == profile
    assert again.count(rows, logits)[-1] == 50
    old = json.loads(profile.to_json())
    del old["image"]
    assert Profile.from_json(json.dumps(old)).image == (32, 32, 1)


def test_psi_equals_its_formula():
    reference = np.array([0.5, 0.3, 0.2])
    counts = np.array([30, 30, 40])
    seen = counts / counts.sum()
    assert psi(reference, counts) == pytest.approx(
        ((seen - reference) * np.log(seen / reference)).sum()
    )
    assert psi(reference, np.array([50, 30, 20])) == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(psi(reference, np.zeros(3, np.int64)))


def test_profile_round_trips_in_a_few_kb(profile):
    text = profile.to_json()
    assert len(text) < 4096
    assert Profile.from_json(text) == profile
    for bad, why in [
        (text.replace('"format":1', '"format":2'), "format 2"),
        ("{", "unreadable"),
        ('{"format":1}', "unreadable"),
    ]:
        with pytest.raises(ValueError, match=why):
            Profile.from_json(bad)


def test_counts_add_up_across_blocks_and_the_reference_is_ok(profile):
    logits = tiny_logits(REFERENCE)
    whole = profile.count(REFERENCE, logits)
    parts = sum(
        profile.count(REFERENCE[i : i + 333], logits[i : i + 333]) for i in range(0, 2000, 333)
    )
    assert np.array_equal(whole, parts) and whole[-1] == 2000
    assert whole[-2] == np.count_nonzero(ood_score(logits) > profile.ood_threshold) == 20  # 1%
    verdict = profile.assess(whole, DriftRule())
    assert verdict["verdict"] == OK and verdict["ood_share"] == pytest.approx(0.01)
    assert max(verdict["psi"].values()) < 1e-3  # the reference against itself


def test_new_rows_of_the_same_kind_pass_and_changed_ones_do_not(profile):
    rule = DriftRule()

    def judged(pixels: np.ndarray) -> dict:
        return profile.assess(profile.count(pixels, tiny_logits(pixels)), rule)

    same = judged(sparse_pixels(3000, seed=7))
    assert same["verdict"] == OK, same
    assert max(same["psi"].values()) < 0.05 and same["ood_share"] < 0.02
    brighter = judged(np.minimum(sparse_pixels(3000, seed=7).astype(int) * 2, 255).astype(np.uint8))
    assert (
        brighter["verdict"] in (DRIFT, OOD) and brighter["psi"]["mean_intensity"] > rule.psi_drift
    )
    few = judged(sparse_pixels(50, seed=8))
    assert few["verdict"] == FEW and few["rows"] == 50


def test_a_model_with_an_unreadable_profile_still_scores(tmp_path):
    model = tiny_model(tmp_path / "m.onnx")
    assert (
        Predictor(model).profile is None and "no reference profile" in Predictor(model).profile_note
    )
    bad = Profile.build(REFERENCE, tiny_logits(REFERENCE), "x")
    broken = with_profile(tiny_model(tmp_path / "b.onnx"), bad)
    import onnx

    proto = onnx.load(str(broken))
    proto.metadata_props[-1].value = proto.metadata_props[-1].value.replace(
        '"format":1', '"format":9'
    )
    onnx.save(proto, str(broken))
    p = Predictor(broken)
    assert p.profile is None and "format 9" in p.profile_note and p.temperature == 1.0
    assert p.predict(REFERENCE[:5]).shape == (5,)


def run_cli(*args: str) -> tuple[int, str, str]:
    with deadline(60):
        result = CliRunner().invoke(main, [*args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_writes_the_report_beside_the_results_and_one_line(tmp_path, profiled):
    data = write_eval_csv(tmp_path / "in.csv", sparse_pixels(1000, seed=9))
    inverted = write_eval_csv(tmp_path / "inv.csv", 255 - sparse_pixels(1000, seed=9))
    code, _, err = run_cli(str(data), "-m", str(profiled), "-o", str(tmp_path / "r.csv"))
    assert code == 0, err
    report = json.loads((tmp_path / "r.drift.json").read_text())
    assert report["run"]["verdict"] == OK and report["files"][0]["input"] == str(data)
    assert report["run"]["rows"] == 1000 and report["profile"]["rows"] == 2000
    assert "drift: ok: 1,000 rows" in err and str(tmp_path / "r.drift.json") in err
    code, out, err = run_cli(
        str(data), str(inverted), "-m", str(profiled), "-o", str(tmp_path / "o") + "/", "--json"
    )
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "drift.json").read_text())
    verdicts = [f["verdict"] for f in report["files"]]
    assert verdicts[0] == OK and verdicts[1] in (DRIFT, OOD)
    assert report["run"]["verdict"] in (DRIFT, OOD) and report["run"]["rows"] == 2000
    assert "1 of 2 files flagged" in err
    assert [f["drift"] for f in json.loads(out.splitlines()[-1])["files"]] == verdicts
    # --no-drift: no report, no line; -o -: the line, no file
    code, _, err = run_cli(
        str(data), "-m", str(profiled), "-o", str(tmp_path / "n.csv"), "--no-drift"
    )
    assert code == 0 and "drift" not in err and not (tmp_path / "n.drift.json").exists()
    code, out, err = run_cli(str(data), "-m", str(profiled), "-o", "-")
    assert code == 0 and out.startswith("ID,label\n") and "drift: ok" in err
    custom = tmp_path / "custom.json"
    code, _, err = run_cli(
        str(data), "-m", str(profiled), "-o", str(tmp_path / "c.csv"), "--drift-report", str(custom)
    )
    assert code == 0 and json.loads(custom.read_text())["run"]["verdict"] == OK


def test_cli_without_a_profile(tmp_path):
    model = tiny_model(tmp_path / "old.onnx")
    data = write_eval_csv(tmp_path / "in.csv", sparse_pixels(100))
    code, _, err = run_cli(str(data), "-m", str(model), "-o", str(tmp_path / "r.csv"))
    assert code == 0 and "drift" not in err and not (tmp_path / "r.drift.json").exists()
    code, _, err = run_cli(str(data), "-m", str(model), "-o", str(tmp_path / "r.csv"), "--drift")
    assert code == 0 and "drift: not checked: old.onnx: it carries no reference profile" in err
    code, _, err = run_cli(str(data), "-m", str(model), "-o", str(tmp_path / "f.csv"), "--flag-ood")
    assert code == 1 and "--flag-ood" in err and "no reference profile" in err
    assert not (tmp_path / "f.csv").exists()
    code, _, err = run_cli(str(data), "-m", str(model), "--proba-raw")
    assert code == 1 and "give --proba too" in err


def test_flag_ood_and_calibrated_proba_equal_an_independent_computation(
    tmp_path, profiled, profile
):
    pixels = np.concatenate([sparse_pixels(300, seed=4), 255 - sparse_pixels(100, seed=5)])
    data = write_eval_csv(tmp_path / "in.csv", pixels)
    logits = tiny_logits(pixels).astype(np.float64)
    energy = -(logits.max(1) + np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)))
    flagged = energy > profile.ood_threshold
    assert 0 < flagged.sum() < len(pixels)
    out = tmp_path / "r.csv"
    code, _, err = run_cli(str(data), "-m", str(profiled), "-o", str(out), "--proba", "--flag-ood")
    assert code == 0, err
    lines = out.read_text().splitlines()
    assert lines[0] == "ID,label," + ",".join(f"p{j}" for j in range(10)) + ",ood"
    rows = [line.split(",") for line in lines[1:]]
    assert [r[-1] for r in rows] == ["1" if f else "0" for f in flagged]
    probs = np.array([[float(x) for x in r[2:12]] for r in rows])
    calibrated = np.exp(logits / 1.7 - (logits / 1.7).max(1, keepdims=True))
    np.testing.assert_allclose(probs, calibrated / calibrated.sum(1, keepdims=True), atol=1e-4)
    raw = tmp_path / "raw.csv"
    code, _, err = run_cli(str(data), "-m", str(profiled), "-o", str(raw), "--proba", "--proba-raw")
    assert code == 0, err
    probs_raw = np.array(
        [[float(x) for x in line.split(",")[2:12]] for line in raw.read_text().splitlines()[1:]]
    )
    np.testing.assert_allclose(probs_raw, softmax(tiny_logits(pixels)), atol=1e-4)
    table = tmp_path / "r.parquet"
    code, _, err = run_cli(str(data), "-m", str(profiled), "-o", str(table), "--flag-ood")
    assert code == 0, err
    assert pq.read_table(table).column("ood").to_pylist() == flagged.tolist()


def test_a_resumed_run_reports_the_same_drift_as_an_uninterrupted_one(
    tmp_path, profiled, monkeypatch
):
    pixels = np.concatenate([sparse_pixels(3000, seed=6), 255 - sparse_pixels(300, seed=6)])
    data = tmp_path / "in.csv.gz"
    with gzip.open(data, "wb") as f:
        f.write(write_eval_csv(tmp_path / "plain.csv", pixels).read_bytes())
    whole = tmp_path / "whole.json"
    options = ScoringOptions(chunk_bytes=1 << 16, checkpoint_seconds=0.0)
    predict_files([data], [tmp_path / "whole.csv"], profiled, options, drift_report=whole)
    calls = {"n": 0}
    real = Predictor._fetch

    def dies(self, *args):
        calls["n"] += 1
        if calls["n"] == 40:
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(Predictor, "_fetch", dies)
    resumed = tmp_path / "resumed.json"
    with deadline(60), pytest.raises(KeyboardInterrupt):
        predict_files(
            [data], [tmp_path / "r.csv"], profiled, options, resume=True, drift_report=resumed
        )
    monkeypatch.setattr(Predictor, "_fetch", real)
    said: list[str] = []
    with deadline(60):
        (summary,) = predict_files(
            [data],
            [tmp_path / "r.csv"],
            profiled,
            options,
            resume=True,
            drift_report=resumed,
            log=said.append,
        )
    assert summary.resumed > 0, said
    assert (tmp_path / "r.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    a, b = json.loads(whole.read_text()), json.loads(resumed.read_text())
    assert a["run"] == b["run"] and a["run"]["rows"] == 3300


def test_options_added_later_stay_out_of_an_older_journal_s_identity():
    plain = ScoringOptions().identity()
    assert "proba_raw" not in plain and "flag_ood" not in plain
    assert ScoringOptions(flag_ood=True).identity()["flag_ood"] is True
    assert ScoringOptions(proba=True, proba_raw=True).identity()["proba_raw"] is True


@pytest.mark.slow
def test_a_real_fashion_model_tells_fashion_from_digits_inverted_and_shifted(
    tmp_path, fashion_trained, shared_data, digits
):
    """The export's profile on real data, and the verdicts with their figures (-s prints them)."""
    from fcls.export import ExportConfig, export_onnx
    from fcls.infer.formats.sources import read_pixels

    dest = tmp_path / "fashion.onnx"
    export_onnx(fashion_trained, dest, ExportConfig(), log=lambda s: None)
    model = Predictor(dest)
    assert model.profile is not None and model.profile.source.endswith("train.csv.gz")
    held = json.loads((tmp_path / "fashion.parity.json").read_text())["calibration"]["heldout"]
    assert (
        held["ece"]["after"] < held["ece"]["before"]
        and held["nll"]["after"] < held["nll"]["before"]
    )
    fashion = read_pixels(shared_data / "evaluate.csv.gz", "unlabelled", limit=2000)
    images = fashion.reshape(-1, 32, 32)
    shifted = np.zeros_like(images)
    shifted[:, :, 6:] = images[:, :, :-6]  # the camera moved 6 pixels to the right
    cases = {
        "fashion": fashion,
        "digits": digits[0][:1500],
        "inverted": 255 - fashion,
        "shifted": shifted.reshape(-1, 1024),
    }
    verdicts = {}
    for name, pixels in cases.items():
        data = write_eval_csv(tmp_path / f"{name}.csv", pixels)
        report = tmp_path / f"{name}.drift.json"
        with deadline(120):
            predict_files([data], [tmp_path / f"{name}.results.csv"], model, drift_report=report)
        run = json.loads(report.read_text())["run"]
        verdicts[name] = run["verdict"]
        top = max(run["psi"], key=run["psi"].get)
        print(
            f"{name}: {run['verdict']}, OOD share {run['ood_share']:.3f}, PSI {top} {run['psi'][top]:.2f}"
        )
    assert verdicts["fashion"] == OK
    assert all(verdicts[k] in (DRIFT, OOD) for k in ("digits", "inverted", "shifted")), verdicts


def test_a_failed_run_writes_no_report(tmp_path, profiled):
    data = write_eval_csv(tmp_path / "in.csv", sparse_pixels(500, seed=10))
    text = data.read_bytes().splitlines(keepends=True)
    text[400] = text[400].replace(b",0,", b",x,", 1)  # a bad cell near the end
    data.write_bytes(b"".join(text))
    code, _, err = run_cli(str(data), "-m", str(profiled), "-o", str(tmp_path / "r.csv"))
    assert code == 1 and "in.csv:401" in err and "drift:" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_a_report_path_that_cannot_be_written_is_refused_before_any_row(tmp_path, profiled):
    data = write_eval_csv(tmp_path / "in.csv", sparse_pixels(100, seed=11))
    out = tmp_path / "r.csv"
    code, _, err = run_cli(
        str(data), "-m", str(profiled), "-o", str(out), "--drift-report", str(out)
    )
    assert code == 1 and "are the same file" in err
    code, _, err = run_cli(
        str(data),
        "-m",
        str(profiled),
        "-o",
        str(out),
        "--drift-report",
        str(tmp_path / "no" / "d.json"),
    )
    assert code == 4 and "does not exist" in err and "drift:" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]
    # --no-drift has no report, so no default path to refuse or write
    code, _, err = run_cli(str(data), "-m", str(profiled), "-o", str(out), "--no-drift")
    assert code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "r.csv"]

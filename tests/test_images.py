"""A folder of images (PNG, JPEG) as an input like CSV and Parquet (`fcls.infer.formats.images`):
a labelled folder trains, exports and is evaluated; an unlabelled one is scored (IDs the
relative paths); fcls-convert turns one into Parquet that scores to the same bytes; images of
other sizes and modes are converted to the spec; every bad option, file or image is one line.

Images are made here from scikit-learn's digits (never committed data).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from helpers import one_error_line, rgb_digits, tiny_logits, tiny_model, write_eval_csv
from helpers import run_cli as run
from PIL import Image

from fcls.export.cli import main as export_main
from fcls.infer.cli.convert import main as convert_main
from fcls.infer.cli.eval import main as eval_main
from fcls.infer.cli.infer import main as infer_main
from fcls.infer.common.errors import DataError
from fcls.infer.common.spec import ImageSpec
from fcls.infer.formats.images import ImageReader, decode_image, folder_digest
from fcls.infer.formats.paths import expand_inputs, output_stem
from fcls.infer.formats.sources import image_size_of, input_kind, open_chunks, read_train
from fcls.train.cli import main as train_main

NAMES = ("zero", "one", "two")  # sklearn digits 0, 1, 2 as class folders
SORTED = sorted(NAMES)  # the model's classes: ['one', 'two', 'zero']
HELD_OUT = 90  # the first images: the folders fcls-eval and fcls-infer score


def refused(command: click.Command, *args: object, code: int = 1) -> str:
    """The one `Error:` line of a refused run (-q: the whole output, for fcls's own errors)."""
    result = run(command, *args, "-q", code=code)
    error = one_error_line(result)
    if code != 2:  # click's usage errors add a Usage line
        assert result.output.strip() == error, result.output
    return error


def save(path: Path, values: np.ndarray, mode: str | None = None) -> Path:
    """Write an (H, W) or (H, W, C) uint8 array as an image file (format by extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values, mode).save(path) if mode else Image.fromarray(values).save(path)
    return path


def results(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def gray_folder(root: Path, pixels: np.ndarray, side: int = 32) -> list[str]:
    """Unlabelled 32x32 grayscale PNGs in nested folders and at the top; their IDs, sorted."""
    ids = []
    for i, row in enumerate(pixels):
        rel = f"{i:03d}.png" if i % 3 == 0 else f"batch{i % 3}/{i:03d}.png"
        save(root / rel, row.reshape(side, side))
        ids.append(rel)
    return sorted(ids, key=lambda r: tuple(r.split("/")))


# -- 1. a labelled folder trains (the first image's size), exports and is evaluated ---------


@pytest.fixture(scope="module")
def rgb_folders(tmp_path_factory) -> Path:
    """The digits 0..2 as 16x16 RGB PNGs: train/<name>/NNNN.png (all 537), held/<name>/ (the
    first 90) and loose/ (the same 90, unlabelled, one folder level); trained with the CNN
    (1 epoch per stage, no --image-size: the first image's 16x16x3) and exported."""
    d = tmp_path_factory.mktemp("folders")
    pixels, digit = rgb_digits(16)
    for i, (row, y) in enumerate(zip(pixels, digit)):
        image = row.reshape(16, 16, 3)
        save(d / "train" / NAMES[y] / f"{i:04d}.png", image)
        if i < HELD_OUT:
            save(d / "held" / NAMES[y] / f"{i:04d}.png", image)
            save(d / "loose" / f"{i:04d}.png", image)
    np.save(d / "truth.npy", np.array([SORTED.index(NAMES[y]) for y in digit[:HELD_OUT]]))
    out = d / "run"
    run(train_main, "--data", d / "train", "-o", out, "--arch", "CNN", "--max-epochs", 1, "-q")
    run(export_main, out / "model.pt", "-q")
    return d


def test_a_labelled_folder_trains_exports_and_is_evaluated(rgb_folders: Path, tmp_path: Path):
    model = rgb_folders / "run" / "model.onnx"
    spec = json.loads((rgb_folders / "run" / "report.json").read_text())["image_spec"]
    assert (spec["height"], spec["width"], spec["channels"]) == (16, 16, 3)
    assert spec["class_names"] == SORTED
    out = tmp_path / "loose.csv"
    run(infer_main, rgb_folders / "loose", "-m", model, "-o", out, "-q")
    rows = results(out)
    assert rows[0] == ["ID", "label"] and len(rows) == HELD_OUT + 1
    assert [r[0] for r in rows[1:]] == [f"{i:04d}.png" for i in range(HELD_OUT)]
    labels = np.array([int(r[1]) for r in rows[1:]])
    truth = np.load(rgb_folders / "truth.npy")
    run(eval_main, rgb_folders / "held", "-m", model, "-o", tmp_path / "ev", "-q")
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["rows"] == HELD_OUT and report["class_names"] == SORTED
    # fcls-eval scores the class folders as fcls-infer labels the same images
    assert report["models"][0]["accuracy"] == pytest.approx((labels == truth).mean())
    assert report["models"][0]["accuracy"] > 0.5  # chance is 1/3: the images are read as images


def test_export_gates_on_the_training_folder(rgb_folders: Path, tmp_path: Path):
    """Without --data, fcls-export finds the folder model.pt records (by its listing's
    digest) and gates on the run's own test split; --data FOLDER of another size is resized
    to the model's images; the int8 variant is calibrated on real images."""
    ckpt = rgb_folders / "run" / "model.pt"
    run(export_main, ckpt, "-o", tmp_path / "a.onnx", "--int8", "-q")
    parity = json.loads((tmp_path / "a.parity.json").read_text())
    assert any("the training run's own test split" in n for n in parity["notices"]), parity
    assert parity["heldout_accuracy"]["int8"] is not None
    small = tmp_path / "small"
    for name in SORTED:
        for i in range(20):
            save(small / name / f"{i}.png", np.full((8, 8), 40 * i % 256, np.uint8))
    run(export_main, ckpt, "-o", tmp_path / "b.onnx", "--data", small, "-q")
    notices = json.loads((tmp_path / "b.parity.json").read_text())["notices"]
    assert any(str(small) in n for n in notices), notices


def test_train_takes_image_size_and_resizes_to_it(rgb_folders: Path):
    """--image-size sets the spec; every image is converted to it (here 8x8 grayscale)."""
    pixels, labels = read_train(rgb_folders / "held", image_size="8x8")
    assert pixels.shape == (HELD_OUT, 64) and labels.dtype == object
    assert sorted(set(labels)) == SORTED
    assert image_size_of(rgb_folders / "held", None) == "16x16x3"
    assert image_size_of(rgb_folders / "held", "8x8") == "8x8"
    assert input_kind(rgb_folders / "held") == "labelled"
    assert input_kind(rgb_folders / "loose") == "unlabelled"


def test_train_lists_networks_for_a_folder(rgb_folders: Path):
    listed = run(train_main, "--data", rgb_folders / "held", "--arch", "list", "--json")
    spec = json.loads(listed.stdout.strip().splitlines()[-1])["image_spec"]
    assert (spec["height"], spec["width"], spec["channels"]) == (16, 16, 3)


# -- 2. an unlabelled folder is scored: one row per image, IDs the relative paths ------------


@pytest.fixture(scope="module")
def model1024(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("m") / "m.onnx")


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory, digits) -> tuple[Path, list[str], np.ndarray]:
    """50 digits as 32x32 grayscale PNGs at two depths, a note the reader skips; IDs, pixels."""
    root = tmp_path_factory.mktemp("u") / "pngs"
    pixels = digits[0][:50]
    ids = gray_folder(root, pixels)
    (root / "README.txt").write_text("not an image: skipped\n")
    (root / ".hidden.png").write_bytes(b"hidden: skipped")
    order = [int(Path(r).stem) for r in ids]
    return root, ids, pixels[order]


def test_an_unlabelled_folder_is_scored(unlabelled, model1024: Path, tmp_path: Path):
    root, ids, pixels = unlabelled
    out = tmp_path / "out.csv"
    run(infer_main, root, "-m", model1024, "-o", out, "-q")
    rows = results(out)
    assert [r[0] for r in rows[1:]] == ids  # sorted by path component, the note skipped
    expected = tiny_logits(pixels).argmax(axis=1)
    assert [int(r[1]) for r in rows[1:]] == expected.tolist()
    # the folder's name is the output stem of a directory output; 2 decode threads, same bytes
    run(infer_main, root, "-m", model1024, "-o", f"{tmp_path}/dir/", "--parse-threads", 2, "-q")
    assert (tmp_path / "dir" / "pngs.results.csv").read_bytes() == out.read_bytes()


def test_the_same_rows_as_the_csv_of_the_same_images(unlabelled, model1024, tmp_path: Path):
    root, ids, pixels = unlabelled
    data = write_eval_csv(tmp_path / "same.csv", pixels, ids)
    run(infer_main, data, "-m", model1024, "-o", tmp_path / "a.csv", "--proba", "-q")
    run(infer_main, root, "-m", model1024, "-o", tmp_path / "b.csv", "--proba", "-q")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


# -- 3. fcls-convert: folder -> Parquet, scored to the same bytes -----------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".arrow", ".csv"])
def test_convert_scores_to_the_same_results(unlabelled, model1024, tmp_path: Path, suffix: str):
    root = unlabelled[0]
    data = tmp_path / f"pngs{suffix}"
    run(convert_main, root, data, "-q")
    run(infer_main, root, "-m", model1024, "-o", tmp_path / "folder.csv", "-q")
    run(infer_main, data, "-m", model1024, "-o", tmp_path / "converted.csv", "-q")
    assert (tmp_path / "folder.csv").read_bytes() == (tmp_path / "converted.csv").read_bytes()


def test_convert_keeps_a_labelled_folders_classes(rgb_folders: Path, tmp_path: Path):
    data = tmp_path / "held.parquet"
    done = run(convert_main, rgb_folders / "held", data, "--image-size", "8x8", "--json")
    assert json.loads(done.stdout)["kind"] == "labelled"
    pixels, labels = read_train(data)
    assert pixels.shape == (HELD_OUT, 64) and sorted(set(labels)) == SORTED
    assert np.array_equal(pixels, read_train(rgb_folders / "held", image_size="8x8")[0])


# -- 4. conversion to the spec: size, mode, alpha, 16 bits, JPEG ------------------------------


def test_an_rgb_image_into_a_grayscale_spec_of_another_size(tmp_path: Path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 12, 3), dtype=np.uint8)
    path = save(tmp_path / "x.png", rgb)
    got = decode_image(path, (8, 6, 1))
    want = np.asarray(Image.fromarray(rgb).convert("L").resize((6, 8), Image.Resampling.BILINEAR))
    assert got.shape == (48,) and np.array_equal(got, want.reshape(-1))
    same = decode_image(path, (20, 12, 3))  # its own size and mode: the pixels, untouched
    assert np.array_equal(same, rgb.reshape(-1))


def test_modes_are_converted(tmp_path: Path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    rgba = np.dstack([np.stack([gray] * 3, axis=-1), np.zeros_like(gray)])  # alpha 0: dropped
    assert np.array_equal(decode_image(save(tmp_path / "a.png", rgba), (4, 4, 1)), gray.ravel())
    rgb = decode_image(save(tmp_path / "g.png", gray), (4, 4, 3)).reshape(16, 3)
    assert all(np.array_equal(rgb[:, c], gray.ravel()) for c in range(3))
    wide = (gray.astype(np.uint16) * 257).astype(np.uint16)  # 16-bit: scaled, not clipped
    sixteen = Image.fromarray(wide)
    sixteen.save(tmp_path / "w.png")
    assert np.array_equal(decode_image(tmp_path / "w.png", (4, 4, 1)), gray.ravel())
    Image.fromarray(gray).convert("P").save(tmp_path / "p.png")  # a palette
    assert np.array_equal(decode_image(tmp_path / "p.png", (4, 4, 1)), gray.ravel())
    jpeg = save(tmp_path / "j.JPEG", np.full((8, 8, 3), 200, np.uint8))
    assert np.abs(decode_image(jpeg, (8, 8, 3)).astype(int) - 200).max() <= 2


def test_the_first_image_sets_the_spec(tmp_path: Path):
    save(tmp_path / "gray" / "a" / "1.png", np.zeros((6, 5), np.uint8))
    save(tmp_path / "gray" / "b" / "2.png", np.zeros((9, 9, 3), np.uint8))  # resized, to L
    pixels, labels = read_train(tmp_path / "gray")
    assert pixels.shape == (2, 30) and list(labels) == ["a", "b"]
    save(tmp_path / "rgb" / "1.png", np.zeros((3, 4, 4), np.uint8))  # RGBA: 3 channels
    assert image_size_of(tmp_path / "rgb", None) == "3x4x3"


def test_class_folders_named_by_number_are_integer_classes(tmp_path: Path):
    for name in ("0", "1", "10", "2"):
        save(tmp_path / name / "x.png", np.zeros((2, 2), np.uint8))
    _, labels = read_train(tmp_path)
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 10, 2]  # ImageFolder's order
    classes = ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k")
    chunks = list(open_chunks(tmp_path, "labelled", classes=classes))
    assert chunks[0].labels.tolist() == [0, 1, 10, 2]  # with a model's classes: indices


def test_batches_are_constant_size_and_in_order(unlabelled):
    root, ids, pixels = unlabelled
    reader = ImageReader(root, pixels=ImageSpec(32, 32, 1), batch_images=7, threads=3)
    chunks = list(reader)
    assert [len(c) for c in chunks] == [7] * 7 + [1]
    assert [c.start for c in chunks] == list(range(1, 51, 7))
    assert [i for c in chunks for i in c.ids.to_pylist()] == ids
    assert np.array_equal(np.concatenate([c.pixels for c in chunks]), pixels)
    first = next(iter(ImageReader(root, limit=3)))
    assert first.ids.to_pylist() == ids[:3]


def test_a_folders_identity_is_its_listing(unlabelled, tmp_path: Path):
    root = tmp_path / "f"
    save(root / "a.png", np.zeros((2, 2), np.uint8))
    digest, size = folder_digest(root)
    assert size == (root / "a.png").stat().st_size
    save(root / "b.png", np.zeros((2, 2), np.uint8))
    assert folder_digest(root)[0] != digest


# -- 5. inputs: directories of images, of data files, of both ---------------------------------


def test_a_directory_of_images_is_one_input(unlabelled, tmp_path: Path):
    root = unlabelled[0]
    assert expand_inputs([str(root)]) == [root.resolve()]
    assert output_stem(root) == "pngs"
    both = tmp_path / "both"
    save(both / "plot.png", np.zeros((2, 2), np.uint8))
    write_eval_csv(both / "rows.csv", np.zeros((1, 1024), np.uint8))
    # data files win: a directory of both is its data files (its images are not read)
    assert expand_inputs([str(both)]) == [(both / "rows.csv").resolve()]


# -- 6. one line, no traceback, for every bad option, file and image --------------------------


def test_a_bad_image_is_one_line_naming_the_file(unlabelled, model1024, tmp_path: Path):
    root = tmp_path / "pngs"
    gray_folder(root, np.zeros((4, 1024), np.uint8))
    (root / "batch1" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    line = refused(infer_main, root, "-m", model1024, "-o", tmp_path / "r.csv")
    assert line.startswith(f"Error: {root}/batch1/bad.png: cannot decode image (")
    assert not (tmp_path / "r.csv").exists()
    line = refused(convert_main, root, tmp_path / "x.parquet")
    assert f"{root}/batch1/bad.png: cannot decode image" in line


def test_a_gif_named_png_is_refused(tmp_path: Path):
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "x.png", format="GIF")
    with pytest.raises(DataError, match=r"x\.png: cannot decode image"):
        list(open_chunks(tmp_path))


def test_train_refuses_bad_folders(tmp_path: Path):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    line = refused(train_main, "--data", empty, "-o", out)
    assert f"{empty}: no images (.png, .jpg, .jpeg) in this folder" in line
    loose = tmp_path / "loose"
    save(loose / "cat" / "1.png", np.zeros((4, 4), np.uint8))
    save(loose / "x.png", np.zeros((4, 4), np.uint8))
    line = refused(train_main, "--data", loose, "-o", out)
    assert f"{loose}/x.png: an image outside the class folders" in line
    hollow = tmp_path / "hollow"
    save(hollow / "cat" / "1.png", np.zeros((4, 4), np.uint8))
    (hollow / "dog").mkdir()
    (hollow / "dog" / "notes.txt").write_text("no images here")
    line = refused(train_main, "--data", hollow, "-o", out)
    assert f"{hollow}/dog: class folder without images" in line
    assert "no such file" in refused(train_main, "--data", tmp_path / "nope", "-o", out)
    assert not out.exists()  # refused before -o is made


LAYOUT = "expected one sub-folder per class holding PNG/JPEG images"


@pytest.mark.parametrize(
    ("files", "held"),
    [
        ([], ""),
        (["readme.md"], " (it holds 1 other file(s): readme.md)"),
        (
            ["cat/a.txt", "cat/b.gif", ".DS_Store"],
            " (it holds 2 other file(s): cat/a.txt and 1 more)",
        ),
        (["train.csv"], " (it holds 1 other file(s): train.csv)"),
    ],
    ids=["empty", "a-note", "class-folder-of-non-images", "a-csv"],
)
def test_train_on_a_folder_without_images_says_what_it_expected(tmp_path: Path, files, held):
    data = tmp_path / "pngs"
    data.mkdir()
    for name in files:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_text("0")
    out = tmp_path / "out"
    line = refused(train_main, "--data", data, "-o", out)
    expected = f"Error: {data}: no images (.png, .jpg, .jpeg) in this folder{held}; {LAYOUT} "
    assert line.startswith(expected + "(pngs/<class>/<image>.png)"), line
    hint = f"; for {data}/train.csv, give that file itself"
    assert line.endswith(hint) == ("train.csv" in held)
    assert not out.exists()  # nothing written to -o, not even the folder


def test_infer_refuses_bad_folders(unlabelled, model1024, tmp_path: Path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    line = refused(infer_main, empty, "-m", model1024, "-o", tmp_path / "r.csv")
    assert "directory holds no" in line and "no images (.png, .jpg, .jpeg)" in line
    root = unlabelled[0]
    line = refused(infer_main, root, "-m", model1024, "-o", tmp_path / "r.csv", "--resume")
    assert "--resume" in line and "folder of images" in line
    args = [root, "-m", model1024, "-o", tmp_path / "r.csv", "--engine", "ray"]
    line = refused(infer_main, *args)
    assert "--engine ray" in line and "folder of images" in line


def test_eval_refuses_folders_that_are_not_the_models(rgb_folders: Path, tmp_path: Path):
    model = rgb_folders / "run" / "model.onnx"
    line = refused(eval_main, rgb_folders / "loose", "-m", model, "-o", tmp_path / "ev")
    assert "0000.png: an image outside the class folders" in line
    other = tmp_path / "other"
    save(other / "one" / "a.png", np.zeros((16, 16, 3), np.uint8))
    save(other / "three" / "b.png", np.zeros((16, 16, 3), np.uint8))
    line = refused(eval_main, other, "-m", model, "-o", tmp_path / "ev")
    assert f"{other}/three/b.png: label 'three' is not one of the model's 3 classes" in line
    assert not (tmp_path / "ev" / "report.json").exists()


def test_convert_refuses_bad_options(unlabelled, tmp_path: Path):
    root = unlabelled[0]
    line = refused(convert_main, root, tmp_path / "x.parquet", "--image-size", "28by28", code=2)
    assert "--image-size" in line and "28by28" in line
    data = write_eval_csv(tmp_path / "rows.csv", np.zeros((1, 1024), np.uint8))
    line = refused(convert_main, data, tmp_path / "x.parquet", "--image-size", "32x32")
    assert "--image-size 32x32" in line and "not a folder" in line


def test_without_pillow_a_folder_is_one_line(unlabelled, model1024, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now raises ImportError
    line = refused(infer_main, unlabelled[0], "-m", model1024, "-o", tmp_path / "r.csv", code=5)
    assert 'pip install "fcls[images]"' in line


def test_a_limit_keeps_every_class_of_a_labelled_folder(rgb_folders: Path):
    """--limit on a folder sorted by class: images spread over the listing, not the first
    class only; an unlabelled folder keeps its first images."""
    _, labels = read_train(rgb_folders / "train", limit=30)
    counts = {name: int((labels == name).sum()) for name in SORTED}
    assert sum(counts.values()) == 30 and min(counts.values()) >= 9, counts
    (first,) = open_chunks(rgb_folders / "loose", limit=4)
    assert first.ids.to_pylist() == [f"{i:04d}.png" for i in range(4)]


def test_symlinked_folders_are_followed_once(tmp_path: Path):
    real = tmp_path / "real"
    save(real / "a.png", np.zeros((2, 2), np.uint8))
    root = tmp_path / "root"
    save(root / "b" / "b.png", np.zeros((2, 2), np.uint8))
    (root / "linked").symlink_to(real, target_is_directory=True)
    (root / "b" / "loop").symlink_to(root, target_is_directory=True)  # a cycle: walked once
    ids = [i for c in open_chunks(root) for i in c.ids.to_pylist()]
    assert ids == ["b/b.png", "linked/a.png"]

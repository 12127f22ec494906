"""fcls.train.data: split and augmentation equal the notebook's, byte for byte."""

from __future__ import annotations

import subprocess
import sys

import notebook_port as nb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcls.infer.common.errors import DataError
from fcls.infer.formats.sources import read_train
from fcls.train.data import (
    augment,
    augment_labels,
    load_dataset,
    load_digits_32,
    shuffle_split,
    split,
)


def _check_augment(pixels: np.ndarray, labels: np.ndarray) -> None:
    expected, expected_y = nb.data_augment(pixels, labels)
    got = augment(pixels)
    assert got.dtype == np.uint8 and got.shape == (4 * len(pixels), 1024)
    assert got.tobytes() == expected.tobytes()
    np.testing.assert_array_equal(augment_labels(labels), expected_y)


def test_augment_matches_notebook_on_random_images():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(50, 1024), dtype=np.uint8)
    _check_augment(pixels, rng.integers(0, 10, size=50))


def test_augment_other_k_matches_scipy():
    pixels = np.random.default_rng(1).integers(0, 256, size=(3, 1024), dtype=np.uint8)
    got = augment(pixels, k=5).reshape(3, 4, 32, 32)
    for i in range(3):
        _, x2, x3 = nb.augment(pixels[i].reshape(32, 32), 5)
        np.testing.assert_array_equal(got[i, 2], x2)
        np.testing.assert_array_equal(got[i, 3], x3)


def test_split_and_augment_match_notebook_on_real_images(shared_data):
    pixels, labels = read_train(shared_data / "train.csv.gz", limit=3000)
    parts = split(pixels, labels)
    x_train, x_val, x_test, y_train, y_val, y_test = nb.notebook_split(pixels, labels)
    assert parts.sizes() == {"train": 1800, "val": 600, "test": 600}
    for a, b in [(parts.x_train, x_train), (parts.x_val, x_val), (parts.x_test, x_test)]:
        assert a.tobytes() == b.tobytes()
    for a, b in [(parts.y_train, y_train), (parts.y_val, y_val), (parts.y_test, y_test)]:
        np.testing.assert_array_equal(a, b)
    _check_augment(parts.x_train[:1000], parts.y_train[:1000])


def test_full_real_split_sizes_match_notebook(shared_data):
    pixels, labels = read_train(shared_data / "train.csv.gz")
    assert split(pixels, labels).sizes() == {"train": 31500, "val": 10500, "test": 10500}


def test_embedded_digits():
    pixels, labels = load_digits_32()
    assert pixels.shape == (1797, 1024) and pixels.dtype == np.uint8
    assert pixels.max() == 255 and set(labels.tolist()) == set(range(10))
    _, _, names, source = load_dataset(None, limit=100)
    assert names == tuple("0123456789") and source == "sklearn-digits"


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(2, 5000),
    test_size=st.sampled_from([0.2, 0.25, 0.1, 0.5, 0.33]),
    seed=st.integers(0, 2**32 - 1),
)
def test_shuffle_split_picks_the_rows_scikit_learn_picks(n: int, test_size: float, seed: int):
    from sklearn.model_selection import train_test_split

    if np.ceil(test_size * n) >= n:  # scikit-learn refuses an empty train part, as fcls does
        with pytest.raises(DataError, match=f"{n} rows cannot be split"):
            shuffle_split(n, test_size, seed)
        return
    train, test = train_test_split(np.arange(n), test_size=test_size, random_state=seed)
    got_train, got_test = shuffle_split(n, test_size, seed)
    assert got_train.tolist() == train.tolist() and got_test.tolist() == test.tolist()


def test_embedded_digits_equal_scikit_learns_loader():
    from sklearn.datasets import load_digits

    digits = load_digits()
    big = np.kron(digits.images, np.ones((4, 4))) * (255.0 / 16.0)
    pixels, labels = load_digits_32()
    assert pixels.tobytes() == np.rint(big).clip(0, 255).astype(np.uint8).tobytes()
    assert labels.tolist() == digits.target.tolist()


def test_training_on_the_digits_imports_no_scikit_learn():
    # it adds over 100 MB to the process; the report imports it after training
    code = (
        "import sys\nfrom fcls.train.data import load_dataset, split\n"
        "split(*load_dataset(None)[:2])\nprint('sklearn' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr

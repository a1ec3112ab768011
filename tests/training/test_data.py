import os
import subprocess
import sys

import numpy as np
from sklearn.datasets import fetch_california_housing
from sklearn.model_selection import train_test_split

from models.specs import HOUSING_FEATURES
from tests.conftest import REPO, run_module


def test_housing_split_is_the_documented_one(data_dir, housing):
    bunch = fetch_california_housing(data_home=str(data_dir), download_if_missing=False)
    assert tuple(bunch.feature_names) == HOUSING_FEATURES
    x, y = bunch.data.astype(np.float32), bunch.target.astype(np.float32)
    x_train_full, x_test, y_train_full, y_test = train_test_split(x, y, random_state=42)
    x_train, x_valid, y_train, y_valid = train_test_split(x_train_full, y_train_full, random_state=42)
    assert housing.sizes() == {"train": 11610, "valid": 3870, "test": 5160}
    for got, want in [
        (housing.train.x, x_train),
        (housing.valid.x, x_valid),
        (housing.test.x, x_test),
        (housing.train.y, y_train),
        (housing.valid.y, y_valid),
        (housing.test.y, y_test),
    ]:
        np.testing.assert_array_equal(got, want)


def test_mnist_split_official_test_and_disjoint_validation(mnist):
    assert mnist.sizes() == {"train": 55000, "valid": 5000, "test": 10000}
    assert mnist.test.x.shape == (10000, 1, 28, 28) and mnist.test.x.dtype == np.float32
    assert 0.0 <= mnist.test.x.min() and mnist.test.x.max() <= 1.0
    assert mnist.test.y[0] == 7  # first official test image
    assert np.bincount(mnist.test.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # train and valid together are the 60,000 official training images, each once
    counts = np.bincount(np.concatenate([mnist.train.y, mnist.valid.y]))
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_mnist_files_read_with_numpy_equal_torchvision(data_dir, mnist):
    """The IDX files are read without torch (the load generator's test split); torchvision agrees."""
    from torchvision.datasets import MNIST

    ds = MNIST(root=str(data_dir), train=False, download=False)
    np.testing.assert_array_equal(mnist.test.x[:, 0], ds.data.numpy().astype(np.float32) / 255.0)
    np.testing.assert_array_equal(mnist.test.y, ds.targets.numpy())


def test_the_load_generator_does_not_import_torch(data_dir):
    """The locustfile with its payloads (test splits, V2 bodies by tritonclient) leaves torch out:
    a Locust process stays small and starts fast."""
    code = (
        "import sys\n"
        "import loadtests.locustfile\n"
        "from loadtests.payloads import housing_test, mnist_test, v2_bodies\n"
        "housing_test(); mnist_test(); v2_bodies('mnist_cnn', 2, 2, 0, True)\n"
        "assert not {'torch', 'torchvision'} & set(sys.modules), 'torch imported'\n"
    )
    env = {**os.environ, "DATA_DIR": str(data_dir)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _assert_one_clear_line(proc, data_dir, dataset):
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {dataset} not found in {data_dir}")
    assert "DATA_DIR" in lines[0]


def test_missing_housing_data_stops_with_one_clear_line(tmp_path):
    proc = run_module(
        "training.housing", "--data-dir", str(tmp_path), "--no-download", "--out-dir", str(tmp_path / "out")
    )
    _assert_one_clear_line(proc, tmp_path, "California Housing")


def test_missing_mnist_data_stops_with_one_clear_line(tmp_path):
    proc = run_module(
        "training.mnist", "--no-download", "--out-dir", str(tmp_path / "out"), env={"DATA_DIR": str(tmp_path)}
    )
    _assert_one_clear_line(proc, tmp_path, "MNIST")

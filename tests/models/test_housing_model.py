import numpy as np
import pytest
import torch

from models.device import DeviceUnavailableError, resolve_device
from models.housing import FeaturePreprocess, HousingConfig, HousingMLP
from models.specs import HOUSING_FEATURES


def test_standardization_buffers_equal_train_split_statistics(housing):
    config = HousingConfig()
    pre = FeaturePreprocess.fit(housing.train.x, config.log_features)
    # the same statistics computed independently, column by column, from the train split only
    x = housing.train.x.astype(np.float64)
    for j, name in enumerate(HOUSING_FEATURES):
        col = np.log1p(x[:, j]) if name in config.log_features else x[:, j]
        assert pre.mean[j].item() == pytest.approx(col.mean(), rel=1e-6)
        assert pre.std[j].item() == pytest.approx(col.std(), rel=1e-6)
    z = pre(torch.from_numpy(housing.train.x)).double()
    np.testing.assert_allclose(z.mean(0).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(0, unbiased=False).numpy(), 1.0, atol=1e-4)
    # and not the statistics of the whole data set
    z_test = pre(torch.from_numpy(housing.test.x)).double()
    assert not np.allclose(z_test.mean(0).numpy(), 0.0, atol=1e-4)


def test_preprocessing_is_part_of_the_model_state(housing):
    config = HousingConfig()
    model = HousingMLP(config, FeaturePreprocess.fit(housing.train.x, config.log_features))
    state = model.state_dict()
    assert {"preprocess.mean", "preprocess.std", "preprocess.log_mask", "geo.projection"} <= set(state)
    out = model(torch.from_numpy(housing.test.x[:5]))
    assert out.shape == (5, 1) and torch.isfinite(out).all()


def test_cuda_request_without_gpu_fails_instead_of_falling_back():
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(DeviceUnavailableError, match="cuda"):
            resolve_device("cuda")
        assert resolve_device("auto").type == "cpu"

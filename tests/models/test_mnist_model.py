import torch

from models.mnist import MnistCNN, MnistConfig


def test_normalization_inside_the_model(mnist):
    model = MnistCNN(MnistConfig()).eval()
    x = torch.from_numpy(mnist.test.x[:4])
    z = model.normalize(x)
    torch.testing.assert_close(z, (x - 0.1307) / 0.3081)
    assert model(x).shape == (4, 10)
    assert {"normalize.mean", "normalize.std"} <= set(model.state_dict())

import pytest
import torch

from nnunet_aneurysm.networks.fast_conv import DepthwiseConv3d, PointwiseConv3d


@pytest.mark.parametrize("kernel,shape", [(3, (2, 6, 5, 7, 4)), (5, (1, 3, 6, 6, 6))])
def test_gradients_match_the_stock_depthwise_conv(kernel, shape):
    torch.manual_seed(0)
    ours = DepthwiseConv3d(shape[1], kernel).double()
    stock = torch.nn.Conv3d(shape[1], shape[1], kernel, padding=kernel // 2, groups=shape[1]).double()
    stock.load_state_dict(ours.state_dict())
    x1 = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    target = torch.randn(*shape, dtype=torch.float64)
    (ours(x1) * target).sum().backward()
    (stock(x2) * target).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(ours.weight.grad, stock.weight.grad)
    torch.testing.assert_close(ours.bias.grad, stock.bias.grad)


def test_gradcheck():
    conv = DepthwiseConv3d(2, 3).double()
    x = torch.randn(1, 2, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(conv, (x,))


def test_pointwise_matches_the_stock_1x1_conv():
    ours = PointwiseConv3d(5, 3)
    stock = torch.nn.Conv3d(5, 3, 1)
    stock.load_state_dict(ours.state_dict())
    x = torch.randn(2, 5, 4, 6, 3)
    torch.testing.assert_close(ours(x), stock(x))

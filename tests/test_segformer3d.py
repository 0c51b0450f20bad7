import pytest
import torch

from nnunet_aneurysm.networks.segformer3d import SegFormer3D


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_paper_configuration_parameter_count():
    # Perera et al. 2024: 4.51 M parameters with 4 input channels (BraTS) and 3 classes.
    assert abs(n_params(SegFormer3D(4, 3)) - 4.51e6) / 4.51e6 < 0.01


@pytest.mark.parametrize("shape", [(32, 64, 96), (64, 32, 32)])
def test_non_cubic_shapes_and_batch_two(shape):
    model = SegFormer3D(1, 5).train()
    out = model(torch.randn(2, 1, *shape))
    assert out.shape == (2, 5, *shape)


def test_deep_supervision_order_and_gradients():
    model = SegFormer3D(2, 4, deep_supervision=True, embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4),
                        decoder_dim=32, refine_head=True)
    x = torch.randn(2, 2, 64, 32, 64)
    outs = model(x)
    assert len(outs) == len(model.deep_supervision_scales) == 4
    for out, scale in zip(outs, model.deep_supervision_scales):
        assert out.shape[2:] == tuple(int(s * scale) for s in x.shape[2:])
    sum(o.mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    model.decoder.deep_supervision = False
    assert model(x).shape == (2, 4, 64, 32, 64)


def test_rejects_patch_not_divisible_by_stride():
    with pytest.raises(ValueError, match="divisible by 32"):
        SegFormer3D(1, 2)(torch.randn(1, 1, 48, 64, 64))

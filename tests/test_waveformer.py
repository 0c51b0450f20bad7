import pytest
import torch

from nnunet_aneurysm.metadata import METADATA_DIM, encode_metadata
from nnunet_aneurysm.networks.akorn import AKOrNLayer, order_parameter
from nnunet_aneurysm.networks.film import FiLM
from nnunet_aneurysm.networks.haar import dwt3d, idwt3d
from nnunet_aneurysm.networks.waveformer import WaveFormer, dwt_levels

SMALL = dict(embed_dims=(16, 32, 32), depths=(1, 1, 1), num_heads=(1, 2, 2), stem_channels=8, max_tokens=64)


@pytest.mark.parametrize("shape", [(8, 6, 4), (7, 5, 9)])
def test_haar_round_trip_is_exact_and_orthonormal(shape):
    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    bands, original = dwt3d(x)
    assert bands.shape == (2, 8, 3, *[(s + 1) // 2 for s in shape])
    torch.testing.assert_close(idwt3d(bands, original), x, rtol=0, atol=1e-12)
    if all(s % 2 == 0 for s in shape):  # orthonormal: energy is kept
        torch.testing.assert_close(bands.pow(2).sum(), x.pow(2).sum())


def test_haar_low_band_is_the_scaled_block_mean():
    x = torch.randn(1, 1, 4, 4, 4, dtype=torch.float64)
    bands, _ = dwt3d(x)
    block_mean = torch.nn.functional.avg_pool3d(x, 2)
    torch.testing.assert_close(bands[:, 0], block_mean * 2 ** 1.5)


def test_dwt_levels():
    assert dwt_levels((8, 8, 8), 512) == 0
    assert dwt_levels((32, 32, 16), 512) == 2


@pytest.mark.parametrize("akorn", [None, {"n": 4, "steps": 2}])
def test_non_cubic_shapes_deep_supervision_and_gradients(akorn):
    model = WaveFormer(2, 5, deep_supervision=True, akorn=akorn, pinn={"hidden": 8}, **SMALL)
    x = torch.randn(2, 2, 32, 24, 40)
    seg, aux = model(x, metadata=torch.randn(2, METADATA_DIM), return_aux=True)
    assert [tuple(s.shape[2:]) for s in seg] == [(32, 24, 40), (16, 12, 20), (8, 6, 10)]
    assert len(seg) == len(model.deep_supervision_scales)
    assert aux["class_logits"].shape == (2, 14)
    uvwp = model.pinn_head(torch.rand(2, 16, 3) * 2 - 1, aux["pinn_features"])
    loss = sum(s.mean() for s in seg) + aux["class_logits"].mean() + uvwp.mean()
    if akorn:
        assert aux["order_parameter"].shape == (2,)
        loss = loss + aux["order_parameter"].mean()
    else:
        assert aux["order_parameter"] is None
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    model.decoder.deep_supervision = False
    assert model(x).shape == (2, 5, 32, 24, 40)


def test_order_parameter_bounds():
    identical = torch.randn(1, 4, 1, 1, 1).expand(3, 4, 4, 4, 4).repeat(1, 5, 1, 1, 1)  # all oscillators equal
    torch.testing.assert_close(order_parameter(identical, 4), torch.ones(3))
    opposite = torch.cat([torch.ones(1, 4, 2, 1, 1), -torch.ones(1, 4, 2, 1, 1)], dim=2)
    assert order_parameter(opposite, 4).item() == pytest.approx(0.0, abs=1e-6)
    r = order_parameter(torch.randn(2, 16, 4, 4, 4), 4)
    assert ((r >= 0) & (r <= 1)).all()


def test_akorn_identical_oscillators_stay_synchronised():
    layer = AKOrNLayer(8, n=4, steps=8)
    with torch.no_grad():
        layer.coupling.weight.zero_()
        layer.coupling.bias.zero_()
        layer.initial.copy_(torch.tensor([1.0, 0.5, -0.3, 0.2] * 2))
    layer(torch.ones(1, 8, 8, 8, 8))  # constant input: every oscillator gets the same drive
    assert layer.last_order_parameter.item() == pytest.approx(1.0, abs=1e-5)


def test_akorn_rejects_odd_oscillators():
    with pytest.raises(ValueError):
        AKOrNLayer(9, n=3)


def test_film_starts_near_identity_and_metadata_encoding():
    film = FiLM(6, METADATA_DIM)
    x = torch.randn(2, 6, 3, 3, 3)
    torch.testing.assert_close(film(x, torch.randn(2, METADATA_DIM)), x, rtol=0, atol=1e-2)
    vec = encode_metadata(62, "Female", "MRA")
    assert vec.tolist() == pytest.approx([0.62, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    assert not encode_metadata(None, None, "PET").any()

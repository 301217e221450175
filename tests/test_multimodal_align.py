"""The multimodal model's contrastive term (align_weight): known answers of its InfoNCE, gradients into every
encoder, and a weight of 0 that leaves each fusion's objective as it was."""
import math

import pytest
import torch

from aelab.data import multimodal as mm
from aelab.errors import AelabError
from aelab.models.multimodal import FUSIONS, MultimodalAE, alignment_loss, info_nce

SPECS = mm.modality_specs(("image", "audio", "text"))
TINY = dict(latent_dim=6, image_channels=[4, 8], audio_channels=[4, 8], text_embed=4, text_hidden=8)


def batch(n=6):
    g = torch.Generator().manual_seed(0)
    return {"image": torch.rand(n, 1, 28, 28, generator=g), "audio": torch.randn(n, mm.AUDIO_FRAMES, 13, generator=g),
            "text": mm.encode_text([mm.text_form("the digit {w}", d % 10) for d in range(n)])}


def test_matched_codes_score_below_shuffled_ones():
    codes = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    shuffled = codes[torch.roll(torch.arange(16), 1)]
    assert info_nce(codes, codes, 1.0).mean() < info_nce(codes, shuffled, 1.0).mean()


def test_orthogonal_matched_codes_tend_to_zero_as_they_grow_apart():
    eye = torch.eye(8, 12)  # 8 orthogonal unit codes
    losses = [info_nce(s * eye, s * eye, 1.0).mean().item() for s in (0.5, 1, 2, 4)]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 1e-6
    # by hand: every wrong pair sits 2 s^2 away, so each row's loss is log(1 + (B - 1) exp(-2 s^2))
    assert losses[1] == pytest.approx(math.log(1 + 7 * math.exp(-2)), rel=1e-5)


def test_identical_codes_for_all_items_cost_log_b():
    same = torch.randn(1, 5).expand(8, 5)
    assert info_nce(same, same, 0.3) == pytest.approx(torch.full((8,), math.log(8)), abs=1e-5)
    three = alignment_loss(torch.stack([same, same, same]), 2.0)
    assert three == pytest.approx(torch.full((8,), math.log(8)), abs=1e-5)


def test_the_temperature_scales_the_distances():
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    assert torch.allclose(info_nce(a, b, 4.0), info_nce(a / 2, b / 2, 1.0), atol=1e-5)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_the_term_reaches_every_encoder(fusion):
    torch.manual_seed(0)
    model = MultimodalAE(SPECS, fusion=fusion, align_weight=1.0, **TINY)
    out = model(batch())
    assert "align" in out.terms
    out.terms["align"].backward()  # the contrastive term alone
    for k in SPECS:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoders[k].parameters()), k
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.decoders[k].parameters()), k


@pytest.mark.parametrize("fusion", FUSIONS)
def test_weight_zero_is_the_fusion_alone_and_a_weight_adds_its_multiple(fusion):
    x, losses, terms = batch(), {}, {}
    for w in (0.0, 3.0):
        torch.manual_seed(0)  # the same weights and the same posterior samples
        model = MultimodalAE(SPECS, fusion=fusion, align_weight=w, **TINY)
        torch.manual_seed(1)
        out = model(x)
        losses[w], terms[w] = out.loss, out.terms
    assert "align" not in terms[0.0]
    assert losses[3.0].item() == pytest.approx(losses[0.0].item() + 3.0 * terms[3.0]["align"].item(), rel=1e-6)


def test_weight_zero_gives_the_moe_elbo_by_hand():
    torch.manual_seed(0)
    model = MultimodalAE(SPECS, fusion="moe", align_weight=0.0, **TINY)
    x = batch()
    torch.manual_seed(1)
    loss = model(x).loss
    means, logvars = torch.stack([model.encoders[k](x[k]) for k in SPECS]).chunk(2, -1)
    torch.manual_seed(1)
    z = means + torch.randn_like(means) * (0.5 * logvars).exp()
    logits = model.decode_logits(z, x)
    nll = sum(model.weights[k] * model.nll(k, logits[k], x[k]) for k in SPECS)  # (M, B)
    kl = 0.5 * (means.square() + logvars.exp() - 1 - logvars).sum(-1)
    assert loss.item() == pytest.approx((nll + kl).mean().item(), rel=1e-5)


@pytest.mark.parametrize("settings, words", [({"align_weight": -1}, "align_weight must be >= 0"),
                                             ({"align_weight": float("nan")}, "align_weight must be >= 0"),
                                             ({"align_temperature": 0}, "align_temperature must be > 0")])
def test_bad_align_settings_are_one_line(settings, words):
    with pytest.raises(AelabError, match=words):
        MultimodalAE(SPECS, **settings, **TINY)

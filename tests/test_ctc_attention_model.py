"""CTCAttentionModel: joint loss, its edge cases (ctc_weight 0 / 1), label smoothing, encode()."""
import math

import pytest
import torch
import torch.nn.functional as F

from asr_toys import VOCAB, random_batch, tiny_model
from speechllm.models.ctc_attention import CTCAttentionModel, add_sos_eos
from speechllm.nets.encoders import ConformerEncoder
from speechllm.nets.label_smoothing import LabelSmoothingLoss

BATCH = dict(lengths=[60, 45, 30], label_lengths=[5, 3, 2])


def test_joint_loss_is_finite_and_backward_reaches_all_parts():
    model = tiny_model(ctc_weight=0.3).train()
    loss, stats = model(random_batch(**BATCH))
    assert torch.isfinite(loss)
    loss.backward()
    assert model.encoder.subsampling.conv[0].weight.grad is not None
    assert model.ctc.ctc_lo.weight.grad is not None
    assert model.decoder.embed.weight.grad is not None
    assert set(stats) == {"loss", "loss_ctc", "loss_att", "acc"}
    assert all(isinstance(v, float) for v in stats.values())
    assert math.isclose(stats["loss"], 0.3 * stats["loss_ctc"] + 0.7 * stats["loss_att"], rel_tol=1e-5)
    assert 0.0 <= stats["acc"] <= 1.0


def test_ctc_weight_one_trains_ctc_only_without_decoder():
    model = tiny_model(ctc_weight=1.0)
    assert model.decoder is None
    loss, stats = model(random_batch(**BATCH))
    loss.backward()
    assert set(stats) == {"loss", "loss_ctc"}
    assert stats["loss"] == pytest.approx(stats["loss_ctc"])


def test_ctc_weight_zero_has_no_ctc_head():
    model = tiny_model(ctc_weight=0.0)
    assert model.ctc is None
    loss, stats = model(random_batch(**BATCH))
    loss.backward()
    assert set(stats) == {"loss", "loss_att", "acc"}
    assert stats["loss"] == pytest.approx(stats["loss_att"])


def test_decoder_required_unless_ctc_weight_is_one():
    enc = ConformerEncoder(20, output_size=16, attention_heads=2, linear_units=16, num_blocks=1, cnn_module_kernel=3)
    with pytest.raises(ValueError, match="needs a decoder"):
        CTCAttentionModel(VOCAB, enc, None, ctc_weight=0.5)


def test_add_sos_eos_shapes_targets():
    ys = torch.tensor([[4, 5, 6], [7, -1, -1]])
    ys_in, ys_out = add_sos_eos(ys, torch.tensor([3, 1]), sos=11, eos=11, ignore_id=-1)
    assert ys_in.tolist() == [[11, 4, 5, 6], [11, 7, 11, 11]]
    assert ys_out.tolist() == [[4, 5, 6, 11], [7, 11, -1, -1]]


def test_encode_applies_normalize_always_and_specaug_only_in_training():
    calls = []

    class Recorder(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, x, lengths):
            calls.append(self.name)
            return x

    model = tiny_model()
    model.normalize, model.specaug = Recorder("norm"), Recorder("specaug")
    b = random_batch(**BATCH)
    model.train().encode(b["feats"], b["feats_lens"])
    assert calls == ["norm", "specaug"]
    calls.clear()
    model.eval().encode(b["feats"], b["feats_lens"])
    assert calls == ["norm"]


def test_label_smoothing_zero_equals_cross_entropy_per_utterance():
    logits = torch.randn(2, 4, 7)
    target = torch.tensor([[1, 2, 3, -1], [4, -1, -1, -1]])
    loss = LabelSmoothingLoss(7, smoothing=0.0)(logits, target)
    ce = F.cross_entropy(logits.view(-1, 7), target.view(-1), ignore_index=-1, reduction="sum") / 2
    torch.testing.assert_close(loss, ce)


def test_label_smoothing_normalized_by_tokens():
    logits = torch.randn(2, 4, 7)
    target = torch.tensor([[1, 2, 3, -1], [4, -1, -1, -1]])
    by_batch = LabelSmoothingLoss(7, 0.1)(logits, target)
    by_tokens = LabelSmoothingLoss(7, 0.1, normalize_length=True)(logits, target)
    torch.testing.assert_close(by_tokens, by_batch * 2 / 4)


def test_label_smoothing_is_kl_to_smoothed_target():
    logits = torch.randn(1, 2, 5)
    target = torch.tensor([[3, -1]])
    q = torch.full((5,), 0.2 / 4)
    q[3] = 0.8
    logp = torch.log_softmax(logits[0, 0], dim=-1)
    expected = (q * (q.log() - logp)).sum()
    torch.testing.assert_close(LabelSmoothingLoss(5, 0.2)(logits, target), expected)


def test_label_smoothing_ignores_padding_values():
    logits = torch.randn(1, 3, 5)
    a = LabelSmoothingLoss(5, 0.1)(logits, torch.tensor([[1, -1, -1]]))
    b = LabelSmoothingLoss(5, 0.1)(logits[:, :1], torch.tensor([[1]]))
    torch.testing.assert_close(a, b)


def test_intermediate_ctc_uses_the_shared_head_on_inner_blocks():
    from asr_toys import tiny_config
    from speechllm.tasks.asr import build_model

    config = tiny_config(0.3)
    config["encoder_conf"] = {**config["encoder_conf"], "interctc_layer_idx": [1]}
    config["model_conf"] = {**config["model_conf"], "interctc_weight": 0.5}
    torch.manual_seed(0)
    model = build_model(config, VOCAB).eval()
    batch = random_batch(**BATCH)
    loss, stats = model(batch)
    # Recompute by hand: the CTC head on block 1's output and on the final output.
    enc, lens, inner = model.encoder(model.normalize(batch["feats"], batch["feats_lens"]) if model.normalize
                                     else batch["feats"], batch["feats_lens"], return_intermediate=True)
    final = model.ctc(enc, lens, batch["ys"], batch["ys_lens"])
    inter = model.ctc(inner[0], lens, batch["ys"], batch["ys_lens"])
    assert stats["loss_interctc"] == pytest.approx(float(inter), rel=1e-5)
    assert stats["loss_ctc"] == pytest.approx(0.5 * float(final) + 0.5 * float(inter), rel=1e-5)
    assert not torch.allclose(inner[0], enc)
    # Without the weight the encoder output is unchanged (inference path) and no extra stat appears.
    enc2, _ = model.encode(batch["feats"], batch["feats_lens"])
    assert torch.allclose(enc2, enc)


def test_intermediate_ctc_needs_layers_and_ctc():
    with pytest.raises(ValueError, match="interctc_layer_idx"):
        enc = ConformerEncoder(input_size=8, output_size=8, attention_heads=2, linear_units=8, num_blocks=2)
        CTCAttentionModel(VOCAB, enc, None, ctc_weight=1.0, interctc_weight=0.3)
    with pytest.raises(ValueError, match="out of range"):
        ConformerEncoder(input_size=8, output_size=8, attention_heads=2, linear_units=8, num_blocks=2,
                         interctc_layer_idx=[2])

"""ConformerEncoder: output shapes, and padding never changes the outputs of valid frames."""
import pytest
import torch

from speechllm.nets.encoders import ENCODERS, ConformerEncoder
from speechllm.nets.subsampling import subsampled_length


def small_encoder(rate: int = 4) -> ConformerEncoder:
    torch.manual_seed(0)
    return ConformerEncoder(input_size=20, output_size=32, attention_heads=2, linear_units=64, num_blocks=2,
                            cnn_module_kernel=5, subsampling_rate=rate)


def test_registry_holds_conformer():
    assert ENCODERS["conformer"] is ConformerEncoder


@pytest.mark.parametrize("rate", [4, 6, 8])
def test_output_shape_and_lengths(rate):
    enc = small_encoder(rate).eval()
    lengths = torch.tensor([80, 57, 40])
    out, out_lens = enc(torch.randn(3, 80, 20), lengths)
    assert out.shape == (3, subsampled_length(80, rate), 32)
    assert enc.output_size() == 32
    assert out_lens.tolist() == subsampled_length(lengths, rate).tolist()


def test_padded_output_frames_are_zero():
    enc = small_encoder().eval()
    out, out_lens = enc(torch.randn(2, 80, 20), torch.tensor([80, 40]))
    assert torch.all(out[1, out_lens[1]:] == 0)


def test_padding_does_not_change_valid_outputs():
    enc = small_encoder().eval()
    torch.manual_seed(1)
    short = torch.randn(1, 41, 20)
    alone, alone_len = enc(short, torch.tensor([41]))
    # the same utterance zero-padded next to a longer one, and with extra garbage padding
    batch = torch.zeros(2, 97, 20)
    batch[0] = torch.randn(97, 20)
    batch[1, :41] = short[0]
    batch[1, 41:] = 5.0
    out, out_lens = enc(batch, torch.tensor([97, 41]))
    n = int(alone_len)
    assert int(out_lens[1]) == n
    torch.testing.assert_close(out[1, :n], alone[0], atol=1e-5, rtol=1e-5)


def test_batch_padded_beyond_longest_utterance():
    enc = small_encoder().eval()
    x = torch.randn(1, 50, 20)
    a, _ = enc(x, torch.tensor([50]))
    b, lens = enc(torch.cat([x, torch.zeros(1, 30, 20)], dim=1), torch.tensor([50]))
    torch.testing.assert_close(b[0, : lens[0]], a[0], atol=1e-5, rtol=1e-5)


def test_backward_reaches_subsampling():
    enc = small_encoder().train()
    out, _ = enc(torch.randn(2, 60, 20), torch.tensor([60, 33]))
    out.sum().backward()
    assert enc.subsampling.conv[0].weight.grad is not None

"""Conv2dSubsampling: exact output lengths for rates 4, 6 and 8."""
import pytest
import torch

from speechllm.nets.subsampling import Conv2dSubsampling, min_input_length, subsampled_length

FORMULAS = {
    4: lambda n: ((n - 1) // 2 - 1) // 2,
    6: lambda n: ((n - 1) // 2 - 2) // 3,
    8: lambda n: (((n - 1) // 2 - 1) // 2 - 1) // 2,
}


@pytest.mark.parametrize("rate", [4, 6, 8])
def test_subsampled_length_matches_formula(rate):
    for n in range(15, 120):
        assert subsampled_length(n, rate) == FORMULAS[rate](n)
    lengths = torch.arange(15, 120)
    assert subsampled_length(lengths, rate).tolist() == [FORMULAS[rate](n) for n in range(15, 120)]


@pytest.mark.parametrize("rate", [4, 6, 8])
def test_conv_output_frames_equal_returned_lengths(rate):
    sub = Conv2dSubsampling(input_size=20, output_size=8, rate=rate)
    for n in [15, 16, 17, 31, 50, 101]:
        y, lens = sub(torch.randn(1, n, 20), torch.tensor([n]))
        assert y.shape == (1, FORMULAS[rate](n), 8)
        assert lens.tolist() == [y.size(1)]


@pytest.mark.parametrize("rate", [4, 6, 8])
def test_batch_lengths_per_utterance(rate):
    sub = Conv2dSubsampling(input_size=20, output_size=8, rate=rate)
    lengths = torch.tensor([60, 45, 23])
    y, out = sub(torch.randn(3, 60, 20), lengths)
    assert y.size(1) == FORMULAS[rate](60)
    assert out.tolist() == [FORMULAS[rate](n) for n in lengths.tolist()]


def test_too_short_input_gives_zero_length():
    assert subsampled_length(torch.tensor([0, 1, 2, 6, 7]), 4).tolist() == [0, 0, 0, 0, 1]


@pytest.mark.parametrize("rate", [4, 6, 8])
def test_batch_shorter_than_the_kernels_gives_zero_lengths(rate):
    sub = Conv2dSubsampling(input_size=20, output_size=8, rate=rate)
    assert subsampled_length(min_input_length(rate), rate) == 1
    assert subsampled_length(min_input_length(rate) - 1, rate) == 0
    y, lens = sub(torch.randn(2, 4, 20), torch.tensor([4, 2]))
    assert lens.tolist() == [0, 0] and y.size(1) >= 1


def test_unknown_rate_lists_choices():
    with pytest.raises(ValueError, match=r"\[4, 6, 8\]"):
        Conv2dSubsampling(20, 8, rate=3)


@pytest.mark.parametrize("rate", [4, 6, 8])
def test_conv_channels_independent_of_output_size(rate):
    sub = Conv2dSubsampling(input_size=20, output_size=8, rate=rate, channels=3)
    convs = [m for m in sub.conv if isinstance(m, torch.nn.Conv2d)]
    assert all(c.out_channels == 3 for c in convs)
    assert convs[0].in_channels == 1 and all(c.in_channels == 3 for c in convs[1:])
    y, lens = sub(torch.randn(2, 50, 20), torch.tensor([50, 31]))
    assert y.shape == (2, FORMULAS[rate](50), 8)
    assert lens.tolist() == [FORMULAS[rate](50), FORMULAS[rate](31)]
    # the default keeps ESPnet's layout (channels = output_size)
    default = Conv2dSubsampling(input_size=20, output_size=8, rate=rate)
    assert all(m.out_channels == 8 for m in default.conv if isinstance(m, torch.nn.Conv2d))


def test_bad_channel_count():
    with pytest.raises(ValueError, match="channels must be positive"):
        Conv2dSubsampling(20, 8, rate=4, channels=0)

"""TransformerDecoder: teacher-forced logits, and one-step scoring (with and without KV cache)."""
import torch

from speechllm.nets.decoders import DECODERS, TransformerDecoder

V, D = 11, 32


def small_decoder() -> TransformerDecoder:
    torch.manual_seed(0)
    return TransformerDecoder(V, D, attention_heads=2, linear_units=64, num_blocks=2).eval()


def memory_batch():
    torch.manual_seed(1)
    memory = torch.randn(3, 9, D)
    lens = torch.tensor([9, 6, 3])
    mask = torch.arange(9)[None, :] < lens[:, None]
    return memory, lens, mask


def test_registry_holds_transformer():
    assert DECODERS["transformer"] is TransformerDecoder


def test_forward_shape():
    dec = small_decoder()
    memory, lens, _ = memory_batch()
    ys = torch.randint(0, V, (3, 5))
    assert dec(memory, lens, ys, torch.tensor([5, 3, 1])).shape == (3, 5, V)


def test_score_batch_equals_last_step_of_full_forward():
    dec = small_decoder()
    memory, lens, mask = memory_batch()
    ys = torch.randint(0, V, (3, 6))
    with torch.no_grad():
        full = torch.log_softmax(dec(memory, lens, ys, torch.full((3,), 6)), dim=-1)
        for L in range(1, 7):
            logp, _ = dec.score_batch(ys[:, :L], memory, mask)
            torch.testing.assert_close(logp, full[:, L - 1], atol=1e-5, rtol=1e-5)


def test_cached_steps_equal_full_forward():
    dec = small_decoder()
    memory, lens, mask = memory_batch()
    ys = torch.randint(0, V, (3, 6))
    with torch.no_grad():
        full = torch.log_softmax(dec(memory, lens, ys, torch.full((3,), 6)), dim=-1)
        cache = None
        for L in range(1, 7):
            logp, cache = dec.score_batch(ys[:, :L], memory, mask, cache)
            torch.testing.assert_close(logp, full[:, L - 1], atol=1e-5, rtol=1e-5)
        assert cache.self_kv[0][0].size(2) == 6


def test_valid_positions_ignore_token_padding():
    dec = small_decoder()
    memory, lens, _ = memory_batch()
    ys = torch.randint(0, V, (3, 6))
    other = ys.clone()
    other[:, 4:] = 0  # change only the positions after length 4
    with torch.no_grad():
        a = dec(memory, lens, ys, torch.full((3,), 4))
        b = dec(memory, lens, other, torch.full((3,), 4))
    torch.testing.assert_close(a[:, :4], b[:, :4])


def test_cache_select_reorders_hypotheses():
    dec = small_decoder()
    memory, lens, mask = memory_batch()
    ys = torch.randint(0, V, (3, 4))
    with torch.no_grad():
        _, cache = dec.score_batch(ys[:, :3], memory, mask)
        order = torch.tensor([2, 0, 1])
        logp, _ = dec.score_batch(ys[order], memory, mask, cache.select(order))
        expected, _ = dec.score_batch(ys[order], memory[order], mask[order])
    torch.testing.assert_close(logp, expected, atol=1e-5, rtol=1e-5)

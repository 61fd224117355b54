"""CausalLMScorer: cached steps, reordered rows and right-padded rows all score like whole prefixes."""
import pytest
import torch

from asr_toys import VOCAB, random_lm
from speechllm.search.lm_scorer import CausalLMScorer

SOS = VOCAB - 1


@pytest.fixture(scope="module")
def scorer():
    return CausalLMScorer(random_lm())


def whole_prefix(scorer, ys):
    """Reference: each row run alone, whole prefix, no cache."""
    with torch.no_grad():
        return torch.stack([torch.log_softmax(scorer.lm(input_ids=row[None]).logits[0, -1], dim=-1) for row in ys])


def test_log_probs_are_normalized_over_the_token_list(scorer):
    logp, _ = scorer.score_batch(torch.tensor([[SOS], [SOS]]))
    assert logp.shape == (2, VOCAB) and scorer.vocab_size == VOCAB
    assert torch.allclose(logp.exp().sum(-1), torch.ones(2), atol=1e-5)


def test_cached_steps_with_reordered_and_dropped_rows_equal_whole_prefixes(scorer):
    g = torch.Generator().manual_seed(0)
    ys = torch.full((4, 1), SOS)
    logp, cache = scorer.score_batch(ys)
    for index in ([2, 2, 0, 1], [3, 1, 0], [0, 0, 2]):  # beam reorders rows, then an utterance leaves
        index = torch.tensor(index)
        ys = torch.cat([ys[index], torch.randint(1, VOCAB - 1, (len(index), 1), generator=g)], dim=1)
        logp, cache = scorer.score_batch(ys, cache.select(index))
        assert torch.allclose(logp, whole_prefix(scorer, ys), atol=1e-5)
    assert cache.length == ys.size(1) == 4


def test_cache_of_another_length_is_an_error(scorer):
    _, cache = scorer.score_batch(torch.tensor([[SOS, 3]]))
    with pytest.raises(ValueError, match="cache holds 2 tokens"):
        scorer.score_batch(torch.tensor([[SOS, 3, 4, 5]]), cache)


def test_right_padded_rows_are_scored_after_their_last_token(scorer):
    rows = [[SOS, 4, 7, 2], [SOS], [SOS, 9, 9]]
    ys = torch.zeros(3, 4, dtype=torch.long)
    for i, r in enumerate(rows):
        ys[i, : len(r)] = torch.tensor(r)
    logp, cache = scorer.score_batch(ys, lengths=torch.tensor([4, 1, 3]))
    assert cache is None
    for i, r in enumerate(rows):
        assert torch.allclose(logp[i], whole_prefix(scorer, torch.tensor([r]))[0], atol=1e-5)

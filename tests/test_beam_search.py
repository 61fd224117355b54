"""Batched beam search: beam 1 equals greedy decoding, batching changes nothing, N-best sorted."""
import math

import pytest
import torch

from asr_toys import VOCAB, random_batch, tiny_model
from speechllm.search.beam_search import batch_beam_search, ctc_prefix_beam_search, max_output_lengths
from speechllm.search.greedy_ctc import greedy_ctc

EOS = VOCAB - 1

TRAIN = dict(lengths=[72, 55, 40, 28], label_lengths=[7, 5, 4, 2], seed=4)


@pytest.fixture(scope="module")
def encoded():
    """A tiny model fitted for 60 steps to 4 utterances (about 0.5 s), so that decoding has
    hypotheses of different lengths that end by themselves; plus 2 unseen utterances."""
    model = tiny_model(ctc_weight=0.3, seed=3)
    train = random_batch(**TRAIN)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss, _ = model(train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    unseen = random_batch([64, 33], [1, 1], seed=9)
    feats = torch.zeros(6, 72, train["feats"].size(2))
    feats[:4], feats[4:, :64] = train["feats"], unseen["feats"]
    lens = torch.cat([train["feats_lens"], unseen["feats_lens"]])
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens)
        ctc_logp = model.ctc.log_softmax(enc)
    return model, enc, enc_lens, ctc_logp, train


def greedy_attention(model, enc, enc_len, maxlen):
    """Reference: argmax of the full (uncached) decoder at every step; <eos> forced at maxlen."""
    ys, score = [EOS], 0.0
    for step in range(maxlen):
        logits = model.decoder(enc, enc_len, torch.tensor([ys]), torch.tensor([len(ys)]))
        logp = torch.log_softmax(logits[0, -1], dim=-1)
        logp[0] = float("-inf")  # blank is never an output token
        tok = EOS if step == maxlen - 1 else int(logp.argmax())
        score += float(logp[tok])
        if tok == EOS:
            return ys[1:], score
        ys.append(tok)


def test_beam_one_without_ctc_equals_greedy_attention_decoding(encoded):
    model, enc, enc_lens, *_ = encoded
    hyps = batch_beam_search(model.decoder, enc, enc_lens, None, beam_size=1, ctc_weight=0.0)
    maxlens = max_output_lengths(enc_lens, 0.0)
    with torch.no_grad():
        for b in range(enc.size(0)):
            ids, score = greedy_attention(model, enc[b : b + 1, : enc_lens[b]], enc_lens[b : b + 1], int(maxlens[b]))
            assert hyps[b][0][0] == ids
            assert hyps[b][0][1] == pytest.approx(score, abs=1e-4)
    assert any(0 < len(h[0][0]) < int(m) - 1 for h, m in zip(hyps, maxlens))  # some ended by <eos> itself


def peaky_ctc_log_probs(lengths, seed=0):
    """Posteriors with one dominant token per frame (over blank and labels, never <eos>)."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    logits = torch.randn(len(lengths), T, VOCAB, generator=g)
    best = torch.randint(0, 4, (len(lengths), T), generator=g)  # small alphabet: repeats happen
    best = torch.where(torch.rand(len(lengths), T, generator=g) < 0.4, torch.zeros_like(best), best)
    logits.scatter_(2, best.unsqueeze(2), 8.0)
    logits[..., EOS] = -10.0
    return torch.log_softmax(logits, dim=-1)


def test_ctc_beam_one_equals_greedy_ctc():
    lengths = torch.tensor([30, 22, 9])
    logp = peaky_ctc_log_probs(lengths.tolist())
    hyps = batch_beam_search(None, torch.zeros(3, 30, 4), lengths, logp, beam_size=1, ctc_weight=1.0)
    greedy = greedy_ctc(logp, lengths)
    for (ids, _), nbest in zip(greedy, hyps):
        assert nbest[0][0] == ids
    assert any(len(ids) > 3 for ids, _ in greedy)


def test_ctc_weight_one_with_model_equals_greedy_on_its_own_peaky_output(encoded):
    model, enc, enc_lens, *_ = encoded
    logp = peaky_ctc_log_probs(enc_lens.tolist(), seed=5)
    a = batch_beam_search(model.decoder, enc, enc_lens, logp, beam_size=1, ctc_weight=1.0)
    assert [h[0][0] for h in a] == [ids for ids, _ in greedy_ctc(logp, enc_lens)]


def test_ctc_prefix_beam_search_scores_are_prefix_probabilities():
    # With a beam wide enough to keep every prefix, a hypothesis scores log P(labels | x).
    lengths = torch.tensor([3])
    logp = torch.log_softmax(torch.randn(1, 3, 4), dim=-1)
    hyps = ctc_prefix_beam_search(logp, lengths, beam_size=64, nbest=64, eos=3)[0]
    total = sum(math.exp(s) for _, s in hyps)
    assert total == pytest.approx(1.0 - _eos_mass(logp[0]), abs=1e-5)
    assert len({tuple(h) for h, _ in hyps}) == len(hyps)  # merged: no duplicate prefixes


def _eos_mass(lp):
    # probability of the alignments that use token 3 (excluded from the search) at least once
    p_no_eos = torch.prod(1 - lp.exp()[:, 3])
    return float(1 - p_no_eos)


@pytest.mark.parametrize("ctc_weight", [0.0, 0.3, 1.0])
def test_batched_results_equal_one_at_a_time(encoded, ctc_weight):
    model, enc, enc_lens, ctc_logp, _ = encoded
    opts = dict(beam_size=4, ctc_weight=ctc_weight, nbest=3, maxlen_ratio=0.5)
    batched = batch_beam_search(model.decoder, enc, enc_lens, ctc_logp, **opts)
    for b in range(enc.size(0)):
        n = int(enc_lens[b])
        one = slice(b, b + 1)
        single = batch_beam_search(model.decoder, enc[one, :n], enc_lens[one], ctc_logp[one, :n], **opts)
        assert [h for h, _ in batched[b]] == [h for h, _ in single[0]]
        assert [s for _, s in batched[b]] == pytest.approx([s for _, s in single[0]], abs=1e-4)


@pytest.mark.parametrize("ctc_weight", [0.0, 0.5, 1.0])
def test_nbest_sorted_best_first_and_distinct(encoded, ctc_weight):
    model, enc, enc_lens, ctc_logp, _ = encoded
    hyps = batch_beam_search(model.decoder, enc, enc_lens, ctc_logp, beam_size=5, ctc_weight=ctc_weight, nbest=4,
                             length_bonus=0.5, maxlen_ratio=0.4)
    for nbest in hyps:
        scores = [s for _, s in nbest]
        assert 1 <= len(nbest) <= 4
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h) for h, _ in nbest}) == len(nbest)
        assert all(0 not in h and EOS not in h for h, _ in nbest)


def test_maxlen_ratio_bounds_hypothesis_length(encoded):
    model, enc, enc_lens, ctc_logp, _ = encoded
    hyps = batch_beam_search(model.decoder, enc, enc_lens, ctc_logp, beam_size=3, ctc_weight=0.0, nbest=3,
                             length_bonus=5.0, maxlen_ratio=0.2)
    for nbest, n in zip(hyps, max_output_lengths(enc_lens, 0.2).tolist()):
        assert max(len(h) for h, _ in nbest) == n - 1  # the bonus pushes to the limit; <eos> is the n-th


@pytest.mark.parametrize("ctc_weight", [0.3, 1.0])
def test_fitted_model_decodes_its_training_transcripts(encoded, ctc_weight):
    model, enc, enc_lens, ctc_logp, train = encoded
    hyps = batch_beam_search(model.decoder, enc[:4], enc_lens[:4], ctc_logp[:4], beam_size=4, ctc_weight=ctc_weight)
    refs = [train["ys"][b, : train["ys_lens"][b]].tolist() for b in range(4)]
    assert [h[0][0] for h in hyps] == refs


def reference_joint_search(model, enc, enc_len, ctc_logp, beam, ctc_weight, nbest, length_bonus=0.0):
    """One utterance, plain Python lists, whole-prefix decoder runs, CTC prefix scores recomputed
    from scratch per hypothesis, and no early stop (runs to maxlen)."""
    from speechllm.search.ctc_prefix_score import CTCPrefixScorer

    scorer = CTCPrefixScorer(ctc_logp, enc_len, eos=EOS)

    def ctc_prefix_logp(seq):  # log psi(seq[:-1] . seq[-1]) by extending one token at a time
        state, psi = scorer.initial_state(torch.tensor([0])), 0.0
        for tok in seq:
            cand = torch.tensor([[tok]])
            out, r = scorer.score(state, cand)
            psi = float(out[0, 0])
            state = scorer.extend(state, out, r, cand, torch.tensor([0]), torch.tensor([0]))
        return psi

    maxlen = int(max_output_lengths(enc_len, 0.0)[0])
    live, ended = [((), 0.0)], []
    for step in range(maxlen):
        cands = []
        for seq, score in live:
            ys = torch.tensor([[EOS, *seq]])
            att = torch.log_softmax(model.decoder(enc, enc_len, ys, torch.tensor([ys.size(1)]))[0, -1], dim=-1)
            att[0] = float("-inf")
            toks = set(att.topk(int(1.5 * beam)).indices.tolist()) | {EOS}
            if step == maxlen - 1:
                toks = {EOS}
            base = ctc_prefix_logp(seq)
            for c in toks:
                new = seq + (c,)
                joint = (1 - ctc_weight) * float(att[c]) + ctc_weight * (ctc_prefix_logp(new) - base)
                cands.append((new, score + joint + length_bonus))
        cands = sorted((c for c in cands if c[1] > float("-inf")), key=lambda c: -c[1])[:beam]
        ended += [(list(s[:-1]), sc) for s, sc in cands if s[-1] == EOS]
        live = [(s, sc) for s, sc in cands if s[-1] != EOS]
        if not live:
            break
    return sorted(ended, key=lambda h: -h[1])[:nbest]


@pytest.mark.parametrize("ctc_weight,length_bonus", [(0.3, 0.0), (0.5, 0.4)])
def test_joint_search_matches_plain_reference_without_early_stop(encoded, ctc_weight, length_bonus):
    model, enc, enc_lens, ctc_logp, _ = encoded
    hyps = batch_beam_search(model.decoder, enc, enc_lens, ctc_logp, beam_size=3, ctc_weight=ctc_weight, nbest=3,
                             length_bonus=length_bonus)
    with torch.no_grad():
        for b in [1, 3, 5]:
            n = int(enc_lens[b])
            ref = reference_joint_search(model, enc[b : b + 1, :n], enc_lens[b : b + 1], ctc_logp[b : b + 1, :n],
                                         3, ctc_weight, 3, length_bonus)
            assert [h for h, _ in hyps[b]] == [h for h, _ in ref]
            assert [s for _, s in hyps[b]] == pytest.approx([s for _, s in ref], abs=1e-4)

"""Batched beam search: beam 1 equals greedy decoding, batching changes nothing, N-best sorted;
shallow fusion with an LM adds exactly its weighted log-probabilities (and changes nothing at weight 0)."""
import math

import pytest
import torch

from asr_toys import VOCAB, fitted_tiny_model, random_lm
from speechllm.search.beam_search import batch_beam_search, ctc_prefix_beam_search, max_output_lengths
from speechllm.search.greedy_ctc import greedy_ctc
from speechllm.search.lm_scorer import CausalLMScorer

EOS = VOCAB - 1


@pytest.fixture(scope="module")
def encoded():
    """A tiny model fitted to 4 utterances, 6 encoded utterances (asr_toys.fitted_tiny_model)."""
    return fitted_tiny_model()


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


def reference_joint_search(model, enc, enc_len, ctc_logp, beam, ctc_weight, nbest, length_bonus=0.0,
                           lm=None, lm_weight=0.0, allowed=None):
    """One utterance, plain Python lists, whole-prefix decoder (and LM) runs, CTC prefix scores
    recomputed from scratch per hypothesis, and no early stop (runs to maxlen). ``allowed(seq)``:
    whether a hypothesis (``<eos>`` last when it ends) may exist; the others score -inf."""
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
            if allowed is not None:
                att[[c for c in range(VOCAB) if not allowed(seq + (c,))]] = float("-inf")
            lm_logp = lm.score_batch(ys)[0][0] if lm is not None else torch.zeros_like(att)
            pre = (1 - ctc_weight) * att + lm_weight * lm_logp if lm is not None else att
            toks = set(pre.topk(int(1.5 * beam)).indices.tolist()) | {EOS}
            if step == maxlen - 1:
                toks = {EOS}
            base = ctc_prefix_logp(seq) if ctc_weight > 0 else 0.0
            for c in toks:
                new = seq + (c,)
                joint = (1 - ctc_weight) * float(att[c]) + lm_weight * float(lm_logp[c])
                if ctc_weight > 0:  # (0 * -inf would be nan)
                    joint += ctc_weight * (ctc_prefix_logp(new) - base)
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


# --- shallow fusion ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lm():
    return CausalLMScorer(random_lm())


class SequenceLM:
    """A toy LM sure of one sentence: after a prefix of ``seq`` the next token of ``seq`` (then
    ``<eos>``) has nearly all the probability; after anything else every token is equally likely."""

    def __init__(self, seq, vocab=VOCAB):
        self.seq, self.vocab = list(seq), vocab

    def score_batch(self, ys, cache=None, lengths=None):
        lengths = [ys.size(1)] * ys.size(0) if lengths is None else lengths.tolist()
        logits = torch.zeros(ys.size(0), self.vocab)
        for n, k in enumerate(lengths):
            prefix = ys[n, 1:k].tolist()
            if prefix == self.seq[: len(prefix)]:
                logits[n, self.seq[len(prefix)] if len(prefix) < len(self.seq) else self.vocab - 1] = 12.0
        return torch.log_softmax(logits, dim=-1), None


@pytest.mark.parametrize("ctc_weight", [0.0, 0.3, 1.0])
def test_lm_weight_zero_gives_the_results_without_lm_bit_for_bit(encoded, lm, ctc_weight):
    model, enc, enc_lens, ctc_logp, _ = encoded
    opts = dict(beam_size=4, ctc_weight=ctc_weight, nbest=4, maxlen_ratio=0.5, length_bonus=0.2)
    assert batch_beam_search(model.decoder, enc, enc_lens, ctc_logp, lm=lm, lm_weight=0.0, **opts) == \
        batch_beam_search(model.decoder, enc, enc_lens, ctc_logp, **opts)


@pytest.mark.parametrize("ctc_weight,length_bonus", [(0.3, 0.0), (0.0, 0.5)])
def test_joint_search_with_lm_matches_plain_reference(encoded, lm, ctc_weight, length_bonus):
    model, enc, enc_lens, ctc_logp, _ = encoded
    hyps = batch_beam_search(model.decoder, enc, enc_lens, ctc_logp, beam_size=3, ctc_weight=ctc_weight, nbest=3,
                             length_bonus=length_bonus, lm=lm, lm_weight=0.6)
    with torch.no_grad():
        for b in [1, 3, 5]:
            n = int(enc_lens[b])
            ref = reference_joint_search(model, enc[b : b + 1, :n], enc_lens[b : b + 1], ctc_logp[b : b + 1, :n],
                                         3, ctc_weight, 3, length_bonus, lm=lm, lm_weight=0.6)
            assert [h for h, _ in hyps[b]] == [h for h, _ in ref]
            assert [s for _, s in hyps[b]] == pytest.approx([s for _, s in ref], abs=1e-4)


def test_fused_score_is_decoder_plus_ctc_plus_lm_of_the_whole_hypothesis(encoded, lm):
    """score(y) = (1 - w) sum log p_att(y_i | y_<i) + w log P_ctc(y | x) + b sum log p_lm(y_i | y_<i),
    the sums over the tokens and <eos>: the CTC prefix-score differences telescope to the CTC
    probability of the whole sequence."""
    model, enc, enc_lens, ctc_logp, _ = encoded
    w, b_lm = 0.3, 0.7
    hyps = batch_beam_search(model.decoder, enc, enc_lens, ctc_logp, beam_size=4, ctc_weight=w, nbest=2,
                             maxlen_ratio=0.5, lm=lm, lm_weight=b_lm)
    with torch.no_grad():
        for b, nbest in enumerate(hyps):
            for ids, score in nbest:
                ys_in, ys_out = torch.tensor([[EOS, *ids]]), torch.tensor([*ids, EOS])
                n = int(enc_lens[b])
                att = torch.log_softmax(model.decoder(enc[b : b + 1, :n], enc_lens[b : b + 1], ys_in,
                                                      torch.tensor([len(ids) + 1]))[0], dim=-1)
                lm_logp = torch.log_softmax(lm.lm(input_ids=ys_in).logits[0], dim=-1)
                ctc = -torch.nn.functional.ctc_loss(ctc_logp[b, :n], torch.tensor([ids]), torch.tensor([n]),
                                                    torch.tensor([len(ids)]), reduction="sum", zero_infinity=False)
                steps = torch.arange(len(ids) + 1)
                hand = (1 - w) * att[steps, ys_out].sum() + w * ctc + b_lm * lm_logp[steps, ys_out].sum()
                assert score == pytest.approx(float(hand), abs=1e-3)


def test_ctc_prefix_search_adds_lm_scores_of_labels_and_eos():
    """A beam that keeps every prefix: score = log P_ctc(y | x) + b log p_lm(y <eos>)."""
    lengths = torch.tensor([4])
    logp = torch.log_softmax(torch.randn(1, 4, 5, generator=torch.Generator().manual_seed(1)), dim=-1)
    lm = CausalLMScorer(random_lm(vocab=5))
    hyps = ctc_prefix_beam_search(logp, lengths, beam_size=200, nbest=200, eos=4, lm=lm, lm_weight=0.8)[0]
    assert len(hyps) == len({tuple(h) for h, _ in hyps}) > 40  # every sequence 4 frames can spell: no pruning
    with torch.no_grad():
        for ids, score in hyps:
            ctc = -torch.nn.functional.ctc_loss(logp[0], torch.tensor([ids]), lengths, torch.tensor([len(ids)]),
                                                reduction="sum") if ids else logp[0, :, 0].sum()
            lm_logp = torch.log_softmax(lm.lm(input_ids=torch.tensor([[4, *ids]])).logits[0], dim=-1)
            lm_total = lm_logp[torch.arange(len(ids) + 1), torch.tensor([*ids, 4])].sum()
            assert score == pytest.approx(float(ctc + 0.8 * lm_total), abs=1e-4)
    assert [s for _, s in hyps] == sorted((s for _, s in hyps), reverse=True)


@pytest.mark.parametrize("ctc_weight", [0.3, 1.0])
def test_lm_sure_of_a_sentence_turns_the_search_to_it(encoded, ctc_weight):
    model, enc, enc_lens, ctc_logp, _ = encoded
    opts = dict(beam_size=4, ctc_weight=ctc_weight, nbest=4, maxlen_ratio=0.5)
    plain = batch_beam_search(model.decoder, enc, enc_lens, ctc_logp, **opts)
    for b in (0, 4):
        target = plain[b][1][0]  # the runner-up without the LM
        fused = batch_beam_search(model.decoder, enc[b : b + 1], enc_lens[b : b + 1], ctc_logp[b : b + 1],
                                  lm=SequenceLM(target), lm_weight=1.0, **opts)
        assert plain[b][0][0] != target and fused[0][0][0] == target


def test_lm_weight_needs_an_lm_and_cannot_be_negative(encoded, lm):
    model, enc, enc_lens, ctc_logp, _ = encoded
    with pytest.raises(ValueError, match="needs an lm"):
        batch_beam_search(model.decoder, enc, enc_lens, ctc_logp, lm_weight=0.5)
    with pytest.raises(ValueError, match="lm_weight must be >= 0"):
        ctc_prefix_beam_search(ctc_logp, enc_lens, lm=lm, lm_weight=-1.0)


# --- lexicon constraint ----------------------------------------------------------------------
# Sentencepiece-style pieces for the toy vocabulary ("\u2581" starts a word).
PIECES = ["<blank>", "<unk>", "\u2581a", "\u2581b", "c", "d", "\u2581e", "f", "\u2581", "g", "h", "<sos/eos>"]
WORDS = ["a", "ac", "bd", "bdc", "e", "ef", "gh"]


def spelled(seq):
    """Words spelled by token ids (no <eos>), and whether they are well-formed (begin with a word start)."""
    text = "".join(PIECES[t] for t in seq)
    return text.split("\u2581")[1:], text == "" or text.startswith("\u2581")


def lexicon_allows(seq):
    """Plain rule: every finished word is listed, the word being spelled is a prefix of one;
    <eos> ends only a complete word (or an empty hypothesis). Special tokens are never text."""
    ends = bool(seq) and seq[-1] == EOS
    body = seq[:-1] if ends else seq
    if any(t in (0, 1, EOS) for t in body):
        return False
    words, ok = spelled(body)
    if not ok:
        return False
    done, last = (words, None) if ends else (words[:-1], words[-1] if words else None)
    return all(w in WORDS for w in done) and (last is None or any(v.startswith(last) for v in WORDS))


@pytest.fixture(scope="module")
def constraint():
    from speechllm.search.lexicon import LexiconConstraint

    return LexiconConstraint(PIECES, WORDS, eos=EOS)


def test_lexicon_constraint_allows_exactly_the_prefixes_of_listed_words(constraint):
    import itertools

    checked = 0
    for n in range(1, 5):  # every token sequence up to 4 tokens, each followed by every token
        for seq in itertools.product(range(2, VOCAB - 1), repeat=n - 1):
            if not lexicon_allows(seq):
                continue
            state = ""
            for tok in seq:
                state = constraint.advance(state, tok)
            mask = constraint.mask(state)
            assert [bool(m == 0) for m in mask] == [lexicon_allows(seq + (c,)) for c in range(VOCAB)], seq
            checked += 1
    assert checked > 50
    assert constraint.advance("", 4) is None  # no text before the first word start
    assert float(constraint.mask("")[EOS]) == 0.0  # the empty hypothesis may end


@pytest.mark.parametrize("ctc_weight,use_lm", [(0.3, False), (0.5, True), (0.0, False)])
def test_joint_search_with_lexicon_matches_plain_reference(encoded, lm, constraint, ctc_weight, use_lm):
    model, enc, enc_lens, ctc_logp, _ = encoded
    fusion = dict(lm=lm, lm_weight=0.6) if use_lm else {}
    free = batch_beam_search(model.decoder, enc, enc_lens, ctc_logp, beam_size=3, ctc_weight=ctc_weight, nbest=3,
                             **fusion)
    hyps = batch_beam_search(model.decoder, enc, enc_lens, ctc_logp, beam_size=3, ctc_weight=ctc_weight, nbest=3,
                             constraint=constraint, **fusion)
    assert any(not lexicon_allows(tuple(h) + (EOS,)) for nbest in free for h, _ in nbest)  # the constraint matters
    assert all(lexicon_allows(tuple(h) + (EOS,)) for nbest in hyps for h, _ in nbest)
    with torch.no_grad():
        for b in [1, 3, 5]:
            n = int(enc_lens[b])
            ref = reference_joint_search(model, enc[b : b + 1, :n], enc_lens[b : b + 1], ctc_logp[b : b + 1, :n],
                                         3, ctc_weight, 3, allowed=lexicon_allows, **fusion)
            assert [h for h, _ in hyps[b]] == [h for h, _ in ref]
            assert [s for _, s in hyps[b]] == pytest.approx([s for _, s in ref], abs=1e-4)


def test_ctc_prefix_search_with_lexicon_keeps_the_best_listed_sentences(constraint):
    """With a beam wide enough to keep every prefix, the constrained CTC prefix search returns the
    listed-word label sequences ranked by log P(labels | x) (brute force over all of them)."""
    import itertools

    lengths = torch.tensor([4, 3])
    g = torch.Generator().manual_seed(2)
    logp = torch.log_softmax(torch.randn(2, 4, VOCAB, generator=g) * 2, dim=-1)
    hyps = ctc_prefix_beam_search(logp, lengths, beam_size=400, nbest=5, constraint=constraint)
    free = ctc_prefix_beam_search(logp, lengths, beam_size=400, nbest=5)
    assert any(not lexicon_allows(tuple(h) + (EOS,)) for nbest in free for h, _ in nbest)
    for b in range(2):
        T = int(lengths[b])
        seqs = [s for n in range(T + 1) for s in itertools.product(range(2, VOCAB - 1), repeat=n)
                if lexicon_allows(s + (EOS,))]
        ref = sorted(((list(s), ctc_sequence_logp(logp[b, :T], s)) for s in seqs), key=lambda h: -h[1])
        ref = [h for h in ref if h[1] > float("-inf")][:5]
        assert [h for h, _ in hyps[b]] == [h for h, _ in ref]
        assert [s for _, s in hyps[b]] == pytest.approx([s for _, s in ref], abs=1e-4)


def ctc_sequence_logp(logp, labels):
    """log P(labels | x) of CTC by summing over every frame-level path (brute force)."""
    import itertools

    T, V = logp.shape
    total = []
    for path in itertools.product(range(V - 1), repeat=T):  # <eos> (V - 1) is never emitted
        collapsed = [t for i, t in enumerate(path) if t != 0 and (i == 0 or t != path[i - 1])]
        if collapsed == list(labels):
            total.append(sum(float(logp[i, t]) for i, t in enumerate(path)))
    return float(torch.logsumexp(torch.tensor(total), 0)) if total else float("-inf")

"""CTC prefix scores equal brute-force sums over all alignments (tiny vocabulary, few frames)."""
import itertools
import math

import torch

from speechllm.search.ctc_prefix_score import CTCPrefixScorer

V = 4  # 0 <blank>, 1 'a', 2 'b', 3 <eos>
EOS = 3
CANDS = [1, 2, EOS, 0]


def collapse(path):
    out, prev = [], None
    for k in path:
        if k != prev and k != 0:
            out.append(k)
        prev = k
    return tuple(out)


def brute_force(log_probs: torch.Tensor):
    """``(prefix_prob, exact_prob)`` dictionaries over all V^T alignments of one utterance."""
    probs = log_probs.double().exp()
    prefix, exact = {}, {}
    for path in itertools.product(range(V), repeat=probs.size(0)):
        p = math.prod(float(probs[t, k]) for t, k in enumerate(path))
        seq = collapse(path)
        exact[seq] = exact.get(seq, 0.0) + p
        for n in range(len(seq) + 1):
            prefix[seq[:n]] = prefix.get(seq[:n], 0.0) + p
    return prefix, exact


def expected_score(prefix, exact, h, c):
    if c == 0:
        return float("-inf")
    p = exact.get(h, 0.0) if c == EOS else prefix.get(h + (c,), 0.0)
    return math.log(p) if p > 0 else float("-inf")


def all_prefixes(depth):
    return [p for n in range(depth + 1) for p in itertools.product([1, 2], repeat=n)]


def check_scorer(log_probs: torch.Tensor, lengths: torch.Tensor, depth: int = 3):
    """Grow every prefix over {a, b} up to ``depth`` labels for every utterance, in one batch."""
    B = log_probs.size(0)
    truth = [brute_force(log_probs[b, : lengths[b]]) for b in range(B)]
    scorer = CTCPrefixScorer(log_probs, lengths, blank=0, eos=EOS)
    hyps = [((), b) for b in range(B)]
    state = scorer.initial_state(torch.tensor([b for _, b in hyps]))
    for _ in range(depth + 1):
        cand = torch.tensor([CANDS] * len(hyps))
        psi, r = scorer.score(state, cand)
        for n, (h, b) in enumerate(hyps):
            for k, c in enumerate(CANDS):
                want = expected_score(*truth[b], h, c)
                got = float(psi[n, k])
                if want == float("-inf"):
                    assert got == float("-inf"), (h, c, b)
                else:
                    assert math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-5), (h, c, b, got, want)
        # extend each hypothesis by 'a' and by 'b' (columns 0 and 1)
        rows = torch.arange(len(hyps)).repeat_interleave(2)
        cols = torch.tensor([0, 1] * len(hyps))
        state = scorer.extend(state, psi, r, cand, rows, cols)
        hyps = [(h + (c,), b) for h, b in hyps for c in (1, 2)]


def random_log_probs(B, T, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(B, T, V, generator=g), dim=-1)


def test_prefix_scores_match_brute_force_one_utterance():
    check_scorer(random_log_probs(1, 4, seed=0), torch.tensor([4]))


def test_prefix_scores_match_brute_force_batched_different_lengths():
    lp = random_log_probs(3, 5, seed=1)
    lp[1, 3:] = 7.0  # garbage in the padding must not matter
    lp[2, 2:] = -3.0
    check_scorer(lp, torch.tensor([5, 3, 2]))


def test_batched_scores_equal_per_utterance_scores():
    lp = random_log_probs(2, 5, seed=2)
    lengths = torch.tensor([5, 3])
    cand = torch.tensor([CANDS, CANDS])
    batched = CTCPrefixScorer(lp, lengths, eos=EOS)
    psi_b, _ = batched.score(batched.initial_state(torch.tensor([0, 1])), cand)
    for b in range(2):
        single = CTCPrefixScorer(lp[b : b + 1, : lengths[b]], lengths[b : b + 1], eos=EOS)
        psi_s, _ = single.score(single.initial_state(torch.tensor([0])), cand[:1])
        torch.testing.assert_close(psi_b[b : b + 1], psi_s)


def test_repeated_label_needs_a_blank_between():
    # T=2 frames cannot hold "a a" (needs a blank in between): its prefix score is -inf.
    lp = random_log_probs(1, 2, seed=3)
    scorer = CTCPrefixScorer(lp, torch.tensor([2]), eos=EOS)
    cand = torch.tensor([[1]])
    psi, r = scorer.score(scorer.initial_state(torch.tensor([0])), cand)
    state = scorer.extend(scorer.initial_state(torch.tensor([0])), psi, r, cand, torch.tensor([0]), torch.tensor([0]))
    psi2, _ = scorer.score(state, torch.tensor([[1, 2]]))
    assert psi2[0, 0] == float("-inf")
    assert psi2[0, 1] > float("-inf")

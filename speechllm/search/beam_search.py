"""Batched beam search: joint CTC/attention (label synchronous) and pure CTC (frame synchronous).

Joint search (Watanabe et al. 2017, "Hybrid CTC/attention architecture"): hypotheses of all
utterances are rows of one ``[B * beam]`` batch. At every output step each hypothesis ``h`` is
extended by token ``c`` with the score

    score(h.c) = score(h) + (1 - ctc_weight) log p_att(c | h, x)
                          + ctc_weight (log psi_ctc(h.c) - log psi_ctc(h))
                          + lm_weight log p_lm(c | h) + length_bonus

where ``psi_ctc`` is the CTC prefix probability (:mod:`speechllm.search.ctc_prefix_score`) and
``p_lm`` an optional external LM (shallow fusion, :mod:`speechllm.search.lm_scorer`; ``c`` may
be ``<eos>``: the LM scores the end of the sentence too). CTC scores are computed only for the
``pre_beam_ratio * beam`` best tokens by ``(1 - ctc_weight) log p_att + lm_weight log p_lm``
(the decoder alone without an LM; as ESPnet's ``pre_beam_score_key: full``) plus ``<eos>``; the
others are out of the beam. The ``beam`` best extensions per utterance survive; those ending in
``<eos>`` are finished hypotheses. An utterance stops when
  * it reached ``maxlen`` steps: a hypothesis holds at most ``maxlen`` tokens counting ``<eos>``
    (at the last step only ``<eos>`` may follow), or
  * no running hypothesis can still enter its N-best: every term above is <= 0 except the
    length bonus, so ``best running + max(length_bonus, 0) * steps left`` bounds every future
    score; once that is below the ``nbest``-th finished score, more steps cannot change the
    result (end detection without a heuristic threshold).
Finished utterances leave the batch, so long utterances do not keep short ones computing.

Pure CTC (``ctc_weight == 1`` or no decoder): a frame-synchronous prefix beam search (as in
Graves 2012 and Hannun et al. 2014) over the CTC posteriors, also batched over utterances; see
:func:`ctc_prefix_beam_search`. There an LM adds ``lm_weight log p_lm(c | h)`` when a prefix
grows by ``c`` and ``lm_weight log p_lm(<eos> | h)`` at the end.

Without an LM, or with ``lm_weight == 0`` (the LM is then not run), results are those of the
search without fusion, bit for bit.

Both searches take an optional ``constraint`` (:class:`speechllm.search.lexicon.LexiconConstraint`):
tokens that would spell a word outside its word list score ``-inf`` (in the joint search before
the pre-beam, so only allowed tokens compete), and a hypothesis may end only after a complete word.

Results: for each utterance a list of ``(token_ids, score)`` sorted by score, best first;
``token_ids`` exclude ``<sos>``/``<eos>``. The blank (id 0) is never an output token.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from speechllm.search.ctc_prefix_score import CTCPrefixScorer
from speechllm.search.lexicon import START, LexiconConstraint

logger = logging.getLogger(__name__)

NEG_INF = float("-inf")
Hypothesis = tuple[list[int], float]


def max_output_lengths(enc_lens: torch.Tensor, maxlen_ratio: float) -> torch.Tensor:
    """Token limit per utterance: ``max(1, int(maxlen_ratio * enc_len))``, or ``enc_len`` if the ratio is <= 0."""
    if maxlen_ratio > 0:
        return (enc_lens.float() * maxlen_ratio).long().clamp(min=1)
    return enc_lens.clamp(min=1)


@torch.no_grad()
def _pure_ctc(decoder: nn.Module | None, ctc_weight: float) -> bool:
    """Whether :func:`batch_beam_search` runs the CTC prefix search (no token limit)."""
    return decoder is None or ctc_weight == 1.0


def at_length_bound(nbest_lists: list[list[Hypothesis]], memory_lens: torch.Tensor, maxlen_ratio: float,
                    decoder: nn.Module | None, ctc_weight: float) -> list[bool]:
    """Per utterance of a :func:`batch_beam_search` result: whether its 1-best ended at the last
    step the token limit allows, where the joint search forces ``<eos>`` (a hypothesis possibly
    cut short). Always False for the pure CTC prefix search, which has no token limit."""
    if _pure_ctc(decoder, ctc_weight):
        return [False] * len(nbest_lists)
    bounds = max_output_lengths(memory_lens, maxlen_ratio).tolist()
    return [len(hyps[0][0]) >= bound - 1 for hyps, bound in zip(nbest_lists, bounds)]


def batch_beam_search(
    decoder: nn.Module | None,
    memory: torch.Tensor,
    memory_lens: torch.Tensor,
    ctc_log_probs: torch.Tensor | None = None,
    *,
    beam_size: int = 10,
    ctc_weight: float = 0.3,
    length_bonus: float = 0.0,
    maxlen_ratio: float = 0.0,
    nbest: int = 1,
    sos: int | None = None,
    eos: int | None = None,
    blank: int = 0,
    pre_beam_ratio: float = 1.5,
    lm=None,
    lm_weight: float = 0.0,
    constraint: LexiconConstraint | None = None,
) -> list[list[Hypothesis]]:
    """N-best lists for a batch of encoded utterances (see the module docstring).

    Args:
        decoder: attention decoder with ``score_batch``; None for a pure CTC model.
        memory: encoder output ``[B, T, D]``; memory_lens: valid frames ``[B]``.
        ctc_log_probs: CTC log-posteriors ``[B, T, V]``; needed when ``ctc_weight > 0``.
        beam_size: hypotheses kept per utterance.
        ctc_weight: weight of the CTC prefix score; 1.0 (or no decoder) runs the pure CTC prefix
            beam search, where ``maxlen_ratio`` and ``pre_beam_ratio`` do not apply.
        length_bonus: added per output token (including ``<eos>``).
        maxlen_ratio: token limit relative to the encoder length (0: the encoder length).
        nbest: hypotheses returned per utterance (at most ``beam_size`` are guaranteed).
        sos, eos: default ``V - 1``; blank: CTC blank id.
        pre_beam_ratio: CTC prefix scores are computed for ``int(pre_beam_ratio * beam_size)``
            best tokens (by decoder + LM score) per hypothesis.
        lm: external LM for shallow fusion (``score_batch``, :mod:`speechllm.search.lm_scorer`)
            over the same token ids; lm_weight: its weight (>= 0; 0 leaves the LM out).
        constraint: restricts hypotheses to the words of a word list (None: any token sequence).
    """
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
    if ctc_weight > 0 and ctc_log_probs is None:
        raise ValueError("ctc_weight > 0 needs ctc_log_probs")
    lm = _fusion_lm(lm, lm_weight)
    if _pure_ctc(decoder, ctc_weight):
        if ctc_log_probs is None:
            raise ValueError("pure CTC search needs ctc_log_probs")
        return ctc_prefix_beam_search(ctc_log_probs, memory_lens, beam_size, nbest=nbest, blank=blank,
                                      eos=eos, length_bonus=length_bonus, lm=lm, lm_weight=lm_weight, sos=sos,
                                      constraint=constraint)
    vocab = decoder.vocab_size
    sos = vocab - 1 if sos is None else sos
    eos = vocab - 1 if eos is None else eos
    return _JointSearch(decoder, memory, memory_lens, ctc_log_probs, beam_size, ctc_weight, length_bonus,
                        maxlen_ratio, nbest, sos, eos, blank, pre_beam_ratio, lm, lm_weight, constraint).run()


def _fusion_lm(lm, lm_weight: float):
    """The LM to run: None when ``lm_weight`` is 0; errors for a weight without an LM or below 0
    (the end detection of the joint search needs every weighted term <= 0)."""
    if lm_weight < 0:
        raise ValueError(f"lm_weight must be >= 0, got {lm_weight}")
    if lm_weight > 0 and lm is None:
        raise ValueError(f"lm_weight {lm_weight} needs an lm")
    return lm if lm_weight > 0 else None


class _JointSearch:
    """State of one joint CTC/attention search; ``run()`` returns the N-best lists."""

    def __init__(self, decoder, memory, memory_lens, ctc_log_probs, beam, ctc_weight, length_bonus,
                 maxlen_ratio, nbest, sos, eos, blank, pre_beam_ratio, lm=None, lm_weight=0.0,
                 constraint=None) -> None:
        self.decoder, self.beam, self.ctc_weight = decoder, beam, ctc_weight
        self.constraint = constraint
        self.lm, self.lm_weight = lm, lm_weight
        self.length_bonus, self.nbest = length_bonus, nbest
        self.sos, self.eos, self.blank = sos, eos, blank
        self.vocab = decoder.vocab_size
        self.device = memory.device
        B = memory.size(0)
        self.maxlens = max_output_lengths(memory_lens, maxlen_ratio).cpu()  # python-side stop checks
        self.maxlens_dev = self.maxlens.to(self.device)
        self.not_eos = torch.arange(self.vocab, device=self.device) != eos
        self.memory = memory.repeat_interleave(beam, dim=0)
        mask = torch.arange(memory.size(1), device=self.device)[None, :] < memory_lens[:, None]
        self.memory_mask = mask.repeat_interleave(beam, dim=0)
        self.utt = torch.arange(B, device=self.device).repeat_interleave(beam)  # original utterance of each row
        self.scorer = None
        if ctc_weight > 0:
            self.scorer = CTCPrefixScorer(ctc_log_probs, memory_lens, blank=blank, eos=eos)
            self.pre_beam = min(self.vocab, max(1, int(pre_beam_ratio * beam)))
        self.finished: list[list[Hypothesis]] = [[] for _ in range(B)]

    def _step_scores(self, att: torch.Tensor, ctc_state, lm_logp: torch.Tensor | None):
        """Joint extension scores ``[N, V]`` and what is needed to extend the CTC state."""
        att[:, self.blank] = NEG_INF
        lm_part = None if lm_logp is None else self.lm_weight * lm_logp
        if self.scorer is None:
            return (att if lm_part is None else att + lm_part), None
        pre = att if lm_part is None else (1.0 - self.ctc_weight) * att + lm_part
        top = pre.topk(self.pre_beam, dim=1).indices
        cand = torch.cat([top, torch.full_like(top[:, :1], self.eos)], dim=1)  # <eos> always scored
        psi, r = self.scorer.score(ctc_state, cand)
        delta = psi - ctc_state.log_psi.unsqueeze(1)
        delta = torch.where(torch.isneginf(psi), torch.full_like(psi, NEG_INF), delta)  # no nan from -inf - -inf
        cand_scores = (1.0 - self.ctc_weight) * att.gather(1, cand) + self.ctc_weight * delta
        if lm_part is not None:
            cand_scores = cand_scores + lm_part.gather(1, cand)
        joint = torch.full_like(att, NEG_INF).scatter_(1, cand, cand_scores)
        return joint, (psi, r, cand)

    def run(self) -> list[list[Hypothesis]]:
        W, V = self.beam, self.vocab
        N = self.utt.numel()
        ys = torch.full((N, 1), self.sos, dtype=torch.long, device=self.device)
        scores = torch.full((N,), NEG_INF, device=self.device)
        scores[::W] = 0.0  # one live hypothesis per utterance at the start: no duplicates in the beam
        cache = lm_cache = lm_logp = None
        ctc_state = self.scorer.initial_state(self.utt) if self.scorer is not None else None
        words = [START] * N if self.constraint is not None else None  # lexicon state per row
        for i in range(int(self.maxlens.max())):
            att, cache = self.decoder.score_batch(ys, self.memory, self.memory_mask, cache)
            if words is not None:
                att = att + self.constraint.masks(words, self.device)
            if self.lm is not None:
                lm_logp, lm_cache = self.lm.score_batch(ys, lm_cache)
            joint, ctc_out = self._step_scores(att, ctc_state, lm_logp)
            joint = joint + self.length_bonus
            must_end = (i + 1 >= self.maxlens_dev[self.utt]).unsqueeze(1)  # last allowed step
            joint = joint.masked_fill(must_end & self.not_eos, NEG_INF)

            n_utt = ys.size(0) // W
            total = (scores.unsqueeze(1) + joint).view(n_utt, W * V)
            top_val, top_idx = total.topk(W, dim=1)
            parent = (top_idx // V + torch.arange(n_utt, device=self.device).unsqueeze(1) * W).view(-1)
            token, top_val = (top_idx % V).view(-1), top_val.view(-1)
            is_eos = token == self.eos
            self._collect_finished(ys, parent, top_val, is_eos)
            scores = top_val.masked_fill(is_eos, NEG_INF)  # finished hypotheses leave the beam

            keep = self._keep_rows(scores, i, n_utt)
            if not bool(keep.any()):
                break
            rows = keep.nonzero().squeeze(1)
            sel, token, scores = parent[rows], token[rows], scores[rows]
            dropped = rows.numel() < parent.numel()
            ys = torch.cat([ys[sel], token.unsqueeze(1)], dim=1)
            cache = cache.select(sel, reindex_memory=dropped)
            lm_cache = lm_cache.select(sel) if lm_cache is not None else None
            if ctc_out is not None:
                psi, r, cand = ctc_out
                col = (cand[sel] == token.unsqueeze(1)).int().argmax(dim=1)  # dead rows: any column
                ctc_state = self.scorer.extend(ctc_state, psi, r, cand, sel, col)
            self.utt = self.utt[sel]
            if words is not None:
                words = [self.constraint.advance(words[p], t) if words[p] is not None else None
                         for p, t in zip(sel.tolist(), token.tolist())]
        return self._results()

    def _collect_finished(self, ys, parent, top_val, is_eos) -> None:
        ended = (is_eos & torch.isfinite(top_val)).nonzero().squeeze(1)
        if ended.numel() == 0:
            return
        seqs = ys[parent[ended], 1:].tolist()
        for seq, utt, score in zip(seqs, self.utt[parent[ended]].tolist(), top_val[ended].tolist()):
            self.finished[utt].append((seq, score))

    def _keep_rows(self, scores: torch.Tensor, step: int, n_utt: int) -> torch.Tensor:
        """Bool ``[N]``: rows of utterances that go on after ``step``."""
        best_live = scores.view(n_utt, self.beam).max(dim=1).values.tolist()
        utts = self.utt.view(n_utt, self.beam)[:, 0].tolist()
        go_on = []
        for utt, live in zip(utts, best_live):
            steps_left = int(self.maxlens[utt]) - 1 - step
            done = steps_left <= 0 or live == NEG_INF
            ended = sorted((s for _, s in self.finished[utt]), reverse=True)
            if not done and len(ended) >= self.nbest:
                done = live + max(self.length_bonus, 0.0) * steps_left < ended[self.nbest - 1]
            go_on.append(not done)
        return torch.tensor(go_on, device=self.device).repeat_interleave(self.beam)

    def _results(self) -> list[list[Hypothesis]]:
        out = []
        for utt, hyps in enumerate(self.finished):
            if not hyps:
                logger.warning("utterance %d: no hypothesis reached <eos>; returning an empty one", utt)
                hyps = [([], NEG_INF)]
            out.append(sorted(hyps, key=lambda h: h[1], reverse=True)[: self.nbest])
        return out


@torch.no_grad()
def ctc_prefix_beam_search(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    beam_size: int = 10,
    nbest: int = 1,
    blank: int = 0,
    eos: int | None = None,
    length_bonus: float = 0.0,
    lm=None,
    lm_weight: float = 0.0,
    sos: int | None = None,
    constraint: LexiconConstraint | None = None,
) -> list[list[Hypothesis]]:
    """Frame-synchronous CTC prefix beam search, batched over utterances.

    Each hypothesis is a label prefix with the log probabilities ``pb`` / ``pnb`` of the
    alignments of the frames so far that collapse to it and end in blank / non-blank. At frame
    ``t`` a prefix ``h`` either stays (``pb' = (pb + pnb) x(blank)``, ``pnb' = pnb x(last)``) or
    grows by ``c`` (``pnb' = (pb + pnb) x(c)``, or ``pb x(c)`` when ``c`` repeats the last label).
    When ``h.c`` is also a prefix in the beam, the two are one hypothesis and their
    probabilities are added. The ``beam_size`` best prefixes (by ``log(pb + pnb) + length_bonus
    * len``, plus ``lm_weight log p_lm(h)`` with an LM) survive each frame.

    Args:
        log_probs: ``[B, T, V]`` CTC log-posteriors; lengths: valid frames ``[B]``.
        eos: a token that is never emitted (default ``V - 1``, the ``<sos/eos>`` id).
        lm, lm_weight: external LM (``score_batch``) and its weight; the LM scores a label when a
            prefix grows by it and ``<eos>`` after the last frame. sos: its first input (default ``eos``).
        constraint: a prefix may grow only by tokens the word list allows, and ends (after the
            last frame) only after a complete word.

    Returns:
        Per utterance, up to ``nbest`` ``(token_ids, score)`` sorted best first.
    """
    B, T, V = log_probs.shape
    W, dev = beam_size, log_probs.device
    eos = V - 1 if eos is None else eos
    lm = _fusion_lm(lm, lm_weight)
    fusion = _PrefixLMScores(lm, lm_weight, B, W, eos if sos is None else sos, dev) if lm is not None else None
    log_probs = log_probs.float()
    lengths = lengths.to(dev)
    cap = T + 1
    prefixes = torch.zeros(B, W, cap, dtype=torch.long, device=dev)
    plen = torch.zeros(B, W, dtype=torch.long, device=dev)
    last = torch.full((B, W), -1, dtype=torch.long, device=dev)
    pb = torch.full((B, W), NEG_INF, device=dev)
    pb[:, 0] = 0.0  # the empty prefix; other slots are empty (-inf) until filled
    pnb = torch.full((B, W), NEG_INF, device=dev)
    pos = torch.arange(cap, device=dev)
    not_label = torch.zeros(V, dtype=torch.bool, device=dev)
    not_label[[blank, eos]] = True
    words = [[START] * W for _ in range(B)] if constraint is not None else None  # lexicon state per entry

    for t in range(T):
        x = log_probs[:, t]  # [B, V]
        tot = torch.logaddexp(pb, pnb)
        x_last = torch.where(last >= 0, x.gather(1, last.clamp(min=0)), torch.full_like(tot, NEG_INF))
        stay_pb = tot + x[:, blank].unsqueeze(1)
        stay_pnb = pnb + x_last
        repeat = torch.arange(V, device=dev)[None, None, :] == last.unsqueeze(2)
        ext = torch.where(repeat, pb.unsqueeze(2), tot.unsqueeze(2)) + x.unsqueeze(1)  # [B, W, V]
        ext = ext.masked_fill(not_label, NEG_INF)
        if words is not None:
            ext = ext + constraint.masks([s for row in words for s in row], dev).view(B, W, V)
        stay_pnb, ext = _merge_extensions_into_beam(prefixes, plen, last, tot, stay_pnb, ext, pos)

        stay_tot = torch.logaddexp(stay_pb, stay_pnb)
        rank_stay, rank_ext = stay_tot + length_bonus * plen, ext + length_bonus * (plen + 1).unsqueeze(2)
        if fusion is not None:
            rank_stay, rank_ext = fusion.add_to_ranks(rank_stay, rank_ext)
        rank = torch.cat([rank_stay, rank_ext.view(B, W * V)], dim=1)
        top_val, top_idx = rank.topk(W, dim=1)
        is_stay = top_idx < W
        ext_idx = (top_idx - W).clamp(min=0)
        parent = torch.where(is_stay, top_idx, ext_idx // V)
        token = ext_idx % V
        new_pb = torch.where(is_stay, stay_pb.gather(1, parent), torch.full_like(pb, NEG_INF))
        new_pnb = torch.where(is_stay, stay_pnb.gather(1, parent), ext.view(B, W * V).gather(1, ext_idx))
        new_prefixes = prefixes.gather(1, parent.unsqueeze(2).expand(-1, -1, cap))
        new_plen = plen.gather(1, parent)
        at = new_plen.clamp(max=cap - 1).unsqueeze(2)
        new_prefixes.scatter_(2, at, torch.where(is_stay.unsqueeze(2), new_prefixes.gather(2, at), token.unsqueeze(2)))
        new_last = torch.where(is_stay, last.gather(1, parent), token)
        new_plen = new_plen + (~is_stay).long()

        active = (t < lengths).unsqueeze(1)  # utterances already ended keep their beam
        if fusion is not None:
            fusion.advance(parent, token, is_stay, active & torch.isfinite(top_val), new_prefixes, new_plen)
        pb, pnb = torch.where(active, new_pb, pb), torch.where(active, new_pnb, pnb)
        plen, last = torch.where(active, new_plen, plen), torch.where(active, new_last, last)
        prefixes = torch.where(active.unsqueeze(2), new_prefixes, prefixes)
        if words is not None:
            words = _follow_words(constraint, words, parent, token, is_stay, active.squeeze(1))

    final = torch.logaddexp(pb, pnb) + length_bonus * plen
    if fusion is not None:
        final = final + fusion.end_scores(eos)
    if words is not None:
        final = final.masked_fill(~_ended_words(constraint, words, dev), NEG_INF)
    final, prefixes, plen = final.cpu(), prefixes.cpu(), plen.cpu()
    results = []
    for b in range(B):
        order = final[b].argsort(descending=True).tolist()
        hyps = [(prefixes[b, k, : plen[b, k]].tolist(), float(final[b, k])) for k in order if final[b, k] > NEG_INF]
        results.append(hyps[:nbest] or [([], NEG_INF)])
    return results


def _follow_words(constraint: LexiconConstraint, words: list[list[str | None]], parent: torch.Tensor,
                  token: torch.Tensor, is_stay: torch.Tensor, active: torch.Tensor) -> list[list[str | None]]:
    """Lexicon states after a frame of the CTC prefix search: entry ``w`` takes its parent's
    state, advanced by ``token`` where it grew; utterances no longer ``active`` keep theirs."""
    out = []
    for row, par, tok, stay, act in zip(words, parent.tolist(), token.tolist(), is_stay.tolist(), active.tolist()):
        if not act:
            out.append(row)
            continue
        new = [row[p] if s or row[p] is None else constraint.advance(row[p], t) for p, t, s in zip(par, tok, stay)]
        out.append(new)
    return out


def _ended_words(constraint: LexiconConstraint, words: list[list[str | None]], device) -> torch.Tensor:
    """``[B, W]`` bool: entries whose last word is complete (they may end)."""
    return torch.tensor([[s is not None and constraint.end_allowed(s) for s in row] for row in words],
                        dtype=torch.bool, device=device)


class _PrefixLMScores:
    """The LM side of the CTC prefix beam search: per beam entry, ``total[b, w]`` (``lm_weight``
    times the LM log probability of its labels) and ``next[b, w, V]`` (``lm_weight log p_lm(c |
    prefix)``). A prefix's LM score depends on its labels only, so hypotheses merged by the CTC
    search share it. The LM runs once per new prefix (when a prefix grows), not per frame."""

    def __init__(self, lm, lm_weight: float, B: int, W: int, sos: int, device) -> None:
        self.lm, self.weight, self.sos = lm, lm_weight, sos
        self.total = torch.zeros(B, W, device=device)
        first, _ = lm.score_batch(torch.full((B, 1), sos, dtype=torch.long, device=device))
        self.next = (lm_weight * first).unsqueeze(1).expand(B, W, -1).contiguous()

    def add_to_ranks(self, rank_stay: torch.Tensor, rank_ext: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, W]`` stay and ``[B, W, V]`` extension ranks with the LM scores added."""
        return rank_stay + self.total, rank_ext + (self.total.unsqueeze(2) + self.next)

    def advance(self, parent, token, is_stay, changed, prefixes, plen) -> None:
        """Follow the beam's selection: entry ``w`` now comes from ``parent[b, w]``, grown by
        ``token`` where not ``is_stay``. Only ``changed`` entries (live, in a running utterance)
        are updated; grown prefixes (``prefixes``/``plen`` after the frame) get new LM scores."""
        total = self.total.gather(1, parent)
        nxt = self.next.gather(1, parent.unsqueeze(2).expand_as(self.next))
        grown = changed & ~is_stay
        total = torch.where(grown, total + nxt.gather(2, token.unsqueeze(2)).squeeze(2), total)
        rows = grown.nonzero()
        if rows.numel():
            b, w = rows[:, 0], rows[:, 1]
            lens = plen[b, w]
            ys = torch.full((rows.size(0), int(lens.max()) + 1), self.sos, dtype=torch.long, device=prefixes.device)
            ys[:, 1:] = prefixes[b, w, : ys.size(1) - 1]  # past a row's length: padding, unread
            logp, _ = self.lm.score_batch(ys, lengths=lens + 1)
            nxt = nxt.index_put((b, w), self.weight * logp)
        self.total = torch.where(changed, total, self.total)
        self.next = torch.where(changed.unsqueeze(2), nxt, self.next)

    def end_scores(self, eos: int) -> torch.Tensor:
        """``[B, W]``: each entry's LM score with ``<eos>`` after its last label."""
        return self.total + self.next[..., eos]


def _merge_extensions_into_beam(prefixes, plen, last, tot, stay_pnb, ext, pos):
    """Add extension ``h_i.c`` into the beam entry ``h_k`` equal to it, and drop the extension.

    ``match[b, k, i]``: ``h_k`` is live and equals ``h_i`` plus one label (then ``c = last(h_k)``).
    Live prefixes are distinct, so each extension matches at most one live entry.
    """
    B, W, _ = ext.shape
    same_start = (prefixes.unsqueeze(2) == prefixes.unsqueeze(1)) | (pos >= plen.unsqueeze(1).unsqueeze(3))
    match = (plen.unsqueeze(2) == plen.unsqueeze(1) + 1) & same_start.all(dim=3) & torch.isfinite(tot).unsqueeze(2)
    lk = last.clamp(min=0).unsqueeze(1).expand(B, W, W)  # [b, i, k] -> last(h_k)
    from_i = ext.gather(2, lk).transpose(1, 2)  # [b, k, i] = ext[b, i, last(h_k)]
    contrib = torch.where(match, from_i, torch.full_like(from_i, NEG_INF)).logsumexp(dim=2)
    stay_pnb = torch.logaddexp(stay_pnb, contrib)
    merged = torch.zeros_like(ext).scatter_add_(2, lk, match.transpose(1, 2).to(ext.dtype))
    return stay_pnb, ext.masked_fill(merged > 0, NEG_INF)

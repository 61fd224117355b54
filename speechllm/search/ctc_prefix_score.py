"""CTC prefix scores (log domain), batched over hypotheses of many utterances.

For a label prefix ``h`` and frame posteriors ``x_t(k)`` of an utterance with ``T`` frames, let
``r^n_t(h)`` / ``r^b_t(h)`` be the probability of all alignments of ``x_1..x_t`` that collapse to
``h`` and end in a non-blank / blank. The prefix probability of ``g = h.c`` (probability that the
label sequence starts with ``g``) is (Watanabe et al. 2017; Graves 2012):

    phi_t     = r^b_t(h) + (0 if c == last(h) else r^n_t(h))    # may c start a new label after t?
    r^n_1(g)  = x_1(c) if h is empty else 0
    r^n_t(g)  = (r^n_{t-1}(g) + phi_{t-1}) x_t(c)
    r^b_t(g)  = (r^b_{t-1}(g) + r^n_{t-1}(g)) x_t(blank)
    psi(g)    = r^n_1(g) + sum_{t=2..T} phi_{t-1} x_t(c)

and for ``c = <eos>`` the probability of exactly ``h``: ``psi = r^n_T(h) + r^b_T(h)``. Everything
here is the same in log space (sums become logaddexp). Beam search uses the difference
``log psi(h.c) - log psi(h)`` as the CTC score of appending ``c``.

Shapes: ``N`` hypotheses, each pointing to one of ``B`` utterances (``utt[n]``), ``T`` frames
(the longest utterance), ``K`` candidate tokens per hypothesis. Frames at ``t >= lengths[utt]``
never contribute. The loop over frames is the only Python loop; it starts at the prefix length,
since a prefix of ``L`` labels cannot be complete before frame ``L``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


@dataclass
class CTCPrefixState:
    """Forward variables of ``N`` prefixes.

    r: ``[T, 2, N]`` log ``r^n_t`` (index 0) and ``r^b_t`` (index 1) of each prefix.
    log_psi: ``[N]`` log prefix probability of each prefix (0 for the empty prefix).
    last: ``[N]`` last label of each prefix, -1 for the empty prefix.
    utt: ``[N]`` utterance index (row of the scorer's log-probs) of each prefix.
    prefix_len: ``[N]`` number of labels in each prefix.
    """

    r: torch.Tensor
    log_psi: torch.Tensor
    last: torch.Tensor
    utt: torch.Tensor
    prefix_len: torch.Tensor

    def select(self, index: torch.Tensor) -> "CTCPrefixState":
        """States of prefixes ``index`` (for reordering / dropping hypotheses)."""
        return CTCPrefixState(self.r[:, :, index], self.log_psi[index], self.last[index],
                              self.utt[index], self.prefix_len[index])


class CTCPrefixScorer:
    """Prefix scores of candidate extensions for many hypotheses at once.

    Args:
        log_probs: CTC log-posteriors ``[B, T, V]`` (padded frames are ignored).
        lengths: valid frames per utterance ``[B]``.
        blank: blank id (never a candidate label: its score is -inf).
        eos: end-of-sentence id; its score is the probability of the whole prefix.
    """

    def __init__(self, log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = 0, eos: int | None = None) -> None:
        self.x = log_probs.transpose(0, 1).float()  # [T, B, V]: frame-major for the time loop
        self.lengths = lengths.to(log_probs.device)
        self.blank = blank
        self.eos = log_probs.size(-1) - 1 if eos is None else eos
        self.frames = torch.arange(self.x.size(0), device=log_probs.device)

    def initial_state(self, utt: torch.Tensor) -> CTCPrefixState:
        """State of the empty prefix for hypotheses of utterances ``utt[N]``."""
        xb = self.x[:, utt, self.blank]  # [T, N]
        r = torch.full((self.x.size(0), 2, utt.numel()), NEG_INF, device=self.x.device)
        r[:, 1] = torch.cumsum(xb, dim=0)  # only blanks so far
        zeros = torch.zeros(utt.numel(), device=self.x.device)
        minus_one = torch.full_like(utt, -1)
        return CTCPrefixState(r, zeros, minus_one, utt, torch.zeros_like(utt))

    def score(self, state: CTCPrefixState, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log prefix probabilities of ``h.c`` for each hypothesis ``h`` and candidate ``c = cand[n, k]``.

        Returns ``(log_psi[N, K], r[T, 2, N, K])``; pass ``r`` to :meth:`extend` for the chosen
        candidates. For ``c == eos`` the score is the log probability of exactly ``h``.
        """
        T, N, K = self.x.size(0), cand.size(0), cand.size(1)
        utt = state.utt
        xc = self.x[:, utt.unsqueeze(1), cand]  # [T, N, K]
        xb = self.x[:, utt, self.blank].unsqueeze(2)  # [T, N, 1]
        r_prev = state.r
        # phi[t, n, k]: prefix h complete at t and c may follow as a new label.
        r_sum = torch.logaddexp(r_prev[:, 0], r_prev[:, 1])  # [T, N]
        same = (cand == state.last.unsqueeze(1)).unsqueeze(0)  # repeated label needs a blank between
        phi = torch.where(same, r_prev[:, 1].unsqueeze(2), r_sum.unsqueeze(2))  # [T, N, K]

        r = torch.full((T, 2, N, K), NEG_INF, device=self.x.device)
        empty = (state.prefix_len == 0).unsqueeze(1)
        r[0, 0] = torch.where(empty, xc[0], torch.full_like(xc[0], NEG_INF))
        start = max(int(state.prefix_len.min()), 1)
        for t in range(start, T):
            r[t, 0] = torch.logaddexp(r[t - 1, 0], phi[t - 1]) + xc[t]
            r[t, 1] = torch.logaddexp(r[t - 1, 0], r[t - 1, 1]) + xb[t]

        # psi = r^n_1 + sum_{t >= 2} phi_{t-1} x_t(c), only over each utterance's valid frames.
        valid = (self.frames[1:, None] < self.lengths[utt][None, :]).unsqueeze(2)  # [T-1, N, 1]
        terms = torch.where(valid, phi[:-1] + xc[1:], torch.full_like(xc[1:], NEG_INF))
        log_psi = torch.logsumexp(torch.cat([r[0, 0].unsqueeze(0), terms], dim=0), dim=0)  # [N, K]

        last_frame = (self.lengths[utt] - 1).clamp(min=0)
        full = r_sum.gather(0, last_frame.unsqueeze(0)).squeeze(0)  # [N]: P(exactly h)
        log_psi = torch.where(cand == self.eos, full.unsqueeze(1), log_psi)
        log_psi = log_psi.masked_fill(cand == self.blank, NEG_INF)
        return log_psi, r

    def extend(self, state: CTCPrefixState, log_psi: torch.Tensor, r: torch.Tensor, cand: torch.Tensor,
               rows: torch.Tensor, cols: torch.Tensor) -> CTCPrefixState:
        """State of the prefixes ``h_rows[i] . cand[rows[i], cols[i]]`` chosen from a :meth:`score` call."""
        return CTCPrefixState(
            r[:, :, rows, cols], log_psi[rows, cols], cand[rows, cols], state.utt[rows], state.prefix_len[rows] + 1
        )

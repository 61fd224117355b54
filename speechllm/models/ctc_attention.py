"""Joint CTC/attention encoder-decoder ASR model (Watanabe et al. 2017, "Hybrid CTC/attention").

``loss = ctc_weight * loss_ctc + (1 - ctc_weight) * loss_att``. ``ctc_weight=1`` trains a pure CTC
model (no decoder needed), ``ctc_weight=0`` a pure attention model (no CTC head is built).

Intermediate CTC (Lee & Watanabe 2021): with ``interctc_weight > 0`` the encoder also returns the
outputs of some inner blocks (``encoder_conf.interctc_layer_idx``); the same CTC head scores them and
``loss_ctc = (1 - interctc_weight) * ctc(final) + interctc_weight * mean(ctc(inner))``. The extra
gradient reaches the lower blocks directly, which shortens the early plateau of training from scratch.

Token ids: 0 = ``<blank>``, 1 = ``<unk>``, ``vocab_size - 1`` = ``<sos/eos>`` (the same id starts
and ends every decoder sequence).
"""
from __future__ import annotations

import torch
from torch import nn

from speechllm.nets.ctc import CTC
from speechllm.nets.label_smoothing import IGNORE_ID, LabelSmoothingLoss


def add_sos_eos(
    ys: torch.Tensor, ys_lens: torch.Tensor, sos: int, eos: int, ignore_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder input ``[sos, y1..yn]`` (padded with eos) and target ``[y1..yn, eos]`` (padded with ignore_id)."""
    b = ys.size(0)
    ys_in = torch.cat([ys.new_full((b, 1), sos), ys.masked_fill(ys == ignore_id, eos)], dim=1)
    ys_out = torch.cat([ys, ys.new_full((b, 1), ignore_id)], dim=1)
    ys_out[torch.arange(b, device=ys.device), ys_lens] = eos  # eos right after the last token
    return ys_in, ys_out


def token_accuracy(logits: torch.Tensor, target: torch.Tensor, ignore_id: int) -> float:
    """Fraction of non-ignored positions where the argmax equals the target."""
    valid = target != ignore_id
    correct = (logits.argmax(dim=-1) == target) & valid
    return float(correct.sum()) / max(int(valid.sum()), 1)


class CTCAttentionModel(nn.Module):
    """Encoder + CTC head + attention decoder, trained with the joint loss.

    Args:
        vocab_size: V, including ``<blank>`` (0) and ``<sos/eos>`` (V-1).
        encoder: ``forward(x, lengths) -> (out, out_lengths)`` with ``output_size()``.
        decoder: an attention decoder (``speechllm.nets.decoders``); may be None if ``ctc_weight == 1``.
        ctc_weight: weight of the CTC loss in [0, 1].
        lsm_weight: label smoothing of the decoder loss.
        normalize: feature normalization applied as ``normalize(feats, lengths)`` (e.g. GlobalCMVN).
        specaug: augmentation applied as ``specaug(feats, lengths)``, in training mode only.
        ignore_id: padding value of ``batch["ys"]``.
        sos_eos: id of ``<sos/eos>``; default ``vocab_size - 1``.
        length_normalized_loss: divide the decoder loss by the token count instead of the batch size.
        interctc_weight: weight of the intermediate CTC losses inside ``loss_ctc`` (0 = off); needs an
            encoder with ``interctc_layer_idx`` and a CTC head.
    """

    def __init__(
        self,
        vocab_size: int,
        encoder: nn.Module,
        decoder: nn.Module | None,
        ctc_weight: float = 0.3,
        lsm_weight: float = 0.1,
        normalize: nn.Module | None = None,
        specaug: nn.Module | None = None,
        ignore_id: int = IGNORE_ID,
        sos_eos: int | None = None,
        length_normalized_loss: bool = False,
        interctc_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
        if not 0.0 <= interctc_weight < 1.0:
            raise ValueError(f"interctc_weight must be in [0, 1), got {interctc_weight}")
        if interctc_weight > 0.0 and (ctc_weight == 0.0 or not getattr(encoder, "interctc_layer_idx", None)):
            raise ValueError("interctc_weight > 0 needs ctc_weight > 0 and an encoder with interctc_layer_idx "
                             "(encoder_conf.interctc_layer_idx: [3], for example)")
        if decoder is None and ctc_weight < 1.0:
            raise ValueError(f"ctc_weight={ctc_weight} needs a decoder; only ctc_weight=1.0 works without one")
        self.vocab_size = vocab_size
        self.sos = self.eos = vocab_size - 1 if sos_eos is None else sos_eos
        self.blank = 0
        self.ignore_id = ignore_id
        self.ctc_weight = ctc_weight
        self.interctc_weight = interctc_weight
        self.normalize = normalize
        self.specaug = specaug
        self.encoder = encoder
        # Only the parts the loss uses get parameters: no unused weights under DDP.
        self.decoder = decoder if ctc_weight < 1.0 else None
        self.ctc = CTC(vocab_size, encoder.output_size()) if ctc_weight > 0.0 else None
        self.criterion_att = LabelSmoothingLoss(vocab_size, lsm_weight, ignore_id, length_normalized_loss)

    def encode(self, feats: torch.Tensor, feats_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """normalize -> specaug (training only) -> encoder; returns ``(enc[B, T', D], enc_lens[B])``."""
        enc, enc_lens, _ = self._encode(feats, feats_lens, return_intermediate=False)
        return enc, enc_lens

    def _encode(
        self, feats: torch.Tensor, feats_lens: torch.Tensor, return_intermediate: bool
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        if self.normalize is not None:
            feats = self.normalize(feats, feats_lens)
        if self.specaug is not None and self.training:
            feats = self.specaug(feats, feats_lens)
        if return_intermediate:
            return self.encoder(feats, feats_lens, return_intermediate=True)
        enc, enc_lens = self.encoder(feats, feats_lens)
        return enc, enc_lens, []

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Joint loss of a ``collate_asr`` batch.

        Returns ``(loss, stats)``; ``stats`` holds python floats ``loss`` and, for the parts that
        are trained, ``loss_ctc`` and ``loss_att``/``acc`` (decoder token accuracy).
        """
        ys, ys_lens = batch["ys"], batch["ys_lens"]
        use_inter = self.interctc_weight > 0.0
        enc, enc_lens, inner = self._encode(batch["feats"], batch["feats_lens"], return_intermediate=use_inter)
        stats: dict[str, float] = {}
        loss = enc.new_zeros(())
        if self.ctc is not None:
            loss_ctc = self.ctc(enc, enc_lens, ys, ys_lens)
            if use_inter:
                loss_inter = torch.stack([self.ctc(h, enc_lens, ys, ys_lens) for h in inner]).mean()
                stats["loss_interctc"] = float(loss_inter.detach())
                loss_ctc = (1.0 - self.interctc_weight) * loss_ctc + self.interctc_weight * loss_inter
            loss = loss + self.ctc_weight * loss_ctc
            stats["loss_ctc"] = float(loss_ctc.detach())
        if self.decoder is not None:
            ys_in, ys_out = add_sos_eos(ys, ys_lens, self.sos, self.eos, self.ignore_id)
            logits = self.decoder(enc, enc_lens, ys_in, ys_lens + 1)
            loss_att = self.criterion_att(logits, ys_out)
            loss = loss + (1.0 - self.ctc_weight) * loss_att
            stats["loss_att"] = float(loss_att.detach())
            stats["acc"] = token_accuracy(logits.detach(), ys_out, self.ignore_id)
        stats["loss"] = float(loss.detach())
        return loss, stats

"""The speech LLM: speech encoder -> projector -> decoder-only causal LM (optionally with LoRA).

Audio is encoded once per utterance, cut into spans, projected to the LLM's hidden size and put
into the LLM's input embeddings where the prompt's ``<|audio|>`` placeholders were
(:mod:`speechllm.llm.prompting`). Only the response tokens are trained.

Batch (built by the speech-LLM collate function)::

    {
      "utt_ids":      list[str],                  # N utterance ids
      "feats":        FloatTensor [N, T, D]       # fbank features (or raw waveforms [N, S]), zero padded
      "feats_lens":   LongTensor [N],
      "prompts":      list[PromptPieces],         # B sequences (B may differ from N)
      "audio_spans":  list[list[(n, start, end)]],# per sequence, per audio slot: utterance index n and
                                                  # the span [start, end) in ENCODER-OUTPUT frames;
                                                  # end = -1: to the end of utterance n
      "response_ids": list[LongTensor],           # per sequence target ids incl. the end-of-turn tokens
                                                  # (prompting.response_ids); absent or [] at inference
      "transcript_ids": list[LongTensor],         # optional, per utterance: its transcript in the LLM's
                                                  # tokens (training collates), for a projector's CTC loss
    }

Sequence ``b`` is ``text_0, audio_0, text_1, ..., audio_{K-1}, text_K, response`` with
``K = prompts[b].n_audio == len(audio_spans[b])``. Training right-pads the sequences; labels are
-100 on prompt, audio and padding; ``loss`` is the mean cross-entropy over response tokens, and
``stats = {"loss", "acc"}`` (``acc``: response-token accuracy under teacher forcing).
:meth:`SpeechLLM.generate` left-pads the same prompts (without responses) and decodes with
``llm.generate``, stopping at eos or the chat template's end-of-turn token.

The model is built from YAML by :func:`speechllm.tasks.sllm.build_model` (encoder, projector,
``llm``/``llm_config``, ``lora``, ``freeze``/``unfreeze``); :meth:`SpeechLLM.from_exported` rebuilds
a directory written by :func:`speechllm.llm.adapters.merge_and_export` through the same path.
``downsample_check`` refuses an encoder + projector giving more than 50 audio embeddings per
second (LLM sequences would grow needlessly long).
"""
from __future__ import annotations

import contextlib
import inspect
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speechllm.llm.prompting import PromptPieces, stop_token_ids
from speechllm.train.checkpoint import check_trainable_state, trainable_state_keys
from speechllm.utils.config import ConfigError

logger = logging.getLogger(__name__)

IGNORE_ID = -100  # label of positions that are not trained (transformers' convention)
MAX_AUDIO_TOKENS_PER_S = 50.0  # downsample_check: more makes LLM sequences needlessly long


def kl_divergence(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean over tokens of ``KL(softmax(teacher / T) || softmax(student / T)) * T^2`` (Hinton et
    al. 2015: the T^2 keeps gradient sizes comparable across temperatures); inputs ``[N, V]``."""
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} != model logits {tuple(student_logits.shape)}")
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = F.kl_div(s, t, log_target=True, reduction="sum") / max(teacher_logits.size(0), 1)
    return kl * temperature ** 2


def _keep_frozen_in_eval(module: nn.Module) -> None:
    """Put every submodule whose parameters are all frozen into eval mode (no dropout, BatchNorm
    running statistics kept); parameter-free modules inside trained ones keep training mode, and
    so does input augmentation (modules with ``augments_input = True``, e.g. SpecAugment in front
    of a frozen encoder): it acts on the data, not on the frozen weights."""
    for child in module.children():
        params = list(child.parameters())
        if params and not any(p.requires_grad for p in params):
            child.eval()
            for m in child.modules():
                if getattr(m, "augments_input", False):
                    m.train()
        else:
            _keep_frozen_in_eval(child)


class SpeechLLM(nn.Module):
    """Speech encoder + projector + causal LM; ``loss, stats = model(batch)`` (see the module doc).

    Args:
        encoder: ``forward(x, lengths) -> (out[N, T', D], out_lengths)`` (speechllm.nets.encoders;
            feature normalization, if any, inside it).
        projector: ``forward(x, lengths) -> (y[M, T'', H], out_lengths)`` with ``H`` the LLM's hidden
            size (speechllm.nets.projectors). One with a CTC loss (``ctc_loss_weight > 0``) also has
            ``frame_logits(x)``, ``ctc_loss(x, lengths, targets, frame_logits=)`` and takes
            ``frame_logits=`` in ``forward``.
        llm: a transformers causal LM, or a PEFT model wrapping one.
        tokenizer: its tokenizer (a chat template and an eos token); not a module, not saved.
        downsample_check: refuse an encoder + projector giving more than
            :data:`MAX_AUDIO_TOKENS_PER_S` audio embeddings per second (when the encoder reports
            ``frame_rate()``).
        config: the build config (YAML keys of :mod:`speechllm.tasks.sllm`), which
            :func:`~speechllm.llm.adapters.merge_and_export` writes next to the weights.
        kl_weight, kl_temperature: token-level behavior imitation (MTBI): with batches holding
            ``teacher_prompt_ids`` the loss adds ``kl_weight * T^2 * KL(teacher || model)`` over the
            response tokens at temperature ``T``; the teacher is the LLM itself with LoRA disabled
            reading the prompt with the transcript as text (:meth:`teacher_logits`).
    """

    # The Trainer saves only trainable weights (frozen parts come back from their own sources).
    checkpoint_trainable_only = True

    def __init__(self, encoder: nn.Module, projector: nn.Module, llm: nn.Module, tokenizer: Any,
                 downsample_check: bool = True, config: dict | None = None, kl_weight: float = 0.0,
                 kl_temperature: float = 1.0) -> None:
        super().__init__()
        self.kl_weight, self.kl_temperature = float(kl_weight), float(kl_temperature)
        self.encoder = encoder
        self.projector = projector
        self.llm = llm
        self.tokenizer = tokenizer
        self.config = dict(config or {})
        hidden = llm.get_input_embeddings().embedding_dim
        enc_size = encoder.output_size()
        if getattr(projector, "input_size", enc_size) != enc_size:
            raise ConfigError(f"projector input size {projector.input_size} != encoder output size {enc_size}")
        if getattr(projector, "output_size", hidden) != hidden:
            raise ConfigError(f"projector output size {projector.output_size} != LLM hidden size {hidden}")
        if hasattr(encoder, "frame_rate"):
            rate = encoder.frame_rate() / float(getattr(projector, "downsample", 1))
            logger.info("audio: %.3g LLM embeddings per second (encoder %.3g frames/s, projector downsample %s)",
                        rate, encoder.frame_rate(), getattr(projector, "downsample", 1))
            if downsample_check and rate > MAX_AUDIO_TOKENS_PER_S:
                raise ConfigError(f"encoder ({encoder.frame_rate():g} frames/s) + projector (downsample "
                                  f"{getattr(projector, 'downsample', 1)}) give {rate:g} audio embeddings per second, "
                                  f"more than {MAX_AUDIO_TOKENS_PER_S:g}: raise projector_conf.downsample "
                                  f"(or set downsample_check: false)")
        self.stop_ids = stop_token_ids(tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else tokenizer.eos_token_id)
        # transformers LMs can compute the head on the last K positions only: with a 150k-token
        # vocabulary the logits of the prompt and audio would dominate memory for nothing.
        base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
        self._logits_to_keep = "logits_to_keep" in inspect.signature(base.forward).parameters

    # -- modes and checkpoints ----------------------------------------------------------------

    def train(self, mode: bool = True) -> "SpeechLLM":
        """Like ``nn.Module.train``, but fully frozen submodules stay in eval mode."""
        super().train(mode)
        if mode:
            _keep_frozen_in_eval(self)
        return self

    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        """Trainable parameters and the buffers of modules that own them (frozen parts left out)."""
        keys = trainable_state_keys(self)
        return {k: v for k, v in self.state_dict().items() if k in keys}

    def load_checkpoint_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load a :meth:`checkpoint_state_dict`: unknown names and missing trainable names raise
        ValueError; frozen names may be missing (they keep their current values)."""
        check_trainable_state(self, state, "checkpoint")
        self.load_state_dict(state, strict=False)

    # -- audio -> embeddings --------------------------------------------------------------------

    @property
    def llm_dtype(self) -> torch.dtype:
        return self.llm.get_input_embeddings().weight.dtype

    def audio_embeddings(self, batch: dict, encoded: tuple[torch.Tensor, torch.Tensor] | None = None,
                         frame_logits: torch.Tensor | None = None) -> list[list[torch.Tensor]]:
        """Projected audio ``[n_i, H]`` per sequence and audio slot (the spans of ``audio_spans``);
        ``encoded``: the encoder's ``(out, out_lengths)`` of the batch, when already computed;
        ``frame_logits``: the projector's ``frame_logits`` of ``encoded`` (a projector with a CTC
        head: its spans are cut from them instead of computed again)."""
        spans_per_seq = batch["audio_spans"]
        prompts: list[PromptPieces] = batch["prompts"]
        if len(spans_per_seq) != len(prompts):
            raise ValueError(f"batch: {len(prompts)} prompts but {len(spans_per_seq)} audio_spans lists")
        for b, (spans, prompt) in enumerate(zip(spans_per_seq, prompts)):
            if len(spans) != prompt.n_audio:
                raise ValueError(f"batch sequence {b}: the prompt has {prompt.n_audio} audio slot(s) but "
                                 f"{len(spans)} audio span(s) were given")
        if not any(spans_per_seq):
            return [[] for _ in spans_per_seq]
        enc, enc_lens = encoded if encoded is not None else self.encoder(batch["feats"], batch["feats_lens"])
        lens = enc_lens.tolist()
        pieces, cuts, utt_ids = [], [], batch.get("utt_ids") or [str(i) for i in range(enc.size(0))]
        for b, spans in enumerate(spans_per_seq):
            for n, start, end in spans:
                end = lens[n] if end == -1 else end
                if not 0 <= start < end <= lens[n]:
                    raise ValueError(f"batch sequence {b}: audio span ({n}, {start}, {end}) is outside utterance "
                                     f"{utt_ids[n]} ({lens[n]} encoder frames)")
                pieces.append(enc[n, start:end])
                cuts.append((n, start))
        x = nn.utils.rnn.pad_sequence(pieces, batch_first=True)
        x_lens = torch.tensor([len(p) for p in pieces], device=enc.device)
        if frame_logits is None:
            proj, proj_lens = self.projector(x, x_lens)
        else:
            # The spans' logits in one gather: the backward of a slice per span would allocate the
            # whole batch's [N, T', V] gradient once per span. Frames past a span's end repeat
            # other frames; the projector masks them by x_lens.
            n_idx, start = torch.tensor(cuts, device=enc.device).unbind(1)
            t_idx = (start[:, None] + torch.arange(x.size(1), device=enc.device)).clamp(max=enc.size(1) - 1)
            proj, proj_lens = self.projector(x, x_lens, frame_logits=frame_logits[n_idx[:, None], t_idx])
        proj = proj.to(self.llm_dtype)
        flat = [proj[m, :n] for m, n in enumerate(proj_lens.tolist())]
        out, i = [], 0
        for spans in spans_per_seq:
            out.append(flat[i:i + len(spans)])
            i += len(spans)
        return out

    def _sequences(self, batch: dict, responses: list[torch.Tensor],
                   encoded: tuple[torch.Tensor, torch.Tensor] | None = None,
                   frame_logits: torch.Tensor | None = None) -> tuple[list[torch.Tensor], list[int]]:
        """Input embeddings ``[L_b, H]`` per sequence (prompt, audio, response) and prompt lengths."""
        prompts: list[PromptPieces] = batch["prompts"]
        audio = self.audio_embeddings(batch, encoded, frame_logits)
        embed = self.llm.get_input_embeddings()
        device = embed.weight.device
        # One embedding call for every text piece of the batch.
        texts = [t for p in prompts for t in p.text_ids] + list(responses)
        text_emb = list(embed(torch.cat(texts).to(device=device, dtype=torch.long)).split([len(t) for t in texts]))
        resp_emb = text_emb[len(text_emb) - len(responses):] if responses else []
        seqs, prompt_lens, k = [], [], 0
        for b, prompt in enumerate(prompts):
            parts = []
            for i in range(prompt.n_audio + 1):
                parts.append(text_emb[k])
                k += 1
                if i < prompt.n_audio:
                    parts.append(audio[b][i])
            prompt_lens.append(sum(len(p) for p in parts))
            if responses:
                parts.append(resp_emb[b])
            seqs.append(torch.cat(parts))
        return seqs, prompt_lens

    def _pad(self, seqs: list[torch.Tensor], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embeds[B, L, H], attention_mask[B, L])``, padded on the right (training) or left (generation)."""
        length = max(len(s) for s in seqs)
        embeds = seqs[0].new_zeros(len(seqs), length, seqs[0].size(-1))
        mask = torch.zeros(len(seqs), length, dtype=torch.long, device=embeds.device)
        for b, s in enumerate(seqs):
            sl = slice(length - len(s), length) if left else slice(0, len(s))
            embeds[b, sl] = s
            mask[b, sl] = 1
        return embeds, mask

    # -- training -------------------------------------------------------------------------------

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean cross-entropy over the response tokens (+ the imitation KL term, see the class
        doc, + ``ctc_weight`` x the projector's CTC loss when it has one and the batch holds
        ``transcript_ids``); ``stats = {"loss", "acc"}`` (+ ``loss_ce``, ``loss_kl``, ``loss_ctc``
        with the extra terms)."""
        responses = batch.get("response_ids") or []
        if len(responses) != len(batch["prompts"]):
            raise ValueError(f"batch: {len(batch['prompts'])} prompts but {len(responses)} response_ids; "
                             f"training needs a target per sequence")
        # A projector with a CTC loss of its own (ctc_text) scores the whole utterances against the
        # batch's transcripts in the LLM's tokenization. Its head runs once over every frame: the
        # audio spans are cut from the same logits (the head is frame-wise), not computed again.
        ctc_weight = float(getattr(self.projector, "ctc_loss_weight", 0.0))
        encoded = frame_logits = None
        if ctc_weight > 0 and batch.get("transcript_ids") is not None:
            encoded = self.encoder(batch["feats"], batch["feats_lens"])
            frame_logits = self.projector.frame_logits(encoded[0])
        seqs, prompt_lens = self._sequences(batch, responses, encoded, frame_logits)
        if min(prompt_lens) == 0:
            raise ValueError("batch: a sequence has an empty prompt; its first response token cannot be predicted")
        embeds, mask = self._pad(seqs, left=False)
        labels = torch.full(mask.shape, IGNORE_ID, dtype=torch.long, device=mask.device)
        for b, (r, p) in enumerate(zip(responses, prompt_lens)):
            labels[b, p:p + len(r)] = r.to(labels.device)

        # Logits at positions first-1 .. L-1 predict labels first .. L-1 (first = earliest response start).
        length, first = labels.size(1), min(prompt_lens)
        keep = length - first + 1
        kwargs = {"logits_to_keep": keep} if self._logits_to_keep else {}
        logits = self.llm(inputs_embeds=embeds, attention_mask=mask, use_cache=False, **kwargs).logits
        logits = logits[:, logits.size(1) - keep:-1]
        targets = labels[:, first:]
        valid = targets != IGNORE_ID
        n_tokens = valid.sum().clamp(min=1)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                               ignore_index=IGNORE_ID, reduction="sum") / n_tokens
        with torch.no_grad():
            acc = ((logits.argmax(-1) == targets) & valid).sum() / n_tokens
        stats = {"acc": float(acc)}
        if self.kl_weight > 0 and batch.get("teacher_prompt_ids") is not None:
            teacher = self.teacher_logits(batch["teacher_prompt_ids"], responses)
            kl = kl_divergence(teacher, logits[valid], self.kl_temperature)
            stats.update(loss_ce=float(loss.detach()), loss_kl=float(kl.detach()))
            loss = loss + self.kl_weight * kl
        if encoded is not None:
            ctc = self.projector.ctc_loss(encoded[0], encoded[1], batch["transcript_ids"], frame_logits=frame_logits)
            stats.setdefault("loss_ce", float(loss.detach()))
            stats["loss_ctc"] = float(ctc.detach())
            loss = loss + ctc_weight * ctc
        return loss, {"loss": float(loss.detach()), **stats}

    def _frozen_llm(self) -> Any:
        """A context in which ``self.llm`` is the frozen LLM: LoRA disabled, or the LLM itself when
        none of its weights train; otherwise there is no frozen LLM to imitate (ConfigError)."""
        if hasattr(self.llm, "disable_adapter"):
            return self.llm.disable_adapter()
        if any(p.requires_grad for p in self.llm.parameters()):
            raise ConfigError("token-level imitation (kl_weight > 0) needs a frozen LLM: train it with LoRA "
                              "or freeze it")
        return contextlib.nullcontext()

    @torch.no_grad()
    def teacher_logits(self, prompt_ids: list[torch.Tensor], responses: list[torch.Tensor]) -> torch.Tensor:
        """Logits ``[n_tokens, V]`` of the frozen LLM (eval mode) for the response tokens of every
        sequence, in order, given text prompts ``prompt_ids`` (one per sequence)."""
        embed = self.llm.get_input_embeddings()
        device = embed.weight.device
        seqs = [torch.cat([p, r]).to(device=device, dtype=torch.long) for p, r in zip(prompt_ids, responses)]
        embeds, mask = self._pad([embed(s) for s in seqs], left=False)
        was_training = self.llm.training
        self.llm.eval()
        try:
            with self._frozen_llm():
                logits = self.llm(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
        finally:
            self.llm.train(was_training)
        # Position t predicts token t + 1: the response's tokens come from positions p-1 .. p+r-2.
        return torch.cat([logits[b, len(p) - 1:len(p) + len(r) - 1] for b, (p, r) in enumerate(zip(prompt_ids, responses))])

    # -- inference ------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, batch: dict, max_new_tokens: int | list[int], num_beams: int = 1, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, repetition_penalty: float = 1.0,
                 no_repeat_ngram_size: int = 0) -> list[list[int]]:
        """Decode a response per sequence of ``batch`` (``response_ids`` ignored); returns token ids
        without the stop tokens. ``max_new_tokens``: one bound, or one per sequence (the batch runs
        to the largest, each answer is cut at its own). Call ``eval()`` first for deterministic
        results; greedy search of a batch equals that of each sequence alone. The prompt is given
        as embeddings, so ``repetition_penalty`` and ``no_repeat_ngram_size`` see the generated
        tokens only (transformers warns about it)."""
        b = len(batch["prompts"])
        limits = [int(max_new_tokens)] * b if isinstance(max_new_tokens, int) else [int(n) for n in max_new_tokens]
        if len(limits) != b:
            raise ValueError(f"max_new_tokens: {len(limits)} bounds for {b} sequences")
        if b == 0:
            return []
        seqs, _ = self._sequences(batch, [])
        embeds, mask = self._pad(seqs, left=True)
        from transformers import GenerationConfig

        # Every option set explicitly: transformers fills unset (None) ones from the checkpoint's
        # generation_config.json, e.g. an instruct model's top_k=20 sampling defaults. top_k=0 is
        # "off" when sampling (only temperature and top_p apply); 50 is the neutral default otherwise.
        gen = GenerationConfig(max_new_tokens=max(max(limits), 1), num_beams=num_beams, do_sample=do_sample,
                               temperature=temperature if do_sample else 1.0, top_p=top_p if do_sample else 1.0,
                               top_k=0 if do_sample else 50, repetition_penalty=repetition_penalty,
                               no_repeat_ngram_size=no_repeat_ngram_size, eos_token_id=self.stop_ids,
                               pad_token_id=self.pad_id, bos_token_id=self.tokenizer.bos_token_id)
        out = self.llm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=gen)
        stops = set(self.stop_ids)
        results = []
        for row, limit in zip(out.tolist(), limits):
            row = row[:limit]
            cut = next((i for i, t in enumerate(row) if t in stops), len(row))
            results.append(row[:cut])
        return results

    # -- export ---------------------------------------------------------------------------------

    @classmethod
    def from_exported(cls, export_dir: str | Path) -> "SpeechLLM":
        """Rebuild the model written by :func:`speechllm.llm.adapters.merge_and_export`: the build
        path of :func:`speechllm.tasks.sllm.build_model` on the exported config (LLM = the merged
        ``llm/`` directory, no LoRA), then the encoder and projector weights of ``speech.pt``."""
        from speechllm.tasks.sllm import build_model
        from speechllm.utils.config import load_yaml

        root = Path(export_dir)
        config = load_yaml(root / "config.yaml")
        config["llm"] = str(root / config.get("llm", "llm"))
        cmvn = root / "cmvn.json"
        model = build_model(config, cmvn_stats_path=cmvn if cmvn.is_file() else None)
        state = torch.load(root / "speech.pt", map_location="cpu", weights_only=True)
        model.encoder.load_state_dict(state["encoder"])
        model.projector.load_state_dict(state["projector"])
        model.config = config
        return model

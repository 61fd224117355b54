"""Projectors: speech-encoder frames -> LLM input embeddings, with a lower frame rate.

The YAML key ``projector: NAME`` picks the class, ``projector_conf`` holds its keyword arguments;
every projector is built as ``PROJECTORS[name](input_size=encoder.output_size(),
output_size=llm_hidden_size, **projector_conf)`` and provides:

* ``forward(x[B, T, D], lengths[B]) -> (y[B, T', output_size], out_lengths[B])``; output frames
  ``>= out_lengths`` are zero, and the valid outputs of an utterance do not depend on how far the
  batch is padded (padded input frames are zeroed or masked before they can mix in).
* ``output_lengths(lengths) -> out_lengths`` for integer tensors, without running the network
  (how many audio embeddings an utterance will take in the LLM sequence).
* ``downsample``: input frames per output frame (an int, except for ``qformer``: ``window /
  num_queries``); ``input_size`` and ``output_size``: the constructor's dimensions.

Projectors:

* ``linear`` (SLAM-LLM): stack ``downsample`` consecutive frames (the tail is zero padded,
  ``T' = ceil(T / k)``), then Linear -> ReLU/GELU -> Linear.
* ``conv1d``: a strided Conv1d (kernel ``kernel_size``, default ``downsample``; no padding) ->
  activation -> the same 2-layer MLP. Output lengths follow the conv formula
  ``floor((T - kernel) / stride) + 1``: an output frame exists only where its whole receptive
  field is valid audio (so an utterance shorter than the kernel gives no frame).
* ``qformer`` (SALMONN's window-level Q-Former): the sequence is cut into windows of ``window``
  frames (stride ``window``); ``num_queries`` learnable queries per window cross-attend to the
  frames of their window only (padded frames masked) through a few ``nn.TransformerDecoderLayer``
  blocks, then a Linear maps them to ``output_size``. ``T' = ceil(T / window) * num_queries``.
* ``ctc_pool``: token-rate audio. A CTC head (the ASR model's, loaded from ``ctc_init`` and
  never trained) labels every encoder frame; the frames of each run of one non-blank label (a
  token the ASR model hears) are averaged, blank frames are dropped, and the 2-layer MLP maps each
  pooled vector to the LLM. The LLM then reads about one embedding per spoken token, as it reads
  text, which is what a frozen LLM needs to apply its text skills to speech (MTBI with a frozen
  LLM). ``T'`` depends on the audio: ``output_lengths`` gives its upper bound ``T`` (every
  frame its own token), and a span without any non-blank frame still gives one embedding (the
  mean of its frames), so no span is ever empty.
* ``ctc_text``: LLM-token-rate audio as soft text. A CTC head over the LLM's own vocabulary,
  trained with a CTC loss on the transcript in the LLM's tokenization, labels the frames; each
  run of one token gives the mix of the LLM's token embeddings its mean posterior weights (plus a
  residual MLP, zero at the start). A frozen LLM reads nearly the embeddings of the text itself,
  one per LLM token, where ``ctc_pool`` gives it one per ASR piece (several per LLM token).
  ``T'`` as for ``ctc_pool``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from speechllm.nets.encoders.conformer import make_pad_mask
from speechllm.utils.config import ConfigError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"projector_conf.activation: unknown choice {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _positive_int(value: object, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"projector_conf.{option}: expected an int >= 1, got {value!r}")
    return value


def _ceil_div(lengths: torch.Tensor, k: int) -> torch.Tensor:
    return torch.div(lengths + k - 1, k, rounding_mode="floor")


def _zero_padding(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``x[B, T, D]`` with frames ``t >= lengths[b]`` set to zero."""
    return x.masked_fill(make_pad_mask(lengths, x.size(1)).unsqueeze(-1), 0.0)


def _mlp(input_size: int, hidden_size: int, output_size: int, activation: str) -> nn.Sequential:
    return nn.Sequential(nn.Linear(input_size, hidden_size), _activation(activation),
                         nn.Linear(hidden_size, output_size))


class LinearProjector(nn.Module):
    """Frame stacking by ``downsample`` + a 2-layer MLP (SLAM-LLM's linear projector).

    Args:
        input_size: encoder output dimension D.
        output_size: LLM hidden size.
        downsample: frames stacked into one output frame (k).
        hidden_size: width of the MLP's hidden layer.
        activation: ``relu`` or ``gelu``.
    """

    def __init__(self, input_size: int, output_size: int, downsample: int = 5, hidden_size: int = 2048,
                 activation: str = "relu") -> None:
        super().__init__()
        self.input_size, self.output_size = input_size, output_size
        self.downsample = _positive_int(downsample, "downsample")
        self.mlp = _mlp(input_size * self.downsample, _positive_int(hidden_size, "hidden_size"), output_size,
                        activation)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """``ceil(lengths / downsample)``."""
        return _ceil_div(lengths, self.downsample)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project ``x[B, T, D]`` to ``[B, ceil(T / k), output_size]``."""
        b, t, d = x.shape
        k = self.downsample
        # Zero the padding first: the last stack of an utterance reaches past its end, and what it
        # holds there must not depend on the batch.
        x = _zero_padding(x, lengths)
        x = nn.functional.pad(x, (0, 0, 0, (-t) % k))
        out_lens = self.output_lengths(lengths)
        y = self.mlp(x.reshape(b, -1, k * d))
        return _zero_padding(y, out_lens), out_lens


class Conv1dProjector(nn.Module):
    """Strided Conv1d + activation + a 2-layer MLP.

    Args:
        input_size: encoder output dimension D (also the conv's channel count).
        output_size: LLM hidden size.
        downsample: the conv stride.
        kernel_size: the conv kernel (default ``downsample``: non-overlapping windows); must be
            ``>= downsample`` so that no input frame is skipped.
        hidden_size: width of the MLP's hidden layer.
        activation: ``relu`` or ``gelu``.
    """

    def __init__(self, input_size: int, output_size: int, downsample: int = 2, kernel_size: int | None = None,
                 hidden_size: int = 2048, activation: str = "relu") -> None:
        super().__init__()
        self.input_size, self.output_size = input_size, output_size
        self.downsample = _positive_int(downsample, "downsample")
        self.kernel_size = self.downsample if kernel_size is None else _positive_int(kernel_size, "kernel_size")
        if self.kernel_size < self.downsample:
            raise ConfigError(f"projector_conf.kernel_size {self.kernel_size} < downsample {self.downsample}: "
                              f"frames between the kernels would be skipped")
        self.conv = nn.Conv1d(input_size, input_size, self.kernel_size, stride=self.downsample)
        self.act = _activation(activation)
        self.mlp = _mlp(input_size, _positive_int(hidden_size, "hidden_size"), output_size, activation)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """``floor((lengths - kernel_size) / downsample) + 1``, at least 0 (the conv formula, no padding)."""
        n = torch.div(lengths - self.kernel_size, self.downsample, rounding_mode="floor") + 1
        return n.clamp(min=0)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project ``x[B, T, D]`` to ``[B, T', output_size]`` with ``T'`` from the conv formula."""
        out_lens = self.output_lengths(lengths)
        if x.size(1) < self.kernel_size:  # too short for one kernel: no frame at all
            return x.new_zeros(x.size(0), 0, self.output_size), out_lens
        y = self.act(self.conv(x.transpose(1, 2))).transpose(1, 2)
        # Valid outputs only see valid inputs (no conv padding), so nothing to mask before the conv.
        y = self.mlp(y)
        return _zero_padding(y, out_lens), out_lens


class QFormerProjector(nn.Module):
    """Window-level Q-Former (SALMONN): learnable queries cross-attend to the frames of each window.

    Args:
        input_size: encoder output dimension D.
        output_size: LLM hidden size.
        window: frames per window (the stride too: windows do not overlap).
        num_queries: queries (output frames) per window.
        num_layers: ``nn.TransformerDecoderLayer`` blocks (self-attention among the queries of a
            window, cross-attention to its frames, feed-forward; pre-norm).
        d_model: width of the Q-Former; frames are mapped to it by a Linear.
        num_heads: attention heads.
        ffn_size: feed-forward width (default ``4 * d_model``).
        dropout: dropout inside the blocks.
    """

    def __init__(self, input_size: int, output_size: int, window: int = 17, num_queries: int = 1,
                 num_layers: int = 2, d_model: int = 256, num_heads: int = 4, ffn_size: int | None = None,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.input_size, self.output_size = input_size, output_size
        self.window = _positive_int(window, "window")
        self.num_queries = _positive_int(num_queries, "num_queries")
        d_model = _positive_int(d_model, "d_model")
        if d_model % _positive_int(num_heads, "num_heads"):
            raise ConfigError(f"projector_conf.d_model {d_model} is not divisible by num_heads {num_heads}")
        self.downsample = self.window / self.num_queries  # input frames per output frame
        self.in_proj = nn.Linear(input_size, d_model)
        # Cross-attention alone is blind to the order of frames in a window: give them positions.
        self.frame_pos = nn.Parameter(torch.zeros(self.window, d_model))
        self.queries = nn.Parameter(torch.randn(self.num_queries, d_model) * 0.02)
        layer = nn.TransformerDecoderLayer(d_model, num_heads, ffn_size or 4 * d_model, dropout,
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerDecoder(layer, _positive_int(num_layers, "num_layers"),
                                            norm=nn.LayerNorm(d_model))
        self.out_proj = nn.Linear(d_model, output_size)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """``ceil(lengths / window) * num_queries``."""
        return _ceil_div(lengths, self.window) * self.num_queries

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project ``x[B, T, D]`` to ``[B, ceil(T / window) * num_queries, output_size]``."""
        b, t, _ = x.shape
        w, nq = self.window, self.num_queries
        n_win = -(-t // w)
        h = self.in_proj(x)
        h = nn.functional.pad(h, (0, 0, 0, n_win * w - t)).view(b, n_win, w, -1) + self.frame_pos
        frame_pad = make_pad_mask(lengths, n_win * w).view(b, n_win, w)
        # Run only windows holding at least one valid frame: a fully masked window would give NaN
        # attention, and skipping them keeps the work proportional to the audio, not the padding.
        valid_win = ~frame_pad[:, :, 0]
        mem, mem_pad = h[valid_win], frame_pad[valid_win]  # [M, w, d], [M, w]
        queries = self.queries.unsqueeze(0).expand(mem.size(0), -1, -1)
        q = self.layers(queries, mem, memory_key_padding_mask=mem_pad)  # [M, nq, d]
        y = x.new_zeros(b, n_win, nq, self.out_proj.out_features)
        y[valid_win] = self.out_proj(q).to(y.dtype)
        return y.view(b, n_win * nq, -1), self.output_lengths(lengths)


class CTCPoolProjector(nn.Module):
    """CTC-guided pooling to one embedding per recognized token, then a 2-layer MLP (module doc).

    Args:
        input_size: encoder output dimension D (the CTC head's input size).
        output_size: LLM hidden size.
        ctc_init: an ASR checkpoint whose ``ctc.ctc_lo`` (Linear D -> V) labels the frames: the
            model the speech encoder comes from (the speech LLM config's ``encoder_init`` when
            neither this nor ``vocab_size`` is given). ``None`` needs ``vocab_size`` and leaves the
            head at zero until a saved state is loaded (an exported model).
        vocab_size: V, when there is no ``ctc_init``.
        hidden_size, activation: the MLP's.
        blank_id: the CTC blank's index (0 in speechllm's token lists).
        nominal_downsample: encoder frames per token on average, only for the audio-rate log line
            and check of :class:`SpeechLLM` (mini_synth: 60 ms frames, ~4 tokens/s -> ~4).
    """

    # speechllm.tasks.sllm.build_model: without ctc_init or vocab_size, ctc_init = encoder_init
    reads_asr_ctc_head = True

    def __init__(self, input_size: int, output_size: int, ctc_init: str | None = None,
                 vocab_size: int | None = None, hidden_size: int = 2048, activation: str = "relu",
                 blank_id: int = 0, nominal_downsample: float = 4.0) -> None:
        super().__init__()
        self.input_size, self.output_size = input_size, output_size
        self.blank_id = int(blank_id)
        self.downsample = float(nominal_downsample)
        if ctc_init is not None:
            from speechllm.train.checkpoint import load_model_state_dict

            state = load_model_state_dict(ctc_init)
            if "ctc.ctc_lo.weight" not in state:
                raise ConfigError(f"projector_conf.ctc_init {ctc_init}: no CTC head (ctc.ctc_lo.weight); "
                                  "give the checkpoint of a CTC or CTC/attention ASR model")
            weight, bias = state["ctc.ctc_lo.weight"].float(), state["ctc.ctc_lo.bias"].float()
            if weight.shape[1] != input_size:
                raise ConfigError(f"projector_conf.ctc_init {ctc_init}: its CTC head reads {weight.shape[1]}-dim "
                                  f"frames, the encoder gives {input_size}")
        elif vocab_size is not None:
            weight, bias = torch.zeros(int(vocab_size), input_size), torch.zeros(int(vocab_size))
        else:
            raise ConfigError("projector ctc_pool: give projector_conf.ctc_init (the ASR checkpoint) or vocab_size")
        if not 0 <= self.blank_id < weight.shape[0]:
            raise ConfigError(f"projector_conf.blank_id {blank_id} is outside the CTC vocabulary ({weight.shape[0]})")
        # buffers, not parameters: the head is the ASR model's and is never trained
        self.register_buffer("ctc_weight", weight)
        self.register_buffer("ctc_bias", bias)
        self.mlp = _mlp(input_size, _positive_int(hidden_size, "hidden_size"), output_size, activation)

    def exported_conf(self, conf: dict) -> dict:
        """``projector_conf`` for a standalone export: the head's size instead of the ASR file."""
        conf = {k: v for k, v in conf.items() if k != "ctc_init"}
        conf["vocab_size"] = int(self.ctc_weight.shape[0])
        return conf

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """The upper bound of forward's lengths: one token per frame."""
        return lengths.clone()

    def segments(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(segment index [B, T], count [B])`` of the frames the ASR head labels (:func:`ctc_runs`)."""
        with torch.no_grad():
            labels = (x.float() @ self.ctc_weight.T + self.ctc_bias).argmax(-1)
        return ctc_runs(labels, lengths.to(x.device), self.blank_id)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool ``x[B, T, D]`` to ``[B, max tokens, output_size]`` (module doc)."""
        seg, count = self.segments(x, lengths)
        return _zero_padding(self.mlp(pool_runs(x, seg, count)), count), count


class TextCTCProjector(nn.Module):
    """A CTC head over the LLM's own vocabulary; one embedding per LLM token it hears: the mix of
    the LLM's token embeddings its posteriors give (optionally + a residual MLP of the frames).

    Where ``ctc_pool`` pools by the ASR model's tokens (bpe200 pieces: several per LLM token, so a
    frozen LLM reads a sequence shaped unlike any text), this head is trained, with a CTC loss on
    the transcript in the LLM's tokenization (``ctc_weight``; :meth:`ctc_loss`, added by
    :class:`~speechllm.models.speech_llm.SpeechLLM` when a batch has ``transcript_ids``), to label
    the frames with the LLM's tokens. Frames of each run of one non-blank label (a repeat needs a
    blank between) are pooled; per run the output is ``p @ E``: ``p`` the run's mean posterior over
    the LLM's tokens (blank removed, renormalized), ``E`` the LLM's input embedding table (bound by
    :meth:`bind_llm_embeddings`, never trained or saved here). A frozen LLM thus reads nearly the
    embeddings of the text it would read (CTC posteriors as soft tokens, as in LegoSLM), so that
    its text skills, held-out tasks included, can apply to speech. An optional residual MLP of the
    pooled frames (zero at the start) lets the language-model loss add what the mix lacks; it is
    off by default, as that loss alone trains it and can move the embeddings away from any text
    the LLM knows (the mini MTBI recipe compares both: egs/mini_synth/mtbi1/README.md). With
    ``mix: hard`` each run gives instead the embedding of its most probable token, so the LLM
    reads the head's greedy transcript as text (a cascade; the language-model loss then no longer
    reaches the head). ``sllm_inference --projector_mix`` sets it at decoding, so one trained
    model can be scored both ways.

    Args:
        input_size: encoder output dimension D.
        output_size: LLM hidden size.
        vocab_size: the LLM's vocabulary (rows of its embedding table; ``build_model`` sets it).
            The blank is the extra class ``vocab_size``.
        hidden_size, activation: of the head's and the residual's 2-layer MLPs.
        residual: add the residual MLP (off by default; see above).
        mix: ``soft`` (the posterior-weighted mix of embeddings) or ``hard`` (the argmax token's).
        ctc_weight: weight of the CTC loss in training.
        nominal_downsample: encoder frames per token on average (the audio-rate log line of
            :class:`SpeechLLM` only).
    """

    # speechllm.tasks.sllm.build_model: vocab_size from the LLM, then bind_llm_embeddings
    reads_llm_embeddings = True
    MIXES = ("soft", "hard")

    def __init__(self, input_size: int, output_size: int, vocab_size: int | None = None, hidden_size: int = 512,
                 activation: str = "relu", residual: bool = False, mix: str = "soft", ctc_weight: float = 1.0,
                 nominal_downsample: float = 4.0) -> None:
        super().__init__()
        if vocab_size is None:
            raise ConfigError("projector ctc_text: give projector_conf.vocab_size (build_model sets it to the LLM's)")
        self.mix = mix
        self.input_size, self.output_size = input_size, output_size
        self.vocab_size = _positive_int(vocab_size, "vocab_size")
        self.blank_id = self.vocab_size
        if isinstance(ctc_weight, bool) or not isinstance(ctc_weight, (int, float)) or ctc_weight < 0:
            raise ConfigError(f"projector_conf.ctc_weight: expected a number >= 0, got {ctc_weight!r}")
        self.ctc_loss_weight = float(ctc_weight)
        self.downsample = float(nominal_downsample)
        hidden = _positive_int(hidden_size, "hidden_size")
        self.head = _mlp(input_size, hidden, self.vocab_size + 1, activation)
        self.residual = _mlp(input_size, hidden, output_size, activation) if residual else None
        if self.residual is not None:
            nn.init.zeros_(self.residual[-1].weight)
            nn.init.zeros_(self.residual[-1].bias)
        # In a list so that it is not a submodule: the table is the LLM's (frozen, saved with it).
        self._llm_embedding: list[nn.Embedding] = []

    @property
    def mix(self) -> str:
        """``soft`` or ``hard``: how each heard token becomes an embedding (class doc)."""
        return self._mix

    @mix.setter
    def mix(self, value: str) -> None:
        if value not in self.MIXES:
            raise ConfigError(f"projector ctc_text: mix must be one of {', '.join(self.MIXES)}, got {value!r}")
        self._mix = value

    def bind_llm_embeddings(self, embedding: nn.Embedding) -> None:
        """Use ``embedding`` (the LLM's input embeddings, ``[vocab_size, output_size]``) for the mix."""
        rows, dim = embedding.weight.shape
        if rows != self.vocab_size or dim != self.output_size:
            raise ConfigError(f"projector ctc_text: the LLM's embedding table is {rows} x {dim}, the projector "
                              f"was built for {self.vocab_size} x {self.output_size}")
        self._llm_embedding[:] = [embedding]

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """The upper bound of forward's lengths: one token per frame."""
        return lengths.clone()

    def frame_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The head's logits of every frame of ``x[B, T, D]``: ``[B, T, vocab_size + 1]``, float32."""
        return self.head(x).float()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor,
                frame_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool ``x[B, T, D]`` to ``[B, max tokens, output_size]`` (class doc); ``frame_logits``:
        :meth:`frame_logits` of ``x`` when already computed (a training step shares them with
        :meth:`ctc_loss`)."""
        if not self._llm_embedding:
            raise RuntimeError("projector ctc_text: bind_llm_embeddings was not called (build_model does it)")
        logits = self.frame_logits(x) if frame_logits is None else frame_logits
        seg, count = ctc_runs(logits.detach().argmax(-1), lengths.to(x.device), self.blank_id)
        post = pool_runs(logits.softmax(-1)[..., :self.blank_id], seg, count)
        table = self._llm_embedding[0].weight
        if self.mix == "hard":
            y = table[post.argmax(-1)].float()
        else:
            y = (post / post.sum(-1, keepdim=True).clamp(min=1e-8)) @ table.float()
        if self.residual is not None:
            y = y + self.residual(pool_runs(x, seg, count)).float()
        return _zero_padding(y.to(x.dtype), count), count

    def ctc_loss(self, x: torch.Tensor, lengths: torch.Tensor, targets: list[torch.Tensor],
                 frame_logits: torch.Tensor | None = None) -> torch.Tensor:
        """CTC loss of the head on whole utterances ``x[B, T, D]`` against ``targets`` (the LLM's
        token ids of each transcript): per utterance divided by its target length, mean over B.
        ``frame_logits``: :meth:`frame_logits` of ``x`` when already computed."""
        if len(targets) != x.size(0):
            raise ValueError(f"ctc_text: {len(targets)} transcripts for {x.size(0)} utterances")
        logits = self.frame_logits(x) if frame_logits is None else frame_logits
        log_probs = logits.log_softmax(-1).transpose(0, 1)  # [T, B, V + 1]
        target_lens = torch.tensor([len(t) for t in targets], dtype=torch.long)
        flat = torch.cat([t.long().cpu() for t in targets]) if targets else torch.zeros(0, dtype=torch.long)
        # zero_infinity: an utterance with more tokens than frames gives no gradient instead of inf
        return nn.functional.ctc_loss(log_probs, flat.to(x.device), lengths.cpu().long(), target_lens,
                                      blank=self.blank_id, reduction="mean", zero_infinity=True)


def ctc_runs(labels: torch.Tensor, lengths: torch.Tensor, blank_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(segment index [B, T], count [B])`` of frame labels ``[B, T]``: per frame the run of one
    non-blank label it belongs to, or -1 (blank or padding); a repeat needs a blank in between.
    An utterance without any non-blank frame gets one segment over all its frames, so no span of
    audio is ever empty."""
    t = labels.size(1)
    valid = ~make_pad_mask(lengths, t).to(labels.device)
    token = valid & (labels != blank_id)
    prev_label = nn.functional.pad(labels, (1, 0), value=-1)[:, :-1]
    prev_token = nn.functional.pad(token, (1, 0), value=False)[:, :-1]
    starts = token & ~(prev_token & (labels == prev_label))
    seg = torch.cumsum(starts.long(), dim=1) - 1
    count = starts.sum(dim=1)
    empty = count == 0
    seg = torch.where(token, seg, torch.full_like(seg, -1))
    seg[empty] = torch.where(valid[empty], 0, -1)
    return seg, torch.where(empty & (lengths > 0), torch.ones_like(count), count)


def pool_runs(values: torch.Tensor, seg: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Mean of ``values[B, T, D]`` over the frames of each segment of :func:`ctc_runs`:
    ``[B, max(count, 1), D]`` (rows past an utterance's count are zero)."""
    b, t, d = values.shape
    n_out = max(int(count.max()), 1) if b else 1
    index = torch.where(seg >= 0, seg, n_out)  # dropped frames go to a spare slot
    sums = values.new_zeros(b, n_out + 1, d).scatter_add_(1, index[..., None].expand(b, t, d), values)
    frames = values.new_zeros(b, n_out + 1).scatter_add_(1, index, torch.ones_like(values[..., 0]))
    return sums[:, :n_out] / frames[:, :n_out, None].clamp(min=1)


PROJECTORS: dict[str, Callable[..., nn.Module]] = {
    "linear": LinearProjector,
    "conv1d": Conv1dProjector,
    "qformer": QFormerProjector,
    "ctc_pool": CTCPoolProjector,
    "ctc_text": TextCTCProjector,
}

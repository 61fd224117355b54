"""Projectors: output lengths, zero padding, padding invariance, gradients, option errors."""
from __future__ import annotations

import pytest
import torch

from speechllm.nets.projectors import (PROJECTORS, Conv1dProjector, CTCPoolProjector, LinearProjector, QFormerProjector,
                                      TextCTCProjector)
from speechllm.utils.config import ConfigError

D_IN, D_OUT = 12, 16

CASES = [
    ("linear", {"downsample": 1, "hidden_size": 8}),
    ("linear", {"downsample": 2, "hidden_size": 8, "activation": "gelu"}),
    ("linear", {"downsample": 4, "hidden_size": 8}),
    ("linear", {"downsample": 5, "hidden_size": 8}),
    ("conv1d", {"downsample": 1, "hidden_size": 8}),
    ("conv1d", {"downsample": 2, "hidden_size": 8}),
    ("conv1d", {"downsample": 4, "kernel_size": 6, "hidden_size": 8}),
    ("conv1d", {"downsample": 5, "hidden_size": 8}),
    ("qformer", {"window": 1, "num_queries": 1, "d_model": 8, "num_heads": 2, "num_layers": 1}),
    ("qformer", {"window": 4, "num_queries": 1, "d_model": 8, "num_heads": 2, "num_layers": 1}),
    ("qformer", {"window": 5, "num_queries": 2, "d_model": 8, "num_heads": 2, "num_layers": 2}),
]
IDS = [f"{name}-{'-'.join(f'{k}{v}' for k, v in conf.items())}" for name, conf in CASES]


def _build(name: str, conf: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return PROJECTORS[name](input_size=D_IN, output_size=D_OUT, **conf).eval()


@pytest.mark.parametrize("name,conf", CASES, ids=IDS)
def test_output_lengths_match_forward_and_padding_is_zero(name, conf):
    proj = _build(name, conf)
    lengths = torch.tensor([23, 17, 9, 6])
    x = torch.randn(4, 23, D_IN)
    y, out_lens = proj(x, lengths)
    assert torch.equal(out_lens, proj.output_lengths(lengths))
    assert y.size(0) == 4 and y.size(2) == D_OUT and y.size(1) >= int(out_lens.max())
    for b in range(4):
        assert torch.all(y[b, out_lens[b]:] == 0)
        assert y[b, : out_lens[b]].abs().sum() > 0


def test_output_lengths_formulas():
    lengths = torch.tensor([1, 4, 5, 9, 10, 11])
    assert LinearProjector(4, 4, downsample=5, hidden_size=4).output_lengths(lengths).tolist() == [1, 1, 1, 2, 2, 3]
    # conv: floor((L - kernel) / stride) + 1, clamped at 0
    conv = Conv1dProjector(4, 4, downsample=2, kernel_size=3, hidden_size=4)
    assert conv.output_lengths(lengths).tolist() == [0, 1, 2, 4, 4, 5]
    qf = QFormerProjector(4, 4, window=4, num_queries=3, d_model=4, num_heads=1)
    assert qf.output_lengths(lengths).tolist() == [3, 3, 6, 9, 9, 9]
    assert qf.downsample == 4 / 3


@pytest.mark.parametrize("name,conf", CASES, ids=IDS)
def test_valid_outputs_do_not_depend_on_batch_padding(name, conf):
    proj = _build(name, conf)
    torch.manual_seed(1)
    x = torch.randn(1, 13, D_IN)
    y_alone, n_alone = proj(x, torch.tensor([13]))
    # the same utterance in a batch padded to 31 frames with garbage (not zeros) in the padding
    padded = torch.randn(2, 31, D_IN) * 5
    padded[1, :13] = x[0]
    y_batch, n_batch = proj(padded, torch.tensor([31, 13]))
    n = int(n_alone[0])
    assert int(n_batch[1]) == n
    torch.testing.assert_close(y_batch[1, :n], y_alone[0, :n], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,conf", CASES, ids=IDS)
def test_gradients_reach_every_parameter(name, conf):
    proj = _build(name, conf).train()
    x = torch.randn(3, 20, D_IN, requires_grad=True)
    y, _ = proj(x, torch.tensor([20, 15, 7]))
    y.pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in proj.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_conv1d_utterance_shorter_than_kernel_gives_no_frames():
    proj = Conv1dProjector(D_IN, D_OUT, downsample=4, kernel_size=6, hidden_size=8)
    y, n = proj(torch.randn(2, 5, D_IN), torch.tensor([5, 3]))
    assert y.shape == (2, 0, D_OUT) and n.tolist() == [0, 0]


def test_bad_options_raise_config_error():
    with pytest.raises(ConfigError, match="downsample"):
        LinearProjector(4, 4, downsample=0)
    with pytest.raises(ConfigError, match="activation"):
        LinearProjector(4, 4, activation="swishy")
    with pytest.raises(ConfigError, match="kernel_size"):
        Conv1dProjector(4, 4, downsample=4, kernel_size=2)
    with pytest.raises(ConfigError, match="num_heads"):
        QFormerProjector(4, 4, d_model=6, num_heads=4)


# --- ctc_pool -----------------------------------------------------------------------------------
def _ctc_pool(tmp_path, vocab: int = 4) -> CTCPoolProjector:
    """A ctc_pool projector whose CTC head labels a frame by the argmax of its first ``vocab`` dims."""
    head = torch.zeros(vocab, D_IN)
    head[:, :vocab] = torch.eye(vocab)
    path = tmp_path / "asr.pt"
    torch.save({"model": {"ctc.ctc_lo.weight": head, "ctc.ctc_lo.bias": torch.zeros(vocab)}}, path)
    torch.manual_seed(0)
    return CTCPoolProjector(D_IN, D_OUT, ctc_init=str(path), hidden_size=8).eval()


def _frames(labels: list[int]) -> torch.Tensor:
    x = torch.rand(len(labels), D_IN) * 0.1
    for t, lab in enumerate(labels):
        x[t, lab] += 1.0
    return x


def test_ctc_pool_averages_each_token_run_and_drops_blanks(tmp_path):
    proj = _ctc_pool(tmp_path)
    labels = [0, 1, 1, 0, 2, 2, 2, 1, 0, 1, 0]  # runs: 1 1 | 2 2 2 | 1 | (blank) 1 -> 4 tokens
    x = _frames(labels)
    y, n = proj(x[None], torch.tensor([len(labels)]))
    assert n.tolist() == [4] and y.shape == (1, 4, D_OUT)
    expected = torch.stack([x[1:3].mean(0), x[4:7].mean(0), x[7], x[9]])
    torch.testing.assert_close(y[0], proj.mlp(expected))
    assert (proj.output_lengths(torch.tensor([len(labels)])) >= n).all()


def test_ctc_pool_all_blank_span_gives_one_embedding_and_padding_does_not_matter(tmp_path):
    proj = _ctc_pool(tmp_path)
    a, blank = _frames([0, 2, 2, 0, 3]), _frames([0, 0, 0])
    alone, _ = proj(a[None], torch.tensor([5]))
    x = torch.zeros(3, 9, D_IN)
    x[0, :5], x[1, :3] = a, blank
    x[0, 5:] = 7.0  # padding that would be a token if it counted
    y, n = proj(x, torch.tensor([5, 3, 0]))
    assert n.tolist() == [2, 1, 0]
    torch.testing.assert_close(y[0, :2], alone[0])
    torch.testing.assert_close(y[1, 0], proj.mlp(blank.mean(0)))
    assert (y[0, 2:] == 0).all() and (y[2] == 0).all()


def test_ctc_pool_trains_the_mlp_only_and_exports_without_the_asr_file(tmp_path):
    proj = _ctc_pool(tmp_path).train()
    assert {n for n, _ in proj.named_parameters()} == {n for n, _ in proj.mlp.named_parameters(prefix="mlp")}
    y, _ = proj(_frames([1, 0, 2])[None].requires_grad_(), torch.tensor([3]))
    y.sum().backward()
    assert all(p.grad is not None for p in proj.parameters())
    conf = proj.exported_conf({"ctc_init": "asr.pt", "hidden_size": 8})
    assert conf == {"hidden_size": 8, "vocab_size": 4}
    rebuilt = CTCPoolProjector(D_IN, D_OUT, **conf)
    rebuilt.load_state_dict(proj.state_dict())
    torch.testing.assert_close(rebuilt.ctc_weight, proj.ctc_weight)


def test_ctc_pool_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="ctc_init"):
        CTCPoolProjector(D_IN, D_OUT)
    torch.save({"model": {"encoder.w": torch.zeros(1)}}, tmp_path / "noctc.pt")
    with pytest.raises(ConfigError, match="no CTC head"):
        CTCPoolProjector(D_IN, D_OUT, ctc_init=str(tmp_path / "noctc.pt"))
    torch.save({"ctc.ctc_lo.weight": torch.zeros(4, D_IN + 1), "ctc.ctc_lo.bias": torch.zeros(4)}, tmp_path / "d.pt")
    with pytest.raises(ConfigError, match="reads 13-dim"):
        CTCPoolProjector(D_IN, D_OUT, ctc_init=str(tmp_path / "d.pt"))
    with pytest.raises(ConfigError, match="blank_id"):
        CTCPoolProjector(D_IN, D_OUT, vocab_size=4, blank_id=4)


# --- ctc_text -----------------------------------------------------------------------------------
V_TEXT = 5  # LLM vocabulary of the ctc_text tests; the blank is class 5


def _ctc_text(residual: bool = False) -> TextCTCProjector:
    """A ctc_text projector bound to a random embedding table, whose head labels a frame by the
    argmax of its first V_TEXT + 1 dims (scaled up: near one-hot posteriors)."""
    torch.manual_seed(0)
    proj = TextCTCProjector(D_IN, D_OUT, vocab_size=V_TEXT, hidden_size=8, residual=residual).eval()
    head = torch.nn.Linear(D_IN, V_TEXT + 1)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[:, :V_TEXT + 1] = 60.0 * torch.eye(V_TEXT + 1)
        head.bias.zero_()
    proj.head = torch.nn.Sequential(head)
    proj.bind_llm_embeddings(torch.nn.Embedding(V_TEXT, D_OUT))
    return proj


def test_ctc_text_gives_the_llm_embedding_of_each_recognized_token():
    proj = _ctc_text()
    b = V_TEXT  # blank
    labels = [b, 1, 1, b, 2, 2, 1, b, 1, b, b, 0]  # runs: 1 | 2 | 1 | 1 | 0 -> 5 tokens
    y, n = proj(_frames(labels)[None], torch.tensor([len(labels)]))
    table = proj._llm_embedding[0].weight
    assert n.tolist() == [5] and y.shape == (1, 5, D_OUT)
    torch.testing.assert_close(y[0], table[[1, 2, 1, 1, 0]].detach(), atol=1e-4, rtol=1e-4)


def test_ctc_text_hard_mix_gives_the_argmax_tokens_embedding_where_soft_mixes():
    proj = _ctc_text()
    with torch.no_grad():
        proj.head[0].weight.mul_(1 / 30)  # flatter posteriors: the soft mix is off the table's rows
    b = V_TEXT
    x, lens = _frames([b, 3, 3, b, 4, 4])[None], torch.tensor([6])
    soft, n_soft = proj(x, lens)
    proj.mix = "hard"
    hard, n_hard = proj(x, lens)
    table = proj._llm_embedding[0].weight.detach()
    assert n_soft.tolist() == n_hard.tolist() == [2]
    torch.testing.assert_close(hard[0], table[[3, 4]])
    assert (soft[0] - table[[3, 4]]).abs().max() > 0.1
    with pytest.raises(ConfigError, match="mix must be one of soft, hard, got 'argmax'"):
        proj.mix = "argmax"
    with pytest.raises(ConfigError, match="mix must be one of"):
        TextCTCProjector(D_IN, D_OUT, vocab_size=V_TEXT, mix="Hard")


def test_ctc_text_residual_starts_at_zero_and_padding_does_not_matter():
    proj = _ctc_text(residual=True)
    b = V_TEXT
    a, blank = _frames([b, 3, 3, b, 4]), _frames([b, b, b])
    alone, n_alone = proj(a[None], torch.tensor([5]))
    table = proj._llm_embedding[0].weight.detach()
    torch.testing.assert_close(alone[0], table[[3, 4]], atol=1e-4, rtol=1e-4)  # residual is zero at the start
    x = torch.zeros(3, 9, D_IN)
    x[0, :5], x[1, :3] = a, blank
    x[0, 5:] = _frames([2, 2, 2, 2])  # padding that would be a token if it counted
    y, n = proj(x, torch.tensor([5, 3, 0]))
    assert n.tolist() == [2, 1, 0] and n_alone.tolist() == [2]
    torch.testing.assert_close(y[0, :2], alone[0])
    assert (y[0, 2:] == 0).all() and (y[2] == 0).all() and y[1, 0].abs().sum() > 0


def test_ctc_text_loss_trains_the_head_and_not_the_llm_table():
    proj = _ctc_text(residual=True).train()
    b = V_TEXT
    x = torch.stack([_frames([b, 1, 1, b, 2, b, b, b]), _frames([3, b, 3, b, 0, 0, b, b])])
    lens = torch.tensor([8, 6])
    good = proj.ctc_loss(x, lens, [torch.tensor([1, 2]), torch.tensor([3, 3, 0])])
    bad = proj.ctc_loss(x, lens, [torch.tensor([2, 1]), torch.tensor([0, 4, 4])])
    assert good.item() < 0.1 < bad.item()
    too_long = proj.ctc_loss(x, lens, [torch.tensor([1, 2]), torch.arange(5).repeat(2)])  # 10 tokens, 6 frames
    assert torch.isfinite(too_long)
    proj.zero_grad()
    y, _ = proj(x, lens)
    (bad + y.sum()).backward()
    assert all(p.grad is not None for p in proj.parameters())
    assert {n.split(".")[0] for n, _ in proj.named_parameters()} == {"head", "residual"}  # the table is not ours
    assert not any(k.startswith("_llm") for k in proj.state_dict())


def test_ctc_text_bad_options():
    with pytest.raises(ConfigError, match="vocab_size"):
        TextCTCProjector(D_IN, D_OUT)
    with pytest.raises(ConfigError, match="ctc_weight"):
        TextCTCProjector(D_IN, D_OUT, vocab_size=4, ctc_weight=-1)
    proj = TextCTCProjector(D_IN, D_OUT, vocab_size=4)
    with pytest.raises(RuntimeError, match="bind_llm_embeddings"):
        proj(torch.zeros(1, 3, D_IN), torch.tensor([3]))
    with pytest.raises(ConfigError, match="5 x 16"):
        proj.bind_llm_embeddings(torch.nn.Embedding(5, D_OUT))

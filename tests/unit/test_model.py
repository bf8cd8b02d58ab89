import numpy as np
import pytest
import torch

from model.checkpoint import (
    Checkpoint,
    CheckpointError,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from model.config import ModelConfig, UnknownModelKindError
from model.data import PAD_ID, generate


def _pair(**kw):
    """The same weights in the attention form and the matrix form."""
    torch.manual_seed(0)
    att = build_model(ModelConfig(memory_form="attention", **kw))
    mat = build_model(ModelConfig(memory_form="matrix", **kw))
    mat.load_state_dict(att.state_dict())
    return att.eval(), mat.eval()


@pytest.mark.parametrize("inner_steps", [1, 3])
@pytest.mark.parametrize("hidden_size", [20, 50])
def test_attention_form_equals_matrix_form(inner_steps, hidden_size):
    att, mat = _pair(inner_steps=inner_steps, hidden_size=hidden_size)
    tokens = torch.from_numpy(generate(256, 1, 8, seed=11).tokens)
    with torch.no_grad():
        (la, aa), (lm, am) = att(tokens), mat(tokens)
    assert (la - lm).abs().max() <= 1e-5
    assert ((aa - am).abs() / (1 + am.abs())).max() <= 1e-5


def test_attention_form_matches_explicit_fast_weight_recursion():
    """An independent, literal transcription of A(t) = λA(t−1) + η h hᵀ and the inner loop."""
    cfg = ModelConfig(hidden_size=8, inner_steps=2)
    torch.manual_seed(1)
    net = build_model(cfg).eval()
    tokens = torch.from_numpy(generate(1, 3, 3, seed=2).tokens)[0]
    W, C, ln = net.recurrent.weight, net.input_proj, net.layer_norm
    with torch.no_grad():
        h, A = torch.zeros(8), torch.zeros(8, 8)
        for tok in tokens:
            z = W @ h + C(net.embed(tok))
            hs = torch.relu(z)
            for _ in range(cfg.inner_steps):
                hs = torch.relu(ln(z + A @ hs))
            h = hs
            A = cfg.decay * A + cfg.fast_lr * torch.outer(h, h)
        expected = net.head(h)
        logits, _ = net(tokens.unsqueeze(0))
    assert torch.allclose(logits[0], expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["fast", "irnn", "lstm"])
@pytest.mark.parametrize("form", ["attention", "matrix"])
def test_left_padding_does_not_change_the_output(kind, form):
    torch.manual_seed(0)
    net = build_model(ModelConfig(kind=kind, memory_form=form)).eval()
    batch = generate(64, 1, 4, seed=4)
    padded = np.full((64, 25), PAD_ID, dtype=np.int64)
    padded[:, -batch.tokens.shape[1] :] = batch.tokens
    with torch.no_grad():
        short_logits, short_att = net(torch.from_numpy(batch.tokens))
        long_logits, long_att = net(torch.from_numpy(padded))
    assert torch.allclose(short_logits, long_logits, atol=1e-5)
    assert torch.allclose(long_att[:, -batch.tokens.shape[1] :], short_att, atol=1e-4)
    assert (long_att[:, : 25 - batch.tokens.shape[1]] == 0).all()


@pytest.mark.parametrize("form", ["attention", "matrix"])
def test_layer_norm_is_per_example_not_across_the_batch(form):
    torch.manual_seed(0)
    net = build_model(ModelConfig(memory_form=form)).eval()
    tokens = torch.from_numpy(generate(8, 4, 4, seed=6).tokens)
    other = tokens.clone()
    other[1:] = torch.from_numpy(generate(7, 4, 4, seed=99).tokens)
    with torch.no_grad():
        a, _ = net(tokens)
        b, _ = net(other)
    assert torch.allclose(a[0], b[0], atol=1e-6)
    assert not torch.allclose(a[1], b[1])


def test_memory_attention_covers_past_positions_only_and_is_nonnegative():
    torch.manual_seed(0)
    net = build_model(ModelConfig()).eval()
    tokens = torch.from_numpy(generate(16, 4, 4, seed=1).tokens)
    with torch.no_grad():
        _, att = net(tokens)
    assert att.shape == tokens.shape
    assert (att[:, -1] == 0).all()  # the query key itself is not yet in A(t)
    assert (att >= 0).all() and (att[:, :-1] > 0).any()


def test_recurrent_weights_start_as_scaled_identity():
    net = build_model(ModelConfig(hidden_size=20))
    assert torch.allclose(net.recurrent.weight, 0.05 * torch.eye(20))
    irnn = build_model(ModelConfig(kind="irnn", hidden_size=20))
    assert torch.allclose(irnn.recurrent.weight, torch.eye(20))


def test_unknown_kind_is_rejected():
    with pytest.raises(UnknownModelKindError):
        ModelConfig(kind="transformer")


def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path):
    cfg = ModelConfig(hidden_size=20, inner_steps=2)
    torch.manual_seed(3)
    net = build_model(cfg)
    path = save_checkpoint(
        Checkpoint(config=cfg, state_dict=net.state_dict(), step=7, seed=3, metrics={"test": {"error": 0.5}}),
        tmp_path / "c.pt",
    )
    loaded = load_checkpoint(path)
    assert loaded.config == cfg and loaded.step == 7 and loaded.metrics["test"]["error"] == 0.5
    assert loaded.code_version
    tokens = torch.from_numpy(generate(32, 1, 4, seed=0).tokens)
    with torch.no_grad():
        assert torch.equal(net.eval()(tokens)[0], loaded.model()(tokens)[0])


def test_bad_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"config": {"kind": "transformer"}, "state_dict": {}, "format_version": 1}, other)
    with pytest.raises(CheckpointError, match="unknown model kind"):
        load_checkpoint(other)

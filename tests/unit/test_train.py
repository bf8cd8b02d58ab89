from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import Checkpoint, CheckpointError, build_model, load_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.data import VOCAB, fixed_split
from model.evaluate import error_report
from model.train import (
    TrainConfig,
    _add_test_metrics,
    batch_indices,
    curriculum_k_max,
    decay_weights,
    hardest_rows,
    learning_rate,
    stream_batch,
    summary_line,
    train,
)


def _tiny(steps, **kw):
    return TrainConfig(
        k_min=1,
        k_max=2,
        steps=steps,
        train_size=20_000,
        eval_size=1000,
        eval_every=500,
        progress=False,
        threads=1,
        lr=5e-3,
        lr_schedule="cosine",
        **kw,
    )


def test_short_training_run_learns_one_and_two_pairs(tmp_path):
    ckpt = train(ModelConfig(hidden_size=32, embed_size=32), _tiny(2000), tmp_path / "tiny.pt")
    test = ckpt.metrics["test"]
    assert test["error"] < 0.02, test  # measured 0.36% on this seed; chance is 90%
    assert set(test["per_k"]) == {1, 2}
    assert load_checkpoint(tmp_path / "tiny.pt").step == 2000


def test_training_is_deterministic_per_seed(tmp_path):
    a = train(ModelConfig(hidden_size=16, embed_size=16), _tiny(30, seed=5))
    b = train(ModelConfig(hidden_size=16, embed_size=16), _tiny(30, seed=5))
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k]), k


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    cfg = ModelConfig(hidden_size=16, embed_size=16)

    def run(steps):  # constant lr: a cosine schedule's shape depends on the total step count
        return TrainConfig(**{**_tiny(steps).__dict__, "eval_every": 20, "lr_schedule": "constant"})

    straight = train(cfg, run(40))
    train(cfg, run(20), tmp_path / "r.pt")  # "interrupted" after 20 steps
    resumed = train(cfg, run(40), tmp_path / "r.pt", resume_from=tmp_path / "r.pt")
    assert resumed.step == 40
    for k in straight.state_dict:
        assert torch.allclose(straight.state_dict[k], resumed.state_dict[k], atol=1e-6), k


def test_data_order_covers_each_epoch_once():
    n, bs = 1000, 100
    rows = np.concatenate([batch_indices(0, s, bs, n) for s in range(10)])
    assert sorted(rows.tolist()) == list(range(n))


def test_cached_epoch_order_gives_the_same_rows_as_drawing_the_shuffle_every_step():
    n, bs, seed = 1000, 100, 3
    for step in (0, 9, 10, 11, 35, 9, 0):  # across epochs and back again
        epoch, pos = divmod(step, n // bs)
        order = np.random.default_rng([seed, epoch]).permutation(n)
        assert batch_indices(seed, step, bs, n).tolist() == order[pos * bs : (pos + 1) * bs].tolist()


def test_cosine_schedule_ends_at_min_lr():
    cfg = TrainConfig(steps=100, lr=1e-3, min_lr=1e-5, lr_schedule="cosine")
    assert learning_rate(cfg, 0) == 1e-3
    assert abs(learning_rate(cfg, 100) - 1e-5) < 1e-12


def test_a_fine_tune_schedule_starts_at_schedule_start():
    cfg = TrainConfig(
        steps=300, lr=1e-3, min_lr=1e-5, lr_schedule="cosine", warmup_steps=10, schedule_start=100
    )
    assert learning_rate(cfg, 100) == 1e-4  # first warmup step of the fine-tune
    assert learning_rate(cfg, 110) == 1e-3  # peak right after its warmup
    assert abs(learning_rate(cfg, 205) - (1e-5 + 0.5 * (1e-3 - 1e-5))) < 1e-12  # halfway down
    assert abs(learning_rate(cfg, 300) - 1e-5) < 1e-12
    assert (
        learning_rate(TrainConfig(**{**cfg.__dict__, "schedule_start": 0}), 110) < 1e-3
    )  # vs the old schedule


def test_stop_at_ends_early_and_a_resume_matches_the_uninterrupted_cosine_run(tmp_path):
    # --stop-at screens a run on its full-length schedule; --resume then finishes exactly that run.
    cfg = ModelConfig(hidden_size=16, embed_size=16)
    full = TrainConfig(**{**_tiny(40).__dict__, "eval_every": 20})
    straight = train(cfg, full)
    screened = train(cfg, TrainConfig(**{**full.__dict__, "stop_at": 25}), tmp_path / "s.pt")
    assert screened.step == 25
    assert screened.history[-1]["step"] == 25
    assert screened.history[-1]["lr"] == learning_rate(full, 24)  # cosine over 40 steps, not over 25
    assert "test" in screened.metrics
    resumed = train(cfg, full, tmp_path / "s.pt", resume_from=tmp_path / "s.pt")
    assert resumed.step == 40
    for k in straight.state_dict:
        assert torch.allclose(straight.state_dict[k], resumed.state_dict[k], atol=1e-6), k


def _constant(steps, **kw):
    # constant lr: runs of different lengths then share one weight trajectory
    return TrainConfig(**{**_tiny(steps).__dict__, "eval_every": 2, "lr_schedule": "constant", **kw})


def test_weight_averages_equal_hand_computed_ones_and_the_raw_weights_train_unchanged(tmp_path):
    cfg = ModelConfig(hidden_size=16, embed_size=16)
    w = {s: train(cfg, _constant(s)).state_dict for s in (1, 2, 3, 4)}  # raw weights after s steps
    swa = train(cfg, _constant(4, swa_every=2), tmp_path / "swa.pt")
    ema = train(cfg, _constant(4, ema_decay=0.75, average_start=1), tmp_path / "ema.pt")
    for k in w[4]:
        assert torch.allclose(swa.state_dict[k], (w[2][k] + w[4][k]) / 2, atol=1e-6), k
        hand = 0.75 * (0.75 * w[2][k] + 0.25 * w[3][k]) + 0.25 * w[4][k]
        assert torch.allclose(ema.state_dict[k], hand, atol=1e-6), k
        assert torch.equal(swa.averaging["raw_state_dict"][k], w[4][k]), k  # averaging never steers training
        assert torch.equal(ema.averaging["raw_state_dict"][k], w[4][k]), k
    assert swa.averaging["count"] == 2 and ema.averaging["count"] == 3
    # what is tested and saved is the average, and the raw weights' test error is reported beside it
    assert load_checkpoint(tmp_path / "swa.pt").averaging["count"] == 2
    assert "test_raw" in swa.metrics and not torch.equal(swa.state_dict["embed.weight"], w[4]["embed.weight"])
    assert swa.train_args["swa_every"] == 2 and ema.train_args["ema_decay"] == 0.75


def test_resume_continues_the_average_exactly(tmp_path):
    cfg = ModelConfig(hidden_size=16, embed_size=16)
    straight = train(cfg, _constant(12, ema_decay=0.9))
    train(cfg, _constant(6, ema_decay=0.9), tmp_path / "r.pt")
    resumed = train(cfg, _constant(12, ema_decay=0.9), tmp_path / "r.pt", resume_from=tmp_path / "r.pt")
    assert resumed.averaging["count"] == straight.averaging["count"] == 12
    for k in straight.state_dict:
        assert torch.allclose(straight.state_dict[k], resumed.state_dict[k], atol=1e-6), k
        raw = straight.averaging["raw_state_dict"][k]
        assert torch.allclose(raw, resumed.averaging["raw_state_dict"][k], atol=1e-6), k


def test_averaging_as_a_fine_tune_starts_at_the_resumed_step_and_refuses_other_settings(tmp_path):
    cfg = ModelConfig(hidden_size=16, embed_size=16)
    base = train(cfg, _constant(4), tmp_path / "f.pt")
    assert base.averaging is None
    tuned = train(cfg, _constant(10, swa_every=3), tmp_path / "f.pt", resume_from=tmp_path / "f.pt")
    assert tuned.averaging["count"] == 2  # steps 6 and 9 of 5..10 (the phase counts from average_start 0)
    with pytest.raises(CheckpointError, match="averaging settings differ"):
        train(cfg, _constant(12, swa_every=2), tmp_path / "f.pt", resume_from=tmp_path / "f.pt")
    with pytest.raises(ValueError, match="one of"):
        train(cfg, _constant(2, swa_every=2, ema_decay=0.9))


def test_hardest_rows_keeps_exactly_the_rows_with_the_highest_loss():
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=16, embed_size=16), VOCAB)
    data = fixed_split("valid", 1, 2, size=300)
    tokens, targets = torch.from_numpy(data.tokens), torch.from_numpy(data.targets)
    pool = torch.arange(40, 140)  # rows 40..139
    kept = hardest_rows(model, tokens, targets, pool, 25)
    with torch.no_grad():
        losses = torch.nn.functional.cross_entropy(model(tokens)[0], targets, reduction="none")
    assert kept.shape == (25,) and len(set(kept.tolist())) == 25
    assert set(kept.tolist()) <= set(pool.tolist())
    dropped = sorted(set(pool.tolist()) - set(kept.tolist()))
    assert losses[kept].min() >= losses[dropped].max()
    assert not model.embed.weight.grad  # scoring the pool leaves no gradient behind


def test_mining_starts_at_mining_start_and_resumes_exactly(tmp_path):
    cfg = ModelConfig(hidden_size=16, embed_size=16)
    plain = {s: train(cfg, _constant(s)).state_dict for s in (3, 6)}
    mined = {s: train(cfg, _constant(s, hard_pool=4, mining_start=3)).state_dict for s in (3, 6)}
    for k in plain[3]:
        assert torch.equal(plain[3][k], mined[3][k]), k  # no mining before mining_start
    assert not torch.equal(plain[6]["embed.weight"], mined[6]["embed.weight"])
    train(cfg, _constant(4, hard_pool=4, mining_start=3), tmp_path / "m.pt")
    resumed = train(
        cfg, _constant(6, hard_pool=4, mining_start=3), tmp_path / "m.pt", resume_from=tmp_path / "m.pt"
    )
    for k in mined[6]:
        assert torch.allclose(mined[6][k], resumed.state_dict[k], atol=1e-6), k
    assert resumed.train_args["hard_pool"] == 4
    with pytest.raises(ValueError, match="hard_pool"):
        train(cfg, _constant(2, hard_pool=0))


def test_weight_decay_shrinks_only_matrices_by_lr_times_decay_each_step():
    model = build_model(ModelConfig(hidden_size=8, embed_size=8), VOCAB)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    decay_weights(model, 0.25)
    after = model.state_dict()
    for name, value in before.items():
        expected = value * 0.75 if value.dim() >= 2 else value
        assert torch.allclose(after[name], expected), name
    assert any(v.dim() == 1 for v in before.values())  # the gains and biases were there to be left alone


def test_a_run_with_weight_decay_differs_from_one_without_and_records_it():
    cfg = ModelConfig(hidden_size=16, embed_size=16)
    plain = train(cfg, _constant(3))
    decayed = train(cfg, _constant(3, weight_decay=0.5))
    assert decayed.train_args["weight_decay"] == 0.5
    assert decayed.state_dict["embed.weight"].norm() < plain.state_dict["embed.weight"].norm()


# --- K curriculum, fine-tuning from a checkpoint, choosing on validation ---


def test_the_curriculum_widens_k_linearly_from_k_start_to_k_max():
    cfg = TrainConfig(k_min=1, k_max=26, k_start=8, curriculum_steps=4000)
    assert [curriculum_k_max(cfg, s) for s in (0, 1999, 2000, 3999, 4000, 9000)] == [8, 16, 17, 25, 26, 26]
    assert curriculum_k_max(TrainConfig(k_min=1, k_max=26), 0) == 26  # no curriculum: all K from the start


def test_curriculum_rows_are_drawn_per_step_within_the_cap_and_padded_to_the_run_length():
    cfg = TrainConfig(k_min=1, k_max=26, k_start=8, curriculum_steps=4000, seed=3)
    early, late = stream_batch(cfg, 0, 512, 55), stream_batch(cfg, 5000, 512, 55)
    assert early.tokens.shape == late.tokens.shape == (512, 55)
    assert early.num_pairs.max() == 8 and late.num_pairs.max() == 26 and early.num_pairs.min() == 1
    again = stream_batch(cfg, 0, 512, 55)
    assert np.array_equal(early.tokens, again.tokens)  # a pure function of (seed, step)
    other_seed = stream_batch(TrainConfig(**{**cfg.__dict__, "seed": 4}), 0, 512, 55)
    assert not np.array_equal(early.tokens, other_seed.tokens)
    valid = fixed_split("valid", 1, 8, size=512, length=55)
    assert not np.array_equal(early.tokens, valid.tokens)  # never the validation rows


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny trained K = 1..2 checkpoint to fine-tune from: (its config, its path)."""
    cfg = ModelConfig(hidden_size=16, embed_size=16)
    path = tmp_path_factory.mktemp("base") / "base.pt"
    train(cfg, _tiny(60, seed=1), path)
    return cfg, path


def _finetune(path, steps=24, **kw):
    return TrainConfig(
        k_min=1,
        k_max=4,
        k_start=2,
        curriculum_steps=12,
        length=13,
        steps=steps,
        batch_size=32,
        eval_size=300,
        eval_every=8,
        progress=False,
        threads=1,
        lr=1e-3,
        lr_schedule="cosine",
        init_from=str(path),
        **kw,
    )


def test_a_curriculum_fine_tune_starts_from_the_checkpoint_and_is_deterministic_per_seed(base):
    cfg, base = base
    a = train(cfg, _finetune(base, seed=7))
    b = train(cfg, _finetune(base, seed=7))
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k]), k
    scratch = train(cfg, TrainConfig(**{**_finetune(base, seed=7).__dict__, "init_from": None}))
    started = load_checkpoint(base).state_dict
    # 24 small Adam steps move a weight by well under its distance from a fresh initialisation
    assert (a.state_dict["embed.weight"] - started["embed.weight"]).abs().max() < 0.1
    assert (scratch.state_dict["embed.weight"] - started["embed.weight"]).abs().max() > 0.5
    assert a.train_args["init_from"] == str(base) and a.train_args["k_start"] == 2
    assert set(a.metrics["test"]["per_k"]) == {1, 2, 3, 4}


def test_best_out_keeps_the_checkpoint_with_the_lowest_validation_error(base, tmp_path):
    cfg, base = base
    final = train(cfg, _finetune(base, seed=2), tmp_path / "last.pt", best_out=tmp_path / "best.pt")
    best = load_checkpoint(tmp_path / "best.pt")
    errors = [h["valid_error"] for h in final.history]
    assert len(errors) == 3
    assert best.metrics["valid"]["error"] == min(errors)
    chosen = max(i for i, e in enumerate(errors) if e == min(errors))  # a tie goes to the later one
    assert best.step == final.history[chosen]["step"]
    # tested after the choice, like the final checkpoint: `make model` serves it with its test figures
    assert set(best.metrics["test"]) >= {"error", "n", "per_k"} and best.metrics["test"]["n"] > 0
    if best.step == final.step:
        assert best.metrics == final.metrics


def test_a_kept_checkpoint_from_before_the_end_is_tested_with_its_own_weights(base, tmp_path):
    _, path = base
    kept = tmp_path / "kept.pt"
    save_checkpoint(load_checkpoint(path), kept)
    data = fixed_split("test", 1, 4, size=300, length=13)
    _add_test_metrics(kept, None, data, "cpu")
    got = load_checkpoint(kept)
    assert got.metrics["test"] == error_report(got.model(), data)
    assert got.metrics["valid"] == load_checkpoint(path).metrics["valid"]  # the rest kept as it was


def test_fine_tuning_refuses_a_checkpoint_of_another_shape_and_a_k_start_past_k_max(base):
    cfg, base = base
    with pytest.raises(CheckpointError, match="model config differs"):
        train(ModelConfig(hidden_size=8, embed_size=16), _finetune(base))
    with pytest.raises(ValueError, match="k_start"):
        train(cfg, TrainConfig(**{**_finetune(base).__dict__, "k_start": 9}))


def test_the_closing_line_gives_counts_and_an_interval_never_a_bare_zero_percent():
    cfg = ModelConfig(hidden_size=8, embed_size=8)
    per_k = {1: {"error": 0.0, "n": 10_000}, 2: {"error": 3 / 10_000, "n": 10_000}}
    metrics = {"test": {"error": 3 / 20_000, "n": 20_000, "per_k": per_k}, "wall_s": 12.3}
    line = summary_line(
        Path("run.pt"), Checkpoint(cfg, build_model(cfg).state_dict(), step=7, metrics=metrics)
    )
    assert line == (
        "run.pt: step 7, test errors 3/20000 = 0.015% (0.0031-0.044%); K=1: 0/10000, K=2: 3/10000; 12 s"
    )
    metrics["test_raw"] = {"error": 0.0, "n": 20_000, "per_k": {}}
    line = summary_line(
        Path("run.pt"), Checkpoint(cfg, build_model(cfg).state_dict(), step=7, metrics=metrics)
    )
    assert "(averaged weights; raw weights 0/20000 (< 0.015%))" in line and "0.00%" not in line

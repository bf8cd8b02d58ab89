import json

from model.config import ModelConfig
from model.evaluate import error_report, main
from model.train import TrainConfig, train


def test_evaluate_cli_writes_per_k_json_and_a_png_learning_curve(tmp_path):
    cfg = TrainConfig(
        k_min=1, k_max=3, steps=60, train_size=2000, eval_size=200, eval_every=20, progress=False, threads=1
    )
    train(ModelConfig(hidden_size=16, embed_size=16), cfg, tmp_path / "c.pt")
    out, png = tmp_path / "r.json", tmp_path / "curve.png"
    assert main([str(tmp_path / "c.pt"), "--size", "600", "--json", str(out), "--plot", str(png)]) == 0
    report = json.loads(out.read_text())
    assert report["n"] == 600 and set(report["per_k"]) == {"1", "2", "3"}
    assert sum(v["n"] for v in report["per_k"].values()) == 600
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_error_report_counts_wrong_answers(tmp_path):
    from model.data import generate

    cfg = TrainConfig(
        k_min=1, k_max=1, steps=1, train_size=256, eval_size=100, eval_every=1, progress=False, threads=1
    )
    net = train(ModelConfig(hidden_size=8, embed_size=8), cfg).model()
    batch = generate(300, 1, 2, seed=0)
    report = error_report(net, batch)
    from model.evaluate import predict

    wrong = (predict(net, batch.tokens) != batch.targets).sum()
    assert abs(report["error"] - wrong / 300) < 1e-12
    assert report["per_k"][1]["n"] + report["per_k"][2]["n"] == 300


def test_evaluate_cli_reports_a_missing_checkpoint(tmp_path, capsys):
    assert main([str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err

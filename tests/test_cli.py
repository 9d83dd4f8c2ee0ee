"End-to-end runs of the `switch-sae` command line, in subprocesses."
import json, os
import pytest
import torch
from switch_sae import load_sae, SwitchSAE

SMALL = ["--data", "synthetic", "--steps", "80", "--log-every", "20", "--ckpt-every", "40", "--no-progress", "--device", "cpu",
         "--eval-tokens", "4096"]


def test_train_writes_the_run_folder(cli, tmp_path):
    out = tmp_path / "run"
    p = cli("train", "--out", str(out), *SMALL)
    assert "report.md" in p.stdout
    files = set(os.listdir(out))
    assert {"cfg.json", "model.safetensors", "metrics.json", "history.jsonl", "training.png", "expert_load.png",
            "report.md", "checkpoints"} <= files
    m = json.loads((out / "metrics.json").read_text())
    for k in "fve mse l0 dead_frac expert_load lb_loss steps tokens seconds feature_recovery routing_purity".split():
        assert k in m, k
    assert m["steps"] == 80 and m["tokens"] == 80 * 1024
    assert abs(sum(m["expert_load"]) - 1) < 1e-6 and len(m["expert_load"]) == 8
    assert m["l0"] <= 8
    hist = [json.loads(l) for l in (out / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in hist] == list(range(1, 81))
    sae = load_sae(out)
    assert isinstance(sae, SwitchSAE) and sae.cfg.steps == 80
    # the PNGs are real images
    assert (out / "training.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_continues_to_identical_weights(cli, tmp_path):
    "A run that lost its last 20 steps (newest checkpoint and final weights gone) resumes to identical weights."
    import shutil
    a, b = tmp_path / "a", tmp_path / "b"
    args = [s if s != "40" else "20" for s in SMALL]          # checkpoint every 20 steps
    cli("train", "--out", str(a), *args)
    cli("train", "--out", str(b), *args)
    shutil.rmtree(b / "checkpoints" / "step_0000080")          # as if killed between steps 60 and 80
    (b / "model.safetensors").unlink()
    p = cli("train", "--out", str(b), "--resume", *args)
    assert "resuming from step 60" in p.stdout
    sa, sb = load_sae(a).state_dict(), load_sae(b).state_dict()
    for k in sa: assert torch.equal(sa[k], sb[k]), k
    assert json.loads((b / "metrics.json").read_text())["steps"] == 80
    hist = [json.loads(l) for l in (b / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in hist] == list(range(1, 81))


def test_ctrl_c_stops_cleanly_and_resumes(tmp_path):
    "SIGINT finishes the step, writes a checkpoint and exits; --resume then completes the run exactly."
    import signal, subprocess, sys, time
    exe = os.path.join(os.path.dirname(sys.executable), "switch-sae")
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["--data", "synthetic", "--steps", "3000", "--batch-size", "256", "--log-every", "50", "--ckpt-every", "500", "--no-progress",
            "--device", "cpu", "--eval-tokens", "1024"]
    proc = subprocess.Popen([exe, "train", "--out", str(b), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (b / "history.jsonl").exists() and not list((b / "checkpoints").glob("step_*")) and time.time() < deadline:
        if proc.poll() is not None: break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    stopped = [p.name for p in (b / "checkpoints").glob("step_*")]
    assert "resume with --resume" in out, out
    cli_args = ["train", "--out", str(b), "--resume", *args]
    from conftest import run_cli
    run_cli(*cli_args)
    run_cli("train", "--out", str(a), *args)
    sa, sb = load_sae(a).state_dict(), load_sae(b).state_dict()
    for k in sa: assert torch.equal(sa[k], sb[k]), (k, stopped)


def test_topk_baseline(cli, tmp_path):
    cli("train", "--arch", "topk", "--out", str(tmp_path / "t"), *SMALL)
    m = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert m["expert_load"] == [1.0]


@pytest.mark.parametrize("args,msg", [
    (["--n-latents", "500", "--n-experts", "16"], "not divisible by n_experts"),
    (["--k", "1000"], "larger than an expert's latents"),
    (["--lb-alpha", "-1"], "lb_alpha must be >= 0"),
    (["--dtype", "float8"], "dtype must be one of"),
    (["--data", "imagenet"], "is not known"),
    (["--d-in", "64"], "does not match the width"),
    (["--dataset", "/nonexistent/corpus.txt"], "/nonexistent/corpus.txt"),
])
def test_bad_config_is_refused_before_work(cli, tmp_path, args, msg):
    p = cli("train", "--out", str(tmp_path / "x"), "--no-progress", "--steps", "5", *args, check=False)
    assert p.returncode != 0
    assert msg in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "x" / "checkpoints").exists()


def test_out_dir_with_another_run_is_refused(cli, tmp_path):
    out = tmp_path / "r"
    cli("train", "--out", str(out), *SMALL)
    before = (out / "model.safetensors").read_bytes()
    p = cli("train", "--out", str(out), *SMALL, check=False)
    assert p.returncode != 0 and "already holds a run" in p.stderr and "--resume" in p.stderr
    assert (out / "model.safetensors").read_bytes() == before
    cli("train", "--out", str(out), "--overwrite", *SMALL)


def test_help_lists_every_config_field(cli):
    from dataclasses import fields
    from switch_sae import SwitchSAEConfig
    h = cli("train", "--help").stdout
    for f in fields(SwitchSAEConfig):
        assert "--" + f.name.replace("_", "-") in h, f.name


LM_SMALL = ["--steps", "40", "--n-latents", "512", "--batch-size", "256", "--n-ctxs", "64", "--no-progress",
            "--device", "cpu", "--eval-tokens", "2048", "--log-every", "10"]


def test_lm_run_and_eval(cli, tmp_path):
    "The main job's path, small: tiny-LM activations, evaluation inside the model, report, then `eval`."
    out = tmp_path / "lm"
    cli("train", "--out", str(out), *LM_SMALL)
    m = json.loads((out / "metrics.json").read_text())
    for k in "fve mse l0 dead_frac expert_load lb_loss ce_loss_recovered delta_ce kl steps tokens seconds".split():
        assert k in m, k
    assert m["ce_zero"] > m["ce_sae"] > m["ce_clean"] - 0.05
    assert abs(m["delta_ce"] - (m["ce_sae"] - m["ce_clean"])) < 1e-9
    assert m["eval_tokens"] == 16 * 127            # 16 held-out contexts of 128 tokens, BOS rows left out
    assert {"lm_eval.png", "report.md", "data.json"} <= set(os.listdir(out))
    report = (out / "report.md").read_text()
    assert "ce_loss_recovered" in report and "blocks.1.hook_resid_pre" in report
    cli("eval", str(out))
    ev = json.loads((out / "eval.json").read_text())
    assert abs(ev["ce_loss_recovered"] - m["ce_loss_recovered"]) < 1e-6


def test_lm_local_text_file_topk_and_cache(cli, tmp_path):
    "A user's own text file, the dense TopK baseline, and an on-disk activation cache reused by a second run."
    import inspect, switch_sae.train as t
    text = tmp_path / "corpus.txt"
    text.write_text(inspect.getsource(t) * 10)
    cache = tmp_path / "cache"
    args = [*LM_SMALL, "--dataset", str(text), "--cache", str(cache), "--eval-dataset", str(text)]
    cli("train", "--out", str(tmp_path / "a"), "--arch", "topk", *args)
    man = json.loads((cache / "manifest.json").read_text())
    assert man["n_tokens"] >= 40 * 256 and man["hook"] == "blocks.1.hook_resid_pre"
    stamp = (cache / "manifest.json").stat().st_mtime
    cli("train", "--out", str(tmp_path / "b"), *args)
    assert (cache / "manifest.json").stat().st_mtime == stamp     # reused, the model did not run again
    ma = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert ma["expert_load"] == [1.0] and "ce_loss_recovered" in ma

"""`switch-sae train --config FILE` (nbs/16a_run): a run folder's written config repeats the run; YAML and JSON files
work like TOML and the run writes its config back in the same format; flags override the file; a bad file is refused
before any work, naming the key."""
import json
from conftest import run_cli
from switch_sae.run import config_text, read_config_file

LM = ["--steps", "20", "--log-every", "10", "--n-latents", "512", "--batch-size", "256", "--n-ctxs", "64",
      "--eval-tokens", "2048", "--device", "cpu", "--no-progress"]


def test_written_config_repeats_the_main_job(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_cli("train", "--out", str(a), "--k", "8", *LM)
    written = read_config_file(a / "config.toml")
    assert written["k"] == 8 and written["model"] == "tiny" and written["eval_split"] == "heldout" and "d_in" not in written
    run_cli("train", "--config", str(a / "config.toml"), "--out", str(b), "--no-progress")
    for f in ("cfg.json", "data.json", "config.toml"):
        assert (b / f).read_text() == (a / f).read_text(), f
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert mb["fve"] == ma["fve"] and mb["ce_loss_recovered"] == ma["ce_loss_recovered"]


def test_yaml_and_json_configs_and_overrides(tmp_path):
    base = dict(data="synthetic", steps=20, n_latents=128, n_experts=4, d_in=32, batch_size=128, eval_tokens=1024,
                log_every=10, syn_noise=0.1, lr=3e-4, device="cpu")
    for fmt in ("yaml", "json"):
        f = tmp_path / f"run.{fmt}"
        f.write_text(config_text(base, fmt))
        out = tmp_path / fmt
        run_cli("train", "--config", str(f), "--steps", "30", "--out", str(out), "--no-progress")
        cfg = json.loads((out / "cfg.json").read_text())
        assert (cfg["steps"], cfg["n_latents"], cfg["lr"]) == (30, 128, 3e-4), "the flag overrides the file"
        assert json.loads((out / "data.json").read_text())["synthetic"]["noise"] == 0.1
        assert (out / f"config.{fmt}").exists() and not (out / "config.toml").exists()
        assert read_config_file(out / f"config.{fmt}")["steps"] == 30
    # --overwrite replaces the whole run: no config.yaml of the run before beside the new run's config.toml
    run_cli("train", "--out", str(tmp_path / "yaml"), "--overwrite", "--data", "synthetic", "--steps", "5", "--d-in", "32",
            "--n-latents", "128", "--n-experts", "4", "--eval-tokens", "256", "--device", "cpu", "--no-progress")
    assert (tmp_path / "yaml" / "config.toml").exists() and not (tmp_path / "yaml" / "config.yaml").exists()


def test_bad_config_is_refused_by_name(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('data = "synthetic"\nn_latent = 128\n')
    p = run_cli("train", "--config", str(f), "--out", str(tmp_path / "run"), check=False)
    assert p.returncode != 0 and "unknown key 'n_latent' (did you mean 'n_latents'?)" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "run").exists()
    f.write_text('steps = "many"\n')
    p = run_cli("train", "--config", str(f), check=False)
    assert p.returncode != 0 and "steps = 'many' is not an integer" in p.stderr, p.stderr
    p = run_cli("train", "--config", str(tmp_path / "missing.yaml"), check=False)
    assert p.returncode != 0 and "no such file" in p.stderr, p.stderr

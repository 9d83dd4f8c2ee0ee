"""`switch-sae train --wandb PROJECT` (nbs/16a_run), offline (WANDB_MODE=offline: no account, no network): the W&B run
folder inside the run folder holds every figure of `history.jsonl` at its step, the speed, the final metrics and the
report's plots; `--resume` continues the same W&B run. Skipped where wandb is not installed (pip install 'switch_sae[wandb]').

The offline file (`run-<id>.wandb`) is read with W&B's own record type (wandb.proto) from its log format: a 7-byte
header (`:W&B`, a magic number, a version), then LevelDB-style blocks of 32 KiB whose records each carry a 7-byte
header (CRC, length, type: full, first, middle, last)."""
import json
from pathlib import Path
import pytest
from conftest import run_cli
from switch_sae.run import read_config_file

wandb = pytest.importorskip("wandb", reason="wandb is not installed (pip install 'switch_sae[wandb]')")

BLOCK, HEADER = 32 * 1024, 7


def records(path: Path) -> list:
    "The protobuf records of an offline W&B run file."
    from wandb.proto import wandb_internal_pb2 as pb
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, part, out = HEADER, b"", []
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER: pos += room; continue          # a block's tail, too short for a header: padding
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind == 0: pos += room; continue               # zero padding to the end of the block
        part += data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):                                # a full record, or the last piece of one
            r = pb.Record(); r.ParseFromString(part); out.append(r); part = b""
    return out


def _items(items) -> dict:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def logged(run_dir: Path):
    "What an offline W&B run logged: {step: {key: value}}, its summary, and its run id, from the folder `run_dir/wandb`."
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert files, f"no offline W&B run in {run_dir / 'wandb'}"
    history, summary, ids = {}, {}, []
    for f in files:
        for r in records(f):
            kind = r.WhichOneof("record_type")
            if kind == "history":
                h = _items(r.history.item)
                history.setdefault(h.pop("_step"), {}).update(h)
            elif kind == "summary": summary.update(_items(r.summary.update))
            elif kind == "run": ids.append(r.run.run_id)
    return history, summary, ids


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_main_job_logs_the_history(tmp_path, offline):
    "The main job (the tiny LM's activations), a few steps: every key of history.jsonl logged, with its value, at its step."
    out = tmp_path / "run"
    run_cli("train", "--out", str(out), "--steps", "30", "--log-every", "10", "--n-latents", "512", "--batch-size", "256",
            "--n-ctxs", "64", "--eval-tokens", "2048", "--device", "cpu", "--no-progress", "--wandb", "switch-sae-test")
    history, summary, ids = logged(out)
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and sorted(history) == list(range(1, 31))
    windows = 0
    for h in rows:
        w = history[h["step"]]
        for key, v in h.items():
            if key == "step": continue
            if key == "expert_load":
                assert [w[f"expert_load/{e}"] for e in range(len(v))] == pytest.approx(v)
            else: assert w[key] == pytest.approx(v), (h["step"], key)
        if "expert_load" in h:
            windows += 1
            assert w["tokens_per_s"] > 0 and {"lr", "dead_frac", "tokens"} <= set(w)
    assert windows == 3
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("fve", "ce_loss_recovered", "l0", "dead_frac"):
        assert summary[f"final/{key}"] == pytest.approx(metrics[key])
    for plot in ("training", "expert_load", "lm_eval"):      # the report's plots, images at the last step
        assert history[30][f"plots/{plot}/_type"] == "image-file"
        assert list(out.glob(f"wandb/offline-run-*/files/{history[30][f'plots/{plot}/path']}"))
    state = json.loads((out / "wandb.json").read_text())
    assert ids == [state["id"]] and state["step"] == 30
    assert read_config_file(out / "config.toml")["wandb"] == "switch-sae-test"


def test_resume_continues_the_same_run(tmp_path, offline):
    "A run stopped at step 20 and resumed to 40: one W&B run id, each step logged once, the resumed steps after 20."
    out = tmp_path / "run"
    flags = ["--data", "synthetic", "--out", str(out), "--batch-size", "256", "--n-latents", "256", "--n-experts", "4",
             "--d-in", "32", "--eval-tokens", "2048", "--log-every", "10", "--ckpt-every", "10", "--no-progress",
             "--device", "cpu", "--wandb", "switch-sae-test"]
    run_cli("train", *flags, "--steps", "20")
    first = json.loads((out / "wandb.json").read_text())
    run_cli("train", *flags, "--steps", "40", "--resume")
    history, _, ids = logged(out)
    assert ids == [first["id"], first["id"]], "the resumed process logged to the same W&B run"
    assert sorted(history) == list(range(1, 41))
    rows = {json.loads(line)["step"]: json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()}
    assert history[35]["fve"] == pytest.approx(rows[35]["fve"]) and history[40]["expert_load/3"] == pytest.approx(rows[40]["expert_load"][3])
    assert json.loads((out / "wandb.json").read_text()) == dict(first, step=40)

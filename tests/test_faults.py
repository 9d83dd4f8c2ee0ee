"""Fault injection: a run killed at any moment, a damaged checkpoint, a full disk. Nothing may be lost.

The counts (kills survived, runs that lost data) are printed in pytest's summary."""
import json, os, random, resource, signal, subprocess, sys, time
import pytest
import torch
from switch_sae import load_sae
from switch_sae.train import checkpoints

EXE = os.path.join(os.path.dirname(sys.executable), "switch-sae")
ARGS = ["--data", "synthetic", "--steps", "240", "--batch-size", "256", "--log-every", "10", "--ckpt-every", "10",
        "--no-progress", "--device", "cpu", "--eval-tokens", "1024", "--n-latents", "256"]
COUNTS = dict(kills_survived=0, checkpoints_damaged=0, disk_full_runs=0, runs_that_lost_data=0)


def pytest_report_counts():
    return COUNTS


def _run(out, *extra, **kw):
    return subprocess.run([EXE, "train", "--out", str(out), *ARGS, *extra], capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    "One uninterrupted run: the weights every interrupted run must end with."
    out = tmp_path_factory.mktemp("ref") / "run"
    p = _run(out)
    assert p.returncode == 0, p.stderr
    return load_sae(out).state_dict()


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_9_at_a_random_moment_then_resume(tmp_path, reference, seed):
    rng = random.Random(seed)
    out = tmp_path / "run"
    proc = subprocess.Popen([EXE, "train", "--out", str(out), *ARGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # wait until training has started writing checkpoints, then kill at a random moment
    deadline = time.time() + 300
    while not list((out / "checkpoints").glob("step_*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 1.5))
    proc.send_signal(signal.SIGKILL); proc.wait()
    left = sorted(p.name for p in (out / "checkpoints").iterdir()) if (out / "checkpoints").exists() else []
    p = _run(out, "--resume")
    assert p.returncode == 0, p.stderr
    ok = _same(reference, load_sae(out).state_dict())
    COUNTS["kills_survived"] += ok
    COUNTS["runs_that_lost_data"] += not ok
    assert ok, f"resumed weights differ from an uninterrupted run (killed with {left})"
    hist = [json.loads(l)["step"] for l in (out / "history.jsonl").read_text().splitlines()]
    assert hist == list(range(1, 241))


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_trainer_json"])
def test_damaged_newest_checkpoint_falls_back(tmp_path, reference, damage):
    out = tmp_path / "run"
    assert _run(out).returncode == 0
    newest = checkpoints(out)[-1]
    f = newest / "model.safetensors"
    if damage == "truncate": f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    elif damage == "flip":
        raw = bytearray(f.read_bytes()); raw[-100] ^= 0x55; f.write_bytes(bytes(raw))
    else: (newest / "trainer.json").unlink()
    (out / "model.safetensors").unlink()               # the final weights are lost too
    p = _run(out, "--resume")
    assert p.returncode == 0, p.stderr
    assert f"skipping damaged checkpoint {newest.name}" in p.stdout
    assert "resuming from step 230" in p.stdout
    ok = _same(reference, load_sae(out).state_dict())
    COUNTS["checkpoints_damaged"] += 1
    COUNTS["runs_that_lost_data"] += not ok
    assert ok


def _cap_file_size(limit):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the cap fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


def test_full_disk_keeps_the_previous_checkpoint(tmp_path):
    "Writes are capped (RLIMIT_FSIZE) below a checkpoint's size after the first: the run fails loudly and the good one stays."
    out = tmp_path / "run"
    first = tmp_path / "probe"
    assert _run(first, "--steps", "10").returncode == 0
    size = (checkpoints(first)[-1] / "trainer.safetensors").stat().st_size
    # let the output folder fill: run 20 steps normally, then resume under a cap smaller than one trainer file
    assert _run(out, "--steps", "20").returncode == 0
    before = {p.name for p in checkpoints(out)}
    p = subprocess.run([EXE, "train", "--out", str(out), *ARGS, "--steps", "40", "--resume"], capture_output=True, text=True,
                       timeout=600, preexec_fn=_cap_file_size(size // 2))
    assert p.returncode != 0
    assert "could not write a checkpoint" in p.stderr and "--resume" in p.stderr and "Traceback" not in p.stderr, p.stderr
    good = checkpoints(out)
    assert {p.name for p in good} >= before, "a good checkpoint was removed"
    assert not list((out / "checkpoints").glob(".tmp_step_*")), "the half-written checkpoint folder was left behind"
    # the good checkpoints still load, and the run resumes once there is room again
    from switch_sae.train import load_checkpoint
    for g in good: load_checkpoint(g)
    p2 = _run(out, "--steps", "40", "--resume")
    assert p2.returncode == 0, p2.stderr
    COUNTS["disk_full_runs"] += 1

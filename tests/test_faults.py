"""Fault injection: a run killed at any moment, a damaged checkpoint, a full disk. Nothing may be lost.

The counts (kills survived, runs that lost data) are printed in pytest's summary; each is counted once its checks passed.

Bugs planted once (2026-12-06, in switch_sae/train.py, then reverted), and the tests that failed:
- a resume that forgets the optimizer state (`tr.opt.load_state_dict(...)` removed from `restore_trainer_state`):
  every test_kill_9_in_mid_training_then_resume case, test_resume_restores_every_part_of_the_state;
- ... that forgets the scheduler (`tr.sched.load_state_dict(...)` removed): the same tests;
- ... that forgets the RNG (`torch.set_rng_state(...)` removed from `load_checkpoint`): test_resume_restores_every_part_of_the_state
  (nothing in synthetic training draws from torch's global RNG, so the kill tests cannot see it);
- ... that forgets the stream's position (`batches(tr.step)` -> `batches(0)` in `train`): every kill case; the saved
  stream state ignored (`stream.load_state_dict(tr.data_state)` removed): test_resume_restores_every_part_of_the_state."""
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


def _steps(out):
    "The steps of the complete checkpoints in `out` (the kept ones: the two newest)."
    return sorted(int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*")) if (out / "checkpoints").exists() else []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_9_in_mid_training_then_resume(tmp_path, reference, seed):
    """SIGKILL at a random step strictly between the first checkpoint (step 10) and the end (240): the kill waits for
    the checkpoint of a random step from 30 to 180 to appear, then a random part of the time ten steps take (at most
    1.5 times it), so it lands in a step, a checkpoint write or between; it is checked to have happened before the end."""
    rng = random.Random(seed)
    target = rng.randrange(30, 190, 10)
    out = tmp_path / "run"
    proc = subprocess.Popen([EXE, "train", "--out", str(out), *ARGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline, seen = time.time() + 300, {}
    while max(_steps(out), default=0) < target and time.time() < deadline and proc.poll() is None:
        for s in _steps(out): seen.setdefault(s, time.time())
        time.sleep(0.002)
    assert proc.poll() is None, f"the run ended before its checkpoint {target}: {proc.communicate()}"
    seen.setdefault(target, time.time())
    ten_steps = (seen[target] - seen[min(seen)]) / max(1, (target - min(seen)) // 10) if len(seen) > 1 else 0.05
    time.sleep(rng.uniform(0.0, 1.5 * ten_steps))
    proc.send_signal(signal.SIGKILL); proc.wait()
    left = sorted(p.name for p in (out / "checkpoints").iterdir())
    print(f"seed {seed}: killed after the checkpoint of step {target} had appeared, leaving {left}")
    # killed in mid-training: no final weights, no history, no checkpoint of the last steps
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model.safetensors").exists() and not (out / "history.jsonl").exists(), left
    assert target <= max(_steps(out)) < 230, left
    p = _run(out, "--resume")
    assert p.returncode == 0, p.stderr
    assert "resuming from step" in p.stdout, p.stdout
    ok = _same(reference, load_sae(out).state_dict())
    COUNTS["runs_that_lost_data"] += not ok
    assert ok, f"resumed weights differ from an uninterrupted run (killed with {left})"
    hist = [json.loads(l)["step"] for l in (out / "history.jsonl").read_text().splitlines()]
    assert hist == list(range(1, 241))
    COUNTS["kills_survived"] += 1


class RandomStream:
    """Batches drawn from torch's global RNG, shifted by a count that only the stream's saved state knows: a resume is
    exact only if it restores the weights, the optimizer, the scheduler, the RNG and the stream. Raises at batch
    `crash_at` (a crash in mid-run)."""
    def __init__(self, d, batch, crash_at=None): self.d, self.batch, self.crash_at, self.i = d, batch, crash_at, 0
    def __iter__(self): return self
    def __next__(self):
        self.i += 1
        if self.i == self.crash_at: raise RuntimeError("simulated crash")
        return torch.randn(self.batch, self.d) * 2 + 0.05 * self.i
    def state_dict(self): return {"i": self.i}
    def load_state_dict(self, sd): self.i = sd["i"]


def test_resume_restores_every_part_of_the_state(tmp_path, capsys):
    "A run that crashed at step 27 resumes from its checkpoint of step 20 (RNG scrambled) to the uninterrupted run's weights."
    from switch_sae import SwitchSAEConfig
    from switch_sae.train import train
    cfg = SwitchSAEConfig(d_in=16, n_latents=64, n_experts=4, k=4, batch_size=32, steps=40, log_every=5, ckpt_every=10,
                          device="cpu")        # the learning rate decays from step 32 on
    torch.manual_seed(0)
    full = train(cfg, RandomStream(16, 32), out=tmp_path / "a", progress=False)
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, RandomStream(16, 32, crash_at=27), out=tmp_path / "b", progress=False)
    assert _steps(tmp_path / "b") == [10, 20] and not (tmp_path / "b" / "model.safetensors").exists()
    torch.manual_seed(12345)
    resumed = train(cfg, RandomStream(16, 32), out=tmp_path / "b", resume=True, progress=False)
    assert "resuming from step 20" in capsys.readouterr().out
    assert resumed.step == 40 and _same(full.model.state_dict(), resumed.model.state_dict())
    assert [h["step"] for h in resumed.history] == list(range(1, 41))


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
    COUNTS["runs_that_lost_data"] += not ok
    assert ok
    COUNTS["checkpoints_damaged"] += 1


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

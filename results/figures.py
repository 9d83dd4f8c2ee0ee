"""Rerun the commands behind the figures README.md and docs/guides quote, other than the main and synthetic jobs
(docs/figures.py writes those to results/main_job.json), and write what they gave today, with the machine and the
date, to results/figures.md. `make figures` runs both scripts (minutes); with `ALL=1` this one adds the slow ones: the
main job's attribution runs, the torchrun pair, the speed table and the stream-resume timing (about half an hour on a
2-core CPU).

Each figure is taken from the command's own output (metrics.json, a test's printed line), never typed in here."""
import argparse, datetime, json, os, platform, re, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def sh(cmd, cwd=ROOT, timeout=3600):
    "Run `cmd` (a list), return (seconds, stdout + stderr); fail loudly if it fails."
    t = time.time()
    p = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0: raise SystemExit(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return time.time() - t, p.stdout + p.stderr


def machine() -> str:
    from switch_sae.bench import machine as measured_on       # the description `switch-sae bench` records
    m = measured_on("cpu")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{m['cpu']}, {m['cpu_count']} cores, {platform.system()} {platform.release()}, Python {m['python']}, "
            f"torch {m['torch']}; load average {load:.2f} at the start")


def metrics_of(out) -> dict: return json.loads((Path(out) / "metrics.json").read_text())


def train_job(args, keys):
    "A `switch-sae train` run in a temporary folder: the metrics `keys` (and the training seconds)."
    with tempfile.TemporaryDirectory() as d:
        sec, _ = sh([BIN / "switch-sae", "train", "--no-progress", "--out", f"{d}/run", *args])
        m = metrics_of(f"{d}/run")
    got = {k: m[k] for k in keys if k in m}
    if "expert_load" in m and len(m["expert_load"]) > 1: got["max expert load x E"] = round(max(m["expert_load"]) * len(m["expert_load"]), 3)
    return got, f"{sec:.0f} s wall, command included"


def lines(out: str, pattern: str) -> str:
    "The lines of `out` that match `pattern`, once each (pytest's progress dots removed), joined by '; '."
    found = [re.sub(r"^\.+", "", l).strip() for l in out.splitlines() if re.search(pattern, l)]
    return "; ".join(dict.fromkeys(found))


def bad_inputs():
    _, out = sh([BIN / "pytest", "-q", "-p", "no:cacheprovider", "tests/test_bad_input.py",
                 "tests/test_cli.py::test_bad_config_is_refused_before_work"])
    return lines(out, r"^bad inputs:"), "each parametrized case or test counts one (a test may bundle several inputs)"


def distributed():
    _, out = sh([BIN / "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/test_distributed.py", "-k", "same_weights_as_one_process"])
    return lines(out, r"largest relative difference"), ""


def repro():
    _, out = sh([BIN / "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/test_sweep.py", "-k", "recomputed"])
    return lines(out, r"matched|at the rule|better 20M"), "recomputed from results/tiny_lm_repro/sweep.csv by plain arithmetic"


def resume_stream():
    _, out = sh([sys.executable, "benchmarks/resume_stream.py", "2500"])
    return lines(out, r"^N="), ""


def bench_default():
    _, out = sh([BIN / "switch-sae", "bench", "--grid", "default", "--repeats", "9", "--out", "results/bench_default.md"])
    return "see results/bench_default.md (rewritten)", lines(out, r"warn|others")


def torchrun_pair():
    got = {}
    with tempfile.TemporaryDirectory() as d:
        for name, pre in (("one", []), ("two", [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"])):
            cmd = (pre or [sys.executable]) + ["-m", "switch_sae.cli", "train", "--data", "synthetic", "--no-progress", "--out", f"{d}/{name}"]
            sh(cmd)
            m = metrics_of(f"{d}/{name}")
            got[name] = {k: m[k] for k in ("fve", "feature_recovery", "routing_purity") if k in m}
    return got, "one process, then two (gloo)"


CHEAP = {
    "bad inputs": ("pytest tests/test_bad_input.py tests/test_cli.py::test_bad_config_is_refused_before_work", bad_inputs),
    "distributed precision": ("pytest -s tests/test_distributed.py -k same_weights_as_one_process", distributed),
    "reproduction verdicts": ("pytest -s tests/test_sweep.py -k recomputed", repro),
}
SLOW = {
    "main job, lb_alpha 3 on raw activations": ("switch-sae train --no-normalize --lb-alpha 3",
                 lambda: train_job(["--no-normalize", "--lb-alpha", "3"], ("fve", "ce_loss_recovered"))),
    "main job, raw activations": ("switch-sae train --no-normalize",
                 lambda: train_job(["--no-normalize"], ("fve", "ce_loss_recovered"))),
    "torchrun pair": ("switch-sae train --data synthetic, then under torchrun --nproc-per-node 2", torchrun_pair),
    "stream resume": ("python benchmarks/resume_stream.py 2500", resume_stream),
    "speed table": ("switch-sae bench --grid default --repeats 9 --out results/bench_default.md", bench_default),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--all", action="store_true", help="also the slow commands (about half an hour)")
    p.add_argument("--extra", nargs="*", default=[], help="names of slow figures to add to the cheap ones")
    p.add_argument("--only", nargs="*", help="names of the figures to rerun, and no others")
    p.add_argument("--out", default=str(ROOT / "results" / "figures.md"))
    a = p.parse_args(argv)
    jobs = {**CHEAP, **(SLOW if a.all else {k: v for k, v in SLOW.items() if k in a.extra})}
    if a.only: jobs = {k: v for k, v in {**CHEAP, **SLOW}.items() if k in a.only}
    head = [f"# Figures README.md quotes, as rerun on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", "",
            f"Machine: {machine()}.", f"Made by `python results/figures.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
            " (`make figures`); timings depend on the machine and its load.", "",
            "| figure | command | today | note |", "|---|---|---|---|"]
    rows = []
    for name, (cmd, fn) in jobs.items():
        print(f"{name}: {cmd} ...", flush=True)
        got, note = fn()
        print(f"  {got}", flush=True)
        rows.append(f"| {name} | `{cmd}` | {json.dumps(got) if not isinstance(got, str) else got} | {note} |")
    Path(a.out).write_text("\n".join(head + rows) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__": main()

"""The models shipped in `switch_sae/assets` are what their stated commands make today.

Each shipped model states the command that made it: the demo SAE in `demo_sae/made_by.json` (the same command as
`switch_sae.inspector.DEMO_COMMAND` and the one `nbs/15_inspector.ipynb` shows), the tiny LM in `tiny_lm.json`.
The command is parsed by the command line's own parser into the configuration it would train with today (presets,
today's defaults, the width of the model it reads), and the shipped configuration must equal it field by field.
So when a default changes (a new `lb_alpha`, a new field such as `normalize`), these tests fail until the shipped
model is made again by its command: no text can go on describing a model that its command no longer makes.
"""
import functools, json, shlex
from pathlib import Path
import pytest
from safetensors import safe_open

from switch_sae import tiny_lm
from switch_sae.args import given_args
from switch_sae.cli import make_parser
from switch_sae.config import SwitchSAEConfig
from switch_sae.inspector import DEMO_COMMAND, demo_dir
from switch_sae.sources import make_source
from switch_sae.switch import SwitchSAE

ROOT = Path(__file__).resolve().parents[1]
DEMO = demo_dir()
FIX = "make it again with the command it states"


def differences(shipped: dict, today: dict, ignore=()) -> list:
    "The fields where `shipped` (a saved config) differs from `today` (what its command gives now), as readable lines."
    out = [f"{k}: shipped {shipped[k]!r}, today {v!r}" for k, v in today.items() if k in shipped and shipped[k] != v]
    out += [f"{k}: missing from the shipped config (today {today[k]!r})" for k in today if k not in shipped]
    out += [f"{k}: in the shipped config ({shipped[k]!r}) but not a field today" for k in shipped
            if k not in today and k not in ignore]
    return out


def demo_command() -> list:
    return shlex.split(json.loads((DEMO / "made_by.json").read_text())["command"])


@functools.lru_cache(maxsize=None)
def demo_today():
    "The config and the data description that the demo SAE's stated command gives today."
    words = demo_command()
    assert words[:2] == ["switch-sae", "train"], words
    args = make_parser().parse_args(words[1:])
    cfg, src = make_source(args, given_args(SwitchSAEConfig, args))
    return cfg, src.describe()


def test_the_demo_command_is_stated_once():
    "made_by.json, the inspector's DEMO_COMMAND and the notebook that shows the demo SAE state the same command."
    stated = " ".join(demo_command())
    assert stated == DEMO_COMMAND, f"made_by.json says {stated!r}, switch_sae.inspector.DEMO_COMMAND {DEMO_COMMAND!r}"
    nb = (ROOT / "nbs" / "15_inspector.ipynb").read_text()
    assert json.dumps(stated)[1:-1] in nb, f"nbs/15_inspector.ipynb does not show the command {stated!r}"


def test_demo_sae_config_is_what_its_command_makes_today():
    cfg, _ = demo_today()
    shipped = json.loads((DEMO / "cfg.json").read_text())
    diff = differences(shipped, cfg.to_dict(), ignore=("switch_sae_version",))
    assert not diff, (f"the demo SAE ({DEMO}) is not what `{DEMO_COMMAND}` makes today; {FIX} "
                      f"(nbs/15_inspector.ipynb):\n" + "\n".join(diff))


def test_demo_sae_data_is_what_its_command_reads_today():
    _, described = demo_today()
    shipped = json.loads((DEMO / "data.json").read_text())
    assert shipped == described, (f"the demo SAE's data.json differs from what `{DEMO_COMMAND}` reads today; {FIX}:\n"
                                  f"shipped {shipped}\ntoday   {described}")


def test_demo_sae_weights_are_those_of_todays_model():
    "Every tensor a fresh model of the demo's config holds (act_scale included), with its shape, and no other."
    cfg, _ = demo_today()
    want = {k: tuple(v.shape) for k, v in SwitchSAE(SwitchSAEConfig(**{**cfg.to_dict(), "device": "cpu"})).state_dict().items()}
    with safe_open(str(DEMO / "model.safetensors"), "pt") as f:
        have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert have == want, f"the demo SAE's tensors differ from today's model's; {FIX}: shipped {have}, today {want}"


def tiny_lm_today(command: str) -> dict:
    "The config that the tiny LM's stated command (`python -m switch_sae.tiny_lm ...`) trains with today."
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "switch_sae.tiny_lm"], words
    args = vars(tiny_lm._parser().parse_args(words[3:]))
    for k in ("out", "log_every", "eval_contexts"): args.pop(k)
    return vars(tiny_lm.TinyLMConfig(**args))


def test_tiny_lm_config_is_what_its_command_makes_today():
    facts = json.loads((tiny_lm.assets_dir() / "tiny_lm.json").read_text())
    diff = differences(facts["config"], tiny_lm_today(facts["command"]))
    assert not diff, (f"the shipped tiny LM is not what `{facts['command']}` makes today; {FIX} "
                      "(nbs/10_tiny_lm.ipynb):\n" + "\n".join(diff))


@pytest.mark.parametrize("field,value", [("lb_alpha", 3.0), ("normalize", False)])
def test_a_stale_field_is_caught(field, value):
    "A shipped config made with an older default of a field the command does not set is reported, by name."
    cfg, _ = demo_today()
    today = cfg.to_dict()
    assert field not in given_args(SwitchSAEConfig, make_parser().parse_args(demo_command()[1:]))
    stale = {**today, field: value}
    assert differences(stale, today) == [f"{field}: shipped {value!r}, today {today[field]!r}"]
    old = {k: v for k, v in today.items() if k != field}                    # made before the field existed
    assert differences(old, today) == [f"{field}: missing from the shipped config (today {today[field]!r})"]
    assert differences(today, today) == []


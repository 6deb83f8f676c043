"""tokenswarm's locustfile, run by a stock Locust master:

    locust -f locustfiles/llm.py --master --host http://llm-server:8000

The master never sends LLM requests: tokenswarm's Rust workers do. This file
defines one Locust user class per scenario of the scenarios YAML (so the
web UI, the user ratio and `spawn.user_classes_count` use scenario names),
and loads `tokenswarm_master`, which ships the test definition to the
workers and merges and shows their LLM metrics (LLM tab, /llm/* routes,
`<csv>_llm.csv`, `<html stem>_llm.html`). See locustfiles/README.md.

With `--llm-capacity START:STEP:MAX:HOLD_S` (or LOCUST_LLM_CAPACITY) this
file also defines the capacity-search load shape (`tokenswarm_master
.capacity`): Locust picks a shape class when it imports the locustfile,
before options are parsed, so the choice is read from the command line here.
"""

import logging
import os
import sys

from locust import User, task
from locust.exception import StopUser

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tokenswarm_master import config, plugin  # noqa: E402

DEFAULT_SCENARIOS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scenarios.yaml")


def option_from_argv(option, env_var, argv=None, environ=None):
    """An option's value, found before Locust parses options (user and shape
    classes must exist when the locustfile is imported, which is earlier)."""
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    for i, arg in enumerate(argv):
        if arg == option and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return environ.get(env_var) or None


def scenarios_path_from_argv(argv=None, environ=None):
    """The scenarios file (`--llm-scenarios`, default next to this file)."""
    return option_from_argv("--llm-scenarios", "LOCUST_LLM_SCENARIOS", argv, environ) or DEFAULT_SCENARIOS


def _workers_only(self):
    """Only tokenswarm (Rust) workers run scenarios; a Python user stops."""
    logging.getLogger("tokenswarm").error(
        "tokenswarm scenarios run only on tokenswarm workers; start locust with --master and connect them"
    )
    raise StopUser()


def define_user_classes(doc):
    """One abstract-free User subclass per scenario, weight = scenario weight."""
    classes = {}
    for s in doc.get("scenarios") or []:
        if not isinstance(s, dict) or not config.is_valid_name(s.get("name")):
            continue  # validation at start reports it with the field and value
        classes[s["name"]] = type(s["name"], (User,), {
            "__module__": __name__,
            "__doc__": f"tokenswarm scenario {s['name']} ({s.get('provider')}, model {s.get('model')})",
            "weight": s.get("weight", 1) if isinstance(s.get("weight", 1), int) else 1,
            "tasks": [task(_workers_only)],
        })
    return classes


SCENARIOS_PATH = scenarios_path_from_argv()
try:
    _doc = config.load_yaml(SCENARIOS_PATH)
except config.ConfigError as e:
    sys.exit(f"tokenswarm: {e}")
_classes = define_user_classes(_doc)
if not _classes:
    sys.exit(f"tokenswarm: {SCENARIOS_PATH}: no usable scenarios (each needs a `name` of letters, digits and _)")
globals().update(_classes)

STATE = plugin.setup(SCENARIOS_PATH, list(_classes))

if option_from_argv("--llm-capacity", "LOCUST_LLM_CAPACITY"):
    from tokenswarm_master.capacity import CapacityShape  # noqa: E402, F401  (Locust picks it up)

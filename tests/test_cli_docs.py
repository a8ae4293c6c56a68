"""docs/cli.md is the CLI's own --help (scripts/gen_cli_docs.py); a stale copy fails here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_cli_docs", mod)
    spec.loader.exec_module(mod)
    return mod


def test_cli_reference_is_current(capsys):
    rc = _gen().main(["--check"])
    assert rc == 0, capsys.readouterr().err + "\n(run scripts/gen_cli_docs.py and commit docs/cli.md)"


def test_staleness_names_the_command():
    gen = _gen()
    secs = {"edgekit": "Usage: edgekit\n", "edgekit plan": "Usage: edgekit plan\n", "edgekit old": "x\n"}
    doc = gen.render(secs)
    assert gen.parse(doc)["edgekit plan"] == "\n```text\nUsage: edgekit plan\n```\n\n"
    assert gen.stale(doc, doc) == []
    changed = {**secs, "edgekit plan": "Usage: edgekit plan [--new]\n", "edgekit new": "y\n"}
    del changed["edgekit old"]
    assert gen.stale(doc, gen.render(changed)) == [
        "edgekit plan: help changed",
        "edgekit new: new command, not documented",
        "edgekit old: documented but no longer a command",
    ]

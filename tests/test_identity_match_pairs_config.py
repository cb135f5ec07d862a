"""The matcher's dbt Python model receives the config keys its yml sets.

dbt hands a Python model only the config keys whose ``dbt.config.get`` call
its parser finds (``dbt.parser.models.PythonParseVisitor``); a call inside
``x or default`` is not found, and the model silently runs on the code
default. This once kept ``candidate_probability`` at 0.5 whatever the yml said.
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import yaml
from dbt.parser.models import PythonParseVisitor

IDENTITY = Path(__file__).resolve().parents[1] / "dbt_project/models/intermediate/identity"


def _keys_dbt_sees(path: Path) -> set[str]:
    visitor = PythonParseVisitor(SimpleNamespace(original_file_path=str(path)))
    visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
    return {args[0] for func, args, _ in visitor.dbt_function_calls if func == "get" and args}


def test_every_configured_key_reaches_the_match_pairs_model() -> None:
    models = yaml.safe_load((IDENTITY / "_int_identity__models.yml").read_text(encoding="utf-8"))
    [node] = [m for m in models["models"] if m["name"] == "int_contact_match_pairs"]
    configured = set(node["config"]) - {"materialized"}
    assert {"candidate_probability", "matcher_memory_limit"} <= configured
    assert configured <= _keys_dbt_sees(IDENTITY / "int_contact_match_pairs.py")


def test_a_get_inside_or_is_invisible_to_dbt(tmp_path: Path) -> None:
    # the pattern this test guards against
    model = tmp_path / "m.py"
    model.write_text(
        'def model(dbt, session):\n'
        '    a = float(dbt.config.get("seen", 0.5))\n'
        '    b = float(dbt.config.get("unseen") or 0.5)\n'
        '    return a + b\n',
        encoding="utf-8",
    )
    assert _keys_dbt_sees(model) == {"seen"}

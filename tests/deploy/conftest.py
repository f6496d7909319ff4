"""Readers for the deploy files: YAML through PyYAML's safe loader, JSON Schema through jsonschema (dev
dependencies), exposed as fixtures (test modules cannot import each other under ``--import-mode=importlib``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
import yaml

YamlLoader = Callable[[str, str], Any]
SchemaChecker = Callable[[Any, dict[str, Any]], list[str]]


def load_yaml_text(text: str, name: str = "<yaml>") -> Any:
    """``text`` parsed as one YAML document; a syntax error names ``name`` and the line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{name}: {exc}") from exc


def schema_errors(instance: Any, schema: dict[str, Any]) -> list[str]:
    """Every violation of ``schema`` by ``instance``, as ``path: message`` lines (empty when valid)."""
    # the Compose spec names its draft as "http://json-schema.org/draft/2019-09/schema#", which jsonschema's
    # lookup does not know (it knows the https form): choose by what the schema says
    draft = str(schema.get("$schema", ""))
    validator_class = (
        jsonschema.Draft201909Validator if "2019-09" in draft else jsonschema.validators.validator_for(schema)
    )
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    ]


@pytest.fixture
def load_yaml() -> YamlLoader:
    """``load_yaml(text, name)``: :func:`load_yaml_text`."""
    return load_yaml_text


@pytest.fixture
def check_schema() -> SchemaChecker:
    """``check_schema(instance, schema)``: :func:`schema_errors`."""
    return schema_errors

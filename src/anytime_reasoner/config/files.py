"""Reading a YAML configuration file (``--config FILE``, the shipped recipes and presets).

YAML 1.1 reads ``1:30:1`` as the base-60 integer 5401; the loader here drops the sexagesimal
number forms, so a budget grid or a cap schedule written in a file stays a string for its field
parser.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from anytime_reasoner.config.base import ConfigError


class _YamlLoader(yaml.SafeLoader):
    """YAML 1.1 without base-60 integers: a budget grid such as ``1:30:1`` stays a string."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if not (tag.endswith(":int") or tag.endswith(":float"))]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, _pattern in (
    ("tag:yaml.org,2002:int", r"^[-+]?(?:0|[1-9][0-9_]*|0x[0-9a-fA-F_]+|0o?[0-7_]+|0b[01_]+)$"),
    (
        "tag:yaml.org,2002:float",
        r"^[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?$|^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$",
    ),
):
    _YamlLoader.add_implicit_resolver(_tag, re.compile(_pattern), list("-+0123456789."))


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YamlLoader)
    except FileNotFoundError:
        raise ConfigError(f"--config: file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"--config: {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold a mapping of keys to values")
    return data

"""Loading policy files (TOML) into the pure `Policy` model, with errors that name the field."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import ValidationError

from models.policy import Policy


class PolicyError(ValueError):
    pass


def load_policy(path: Path) -> Policy:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: {exc}") from None
    try:
        return Policy.model_validate(document)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in error["loc"])
        raise PolicyError(f"{path}: {field}: {error['msg']}") from None

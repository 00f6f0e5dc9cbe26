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


def load_policies(paths: list[Path]) -> Policy:
    """Several policy files, one per version (4.2): the newest `effective_from` is in force,
    the older ones judge orders created before it (4.1). No code change, no restart but the
    worker's to load a new one."""
    if not paths:
        raise PolicyError("no policy file given")
    versions = sorted((load_policy(path) for path in paths), key=lambda p: p.effective_from)
    newest = versions[-1]
    for older in versions[:-1]:
        newest = newest.superseding(older)
    return newest

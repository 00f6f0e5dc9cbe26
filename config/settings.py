"""Runtime settings, read from `SLATIMER_*` environment variables (pydantic-settings).

With nothing set, slatimer runs on embedded defaults: a SQLite file store and the bundled policy.
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

POLICY_DIR = Path(__file__).parent / "policies"
DEFAULT_POLICY = POLICY_DIR / "default.toml"
DEMO_POLICY = POLICY_DIR / "demo.toml"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLATIMER_", env_file=None, extra="ignore")

    database_url: str = "sqlite:///slatimer.db"
    """SQLAlchemy URL; e.g. postgresql+psycopg://user@host:5432/slatimer in production."""
    policy_file: Path = DEFAULT_POLICY
    log_level: str = "INFO"
    log_json: bool = True

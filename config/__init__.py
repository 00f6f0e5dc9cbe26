"""Configuration: settings from `SLATIMER_*` environment variables and the policy files."""

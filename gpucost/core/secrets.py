"""Where a secret lives, and reading it when a source runs.

A secret field in the config is ``{ env = "VAR" }`` or ``{ file = "/path" }``; it resolves to a
:class:`pydantic.SecretStr`, whose repr and str are masked. This is the floor's only reader of
the environment: a stage resolves its own secret when it runs, so a config can be checked without
the secret present.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from gpucost.core.errors import ConfigError


class SecretRef(BaseModel):
    """Where a secret lives: an environment variable or a file (Kubernetes/systemd secrets)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret needs exactly one of `env` or `file`")
        return self

    def resolve(self, environ: Mapping[str, str] | None = None) -> SecretStr:
        """Read the secret now; a missing variable or file is a ConfigError naming it."""
        environ = os.environ if environ is None else environ
        if self.env is not None:
            if not environ.get(self.env):
                raise ConfigError(f"secret environment variable {self.env} is not set")
            return SecretStr(environ[self.env])
        assert self.file is not None
        try:
            return SecretStr(Path(self.file).read_text(encoding="utf-8").strip())
        except OSError as error:
            raise ConfigError(f"secret file {self.file} cannot be read: {error.strerror}") from None

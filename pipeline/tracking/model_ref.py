"""Which registered model: `NAME@alias`, `NAME/version` or `NAME` (its `@champion`), and the
one concrete version it names in a registry now (`recur predict`, `recur generate`, `recur
lineage` and batch inference resolve it once, before anything runs)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import UserError
from pipeline.tracking.redact import redact_text

DEFAULT_ALIAS = "champion"


class ModelNotFound(UserError, LookupError):
    """The registry has no such model or version; the message lists what it has."""


class ModelRefError(UserError, ValueError):
    """A model reference that is not NAME@alias, NAME/version or NAME."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """NAME@alias, NAME/version, or NAME alone (its @champion)."""
        text = text.strip()
        if text.startswith("models:/"):
            text = text[len("models:/"):]
        if "@" in text:
            name, _, alias = text.partition("@")
            spec = cls(name, alias=alias)
        elif "/" in text:
            name, _, version = text.partition("/")
            spec = cls(name, version=version)
        else:
            spec = cls(text, alias=DEFAULT_ALIAS)
        if not spec.name or spec.alias == "" or spec.version == "" or "/" in (spec.alias or ""):
            raise ModelRefError(f"model {text!r}: expected NAME@alias, NAME/version or NAME")
        if spec.version is not None and not spec.version.isdigit():
            raise ModelRefError(f"model {text!r}: the version must be a number")
        return spec

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}/{self.version}"


def resolve_version(spec: ModelSpec, tracking_uri: str) -> tuple[str, str | None]:
    """(version, run id) of `spec` in the registry at `tracking_uri`."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)  # the registry: MLFLOW_REGISTRY_URI, else the tracking URI
    try:
        if spec.alias is not None:
            mv = client.get_model_version_by_alias(spec.name, spec.alias)
        else:
            mv = client.get_model_version(spec.name, spec.version)
    except MlflowException as exc:
        raise ModelNotFound(f"no registered model {spec} at {redact_text(client._registry_uri)}: "
                            f"{exc.message}") from None
    return str(mv.version), mv.run_id

"""Keep secrets out of what recur writes: MLflow params, tags and artifacts, and its log output.

Two rules. A value whose *name* looks like a secret (`password`, `api_key`, `AWS_SECRET_ACCESS_KEY`,
`RAY_AUTH_TOKEN`, ...) is replaced by `***`. And in any text, the values of secret-named
environment variables set in this process, and the password of a URL (`https://user:pw@host`),
are replaced by `***` wherever they appear, so a secret copied into a path, an error message or
a URI is caught too.

Names are split into words (`_`, `-`, `.`, camelCase), so `tokenizer`, `max_tokens` or recur's
own `data.source.token_column` are not secrets, while `token`, `GITHUB_TOKEN` and `access_token`
are. Nothing here runs at import time; `install_log_redaction` is called by the entry points.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"

# Credential variables of the tools recur talks to, masked even if the name rules below change.
CREDENTIAL_ENV = (
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "RAY_AUTH_TOKEN",
    "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_CONNECTION_STRING", "DATABRICKS_TOKEN", "HF_TOKEN",
)
# A name containing one of these words is a secret ...
SECRET_WORDS = frozenset({
    "password", "passwd", "passphrase", "secret", "secrets", "credential", "credentials",
    "auth", "authorization", "apikey", "accesskey", "privatekey", "secretkey", "signature", "sig",
})
# ... or these two words next to each other (api_key, session_token, ...) ...
SECRET_PAIRS = frozenset({
    ("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"), ("account", "key"),
    ("access", "token"), ("session", "token"), ("refresh", "token"), ("id", "token"), ("auth", "token"),
    ("client", "secret"), ("connection", "string"),
})
# ... or ends in one of these after another word: DB_PASS, SMTP_PWD, GITHUB_PAT (a personal
# access token); alone they are something else (PWD is the shell's working directory) ...
SECRET_SUFFIXES = frozenset({"pass", "pwd", "pat", "pw"})
# ... or ends in "token" (GITHUB_TOKEN, token), unless the token is a unit of text: max_token,
# pad_token. `tokens`, `tokenizer` and `token_column` are never secrets.
TEXT_TOKEN_QUALIFIERS = frozenset({
    "max", "min", "num", "n", "pad", "unk", "bos", "eos", "sep", "cls", "mask", "start", "end",
    "special", "new", "per", "first", "last", "next", "prev", "stop",
})
# Settings *about* a secret are not the secret: RAY_AUTH_MODE=token, auth.enabled, token_path.
SETTING_SUFFIXES = frozenset({
    "mode", "enabled", "disabled", "type", "method", "kind", "provider", "file", "path", "dir",
    "url", "uri", "host", "port", "user", "username", "expiry", "expires", "ttl", "length", "size",
    "count", "column", "level", "name",
})
# Env values too common to mask everywhere they appear in a text (AUTH_ENABLED=true).
_NOT_SECRET_VALUES = frozenset({"true", "false", "none", "null", "disabled", "enabled"})
_MIN_SECRET_LENGTH = 4

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
# scheme://user:password@host -> scheme://user:***@host. The password runs to the last `@` before
# the host, so one holding `/`, `#`, `?` or `@` unencoded is masked whole; a port and a path
# (`http://host:5000/x@y`) are not a password.
_URL_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*):(?!\d{1,5}[/?#])"
                           r"(?P<pw>[^\s]+)@(?=[A-Za-z0-9\[][^@\s]*(?:\s|$))")
# name=value (query strings, env dumps, `--set`): masked when the name is a secret
_ASSIGNMENT = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)=(?P<value>\"[^\"]*\"|'[^']*'|[^\s&,;\"']+)")
# an HTTP bearer token (a word with a digit or punctuation, so "Bearer authentication" stays)
_BEARER = re.compile(r"(?i)\b(bearer)\s+(?=[A-Za-z0-9._~+/=-]*[0-9._~+/=-])[A-Za-z0-9._~+/=-]{8,}")


def _has_value(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and value == "")


def _words(name: str) -> list[str]:
    return [w for w in _WORD_SPLIT.split(_CAMEL.sub("_", name).lower()) if w]


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """True when a config key, tag or environment variable name looks like it holds a secret.

    Case-insensitive, on words: `MLFLOW_TRACKING_PASSWORD`, `apiKey`, `tracking.auth_token`,
    `X-Amz-Signature` are; `tokenizer`, `max_tokens`, `data.source.token_column`, `RAY_AUTH_MODE`
    are not.
    """
    if name.upper() in CREDENTIAL_ENV:
        return True
    words = _words(name)
    if not words or words[-1] in SETTING_SUFFIXES:
        return False
    if any(w in SECRET_WORDS for w in words) or any(pair in SECRET_PAIRS for pair in zip(words, words[1:])):
        return True
    if any(w.endswith(("password", "passwd")) for w in words):  # PGPASSWORD, DBPASSWORD
        return True
    if len(words) > 1 and words[-1] in SECRET_SUFFIXES:  # DB_PASS, SMTP_PWD, GITHUB_PAT (not PWD)
        return True
    return words[-1] == "token" and (len(words) == 1 or words[-2] not in TEXT_TOKEN_QUALIFIERS)


def secret_env_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of the secret-named variables of `environ` (default os.environ), longest first."""
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items()
              if v and len(v) >= _MIN_SECRET_LENGTH and v.lower() not in _NOT_SECRET_VALUES
              and is_secret_name(k)}
    return sorted(values, key=len, reverse=True)


def redact_text(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` with secrets replaced by `***`: the values of secret-named environment variables,
    URL passwords (`https://user:***@host`), `Bearer` tokens and `secret_name=value` assignments."""
    if not text:
        return text
    for value in secret_env_values(environ):
        if value in text:
            text = text.replace(value, MASK)
    text = _URL_USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _ASSIGNMENT.sub(
        lambda m: f"{m['name']}={MASK}" if is_secret_name(m["name"]) else m[0], text)


def redact_value(name: str, value: Any) -> Any:
    """One named value (an MLflow param or tag): `***` for a secret name, strings through
    `redact_text`, anything else unchanged."""
    if is_secret_name(name) and _has_value(value):
        return MASK
    return redact_text(value) if isinstance(value, str) else value


def redact_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """MLflow params or tags with `redact_value` applied to each (dotted keys are names too)."""
    return {k: redact_value(k, v) for k, v in params.items()}


def redact_mapping(data: Any) -> Any:
    """A copy of nested dicts/lists (config, JSON artifacts): values under secret-named keys
    become `***` (a whole sub-tree too), and every string goes through `redact_text`."""
    if isinstance(data, Mapping):
        return {k: (MASK if isinstance(k, str) and is_secret_name(k) and _has_value(data[k])
                    else redact_mapping(data[k])) for k in data}
    if isinstance(data, (list, tuple)):
        return type(data)(redact_mapping(v) for v in data)
    if isinstance(data, str):
        return redact_text(data)
    return data


class RedactingFilter(logging.Filter):
    """Applies `redact_text` to a record's formatted message and traceback (install on handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler's own error reporting
            return True
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def install_log_redaction(loggers: Iterable[logging.Logger] | None = None) -> None:
    """Add a RedactingFilter to every handler of `loggers` (default: the root logger and every
    logger that has its own handlers, e.g. Ray's and MLflow's); idempotent."""
    if loggers is None:
        known = [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
        loggers = [logging.getLogger(), *known]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.NullHandler):
                continue
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())


def redacting_excepthook(exc_type, exc, tb) -> None:
    """sys.excepthook that prints an uncaught exception's traceback with `redact_text` applied."""
    import traceback

    sys.stderr.write(redact_text("".join(traceback.format_exception(exc_type, exc, tb))))

"""The configuration reference of the docs site, generated from the config schema so that it
cannot drift from it.

    python -m pipeline.docs_reference            # writes docs/configuration-reference.md
    python -m pipeline.docs_reference --check    # exit 1 when that file is not what it would write

One table per section of `RecurConfig` (and per nested section: `data.source`, `train.schedule`,
`tune.scheduler`): key, type with its bounds, default, and the field's `description`, all read
from pydantic's `model_fields`; the section's class docstring goes above its table. A key without
a description gets none here either: write it in `pipeline/config/`, never in this page.
`tests/test_docs.py` fails when the committed page is not what `render()` returns now.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from pipeline import config

OUTPUT = Path("docs") / "configuration-reference.md"
COMMAND = "python -m pipeline.docs_reference"


def _section_class(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (`X` or `X | None`), or None for a plain value."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (typing.Union, types.UnionType):
        found = [a for a in get_args(annotation) if inspect.isclass(a) and issubclass(a, BaseModel)]
        if found:
            return found[0]
        if any(a is config.SourceConfig for a in get_args(annotation)):
            return _SourceKeys  # `data.source`: one model per format
    return None


class _SourceKeys(BaseModel):
    """Where raw data comes from; imported into the canonical dataset at `data.root`. `format` picks
    the importer, and with it which other keys apply (the tables after this one)."""

    format: Annotated[Literal[tuple(config.SOURCE_MODELS)],  # type: ignore[valid-type]
                      config.SOURCE_MODELS["ts"].model_fields["format"]]
    paths: Annotated[list[str], config.SOURCE_MODELS["ts"].model_fields["paths"]]  # every format's


def _anchor(dotted: str) -> str:
    """The heading id MkDocs and GitHub both give `## data.source`: `datasource`."""
    return dotted.replace(".", "").lower()


def _type(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if origin is Literal:
        return ", ".join(f"`{_yaml(v)}`" for v in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_type(a) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("null")
        return " or ".join(parts)
    if origin is list:
        return f"list of {_type(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {_type(args[0])} to {_type(args[1])}" if args else "mapping"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


_BOUNDS = ((annotated_types.Ge, "ge", ">="), (annotated_types.Gt, "gt", ">"),
           (annotated_types.Le, "le", "<="), (annotated_types.Lt, "lt", "<"))


def _bounds(field: FieldInfo) -> list[str]:
    unit = "items" if get_origin(field.annotation) in (list, dict) else "characters"
    out = []
    for item in field.metadata:
        for kind, attr, sign in _BOUNDS:
            if isinstance(item, kind):
                out.append(f"{sign} {_yaml(getattr(item, attr))}")
        if isinstance(item, annotated_types.MinLen):
            out.append(f"at least {item.min_length} {unit}")
        if isinstance(item, annotated_types.MaxLen):
            out.append(f"at most {item.max_length} {unit}")
    return out


def _yaml(value: Any) -> str:
    """A value as it is written in a config file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return str(value)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell, on GitHub and in MkDocs alike."""
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text.replace("|", "\\|").replace("\n", " "))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"
    return f"`{_yaml(value)}`"


def _sections(prefix: str, model: type[BaseModel]) -> list[tuple[str, type[BaseModel]]]:
    """(dotted name, model) of this section and, after it, each nested one, depth first."""
    out = [(prefix, model)]
    for name, field in model.model_fields.items():
        nested = _section_class(field.annotation)
        if nested is not None:
            out += _sections(f"{prefix}.{name}", nested)
    return out


def _table(prefix: str, model: type[BaseModel], fields: dict[str, FieldInfo] | None = None) -> list[str]:
    lines = []
    doc = model.__dict__.get("__doc__")
    if doc:
        lines += [inspect.cleandoc(doc), ""]
    lines += ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for name, field in (fields or model.model_fields).items():
        key = f"{prefix}.{name}"
        nested = _section_class(field.annotation)
        kind = ", ".join([_type(field.annotation), *_bounds(field)])
        default = _default(field)
        if nested is not None:
            kind = _type(field.annotation)
            if default != "`null`":
                default = "its keys' defaults"
        description = field.description or ""
        if nested is not None:
            description = f"{description}; its keys: [{key}](#{_anchor(key)})".lstrip("; ")
        lines.append(f"| `{key}` | {_cell(kind)} | {_cell(default)} | {_cell(description)} |")
    return lines


def _formats() -> list[str]:
    lines = ["Which `data.source` keys apply to which format (any other key set to a value besides its "
             "default is an error):", "", "| format | task | keys |", "| --- | --- | --- |"]
    for fmt, options in config.FORMAT_OPTIONS.items():
        keys = ", ".join(f"`{o}`" for o in options)
        lines.append(f"| `{fmt}` | {', '.join(config.FORMAT_TASKS[fmt])} | {keys} |")
    return lines


def render() -> str:
    """The whole page, as `docs/configuration-reference.md` must hold it."""
    root = config.RecurConfig
    settings = root.model_config
    rules = []
    if settings.get("extra") == "forbid":
        rules.append("an unknown key is an error naming the key and the file it came from")
    if settings.get("allow_inf_nan") is False:
        rules.append("every float must be finite (`.inf` and `.nan` are refused)")
    sections = _sections("", root)[1:]
    lines = [
        f"<!-- generated by `{COMMAND}` from pipeline/config/: do not edit by hand -->",
        "",
        "# Configuration reference",
        "",
        "Every key of a recur config, section by section, generated from the pydantic models in "
        f"`pipeline/config/` by `{COMMAND}` (`tests/test_docs.py` fails when this page is not what it "
        "generates). [Configuration](configuration.md) explains how config files merge and which keys "
        "matter most; `recur config show CONFIG` prints a resolved config and `recur config schema` the "
        "JSON schema.",
        "",
    ]
    if rules:
        lines += ["In every section " + "; ".join(rules) + ".", ""]
    lines += ["Sections: " + ", ".join(f"[{name[1:]}](#{_anchor(name[1:])})" for name, _ in sections) + ".",
              ""]
    for name, model in sections:
        dotted = name[1:]
        lines += [f"## {dotted}", ""] + _table(dotted, model) + [""]
        if model is _SourceKeys:
            lines += _formats() + [""]
            for fmt, source in config.SOURCE_MODELS.items():
                keys = {k: f for k, f in source.model_fields.items() if k not in ("format", "paths")}
                if keys:
                    lines += [f"### data.source with format: {fmt}", ""] + _table(dotted, source, keys) + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"{COMMAND}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUTPUT, help=f"the page to write (default {OUTPUT})")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the page differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

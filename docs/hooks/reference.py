"""mkdocs hook: the reference pages' tables, built from the code at every build.

A reference page is an ordinary markdown file in docs/ (so it is in the nav) holding a marker
such as `<!-- generated: job-spec -->`; `on_page_markdown` replaces each marker with markdown
built from:

- `job-spec`: `models.spec.JobSpec` and its parts, from their JSON schemas (`model_json_schema`);
- `resolved-spec`: what the minimal spec becomes once validated (the recipe filled in);
- `objectives`: `models.objectives.PARAMS` and `models.objectives.registry.describe`;
- `api`: `service.main.create_app().openapi()`, with the scope each route's router requires;
- `settings`: `gan_platform.settings.Settings`, grouped by the `# --- group ---` comments of its
  source.

All four are torch-free: the build never loads PyTorch (a warning if it does, which
`mkdocs build --strict` turns into a failure). So is a field of the spec or a setting without a
description.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

log = logging.getLogger("mkdocs.plugins.reference")
# A marker stands alone on its line (a mention of one inside a sentence is left alone).
MARKER = re.compile(r"^[ \t]*<!--\s*generated:\s*([a-z-]+)\s*-->[ \t]*$", re.MULTILINE)

# The job spec's parts, in the order the page shows them: (heading, class name in models.spec).
SPEC_PARTS = ("JobSpec", "ArchitectureSpec", "NetSpec", "CriticSpec", "DatasetSpec",
              "TrainingSpec")
MINIMAL_SPEC = {"objective": "wgan-gp", "dataset": {"uri": "builtin://8gaussians"}}
TAG_ORDER = ("jobs", "models", "reports", "datasets", "objectives", "health")
JOB_SPEC_PAGE = "job-spec.md"  # the API page links the request body here (same folder)


# --- markdown helpers ---------------------------------------------------------------------------


def cell(text: object) -> str:
    """Text safe in a table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def code(value: object) -> str:
    text = value if isinstance(value, str) and value else json.dumps(value)
    return f"`{text}`" if "`" not in text else f"`` {text} ``"


def table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def anchor(name: str) -> str:
    """The id mkdocs' toc gives a heading made of `name` alone."""
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-")


def number(value: float | int) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) and value >= 2**20 and value & (value - 1) == 0:
        return f"2^{value.bit_length() - 1}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}".replace(",", " ")
    return f"{value:g}" if isinstance(value, float) else str(value)


def size_hint(name: str, value: Any) -> str:
    """A reading of a byte count or a duration, for the settings' defaults."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return ""
    if name.endswith("_BYTES"):
        for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if value >= scale:
                return f" ({value / scale:g} {unit})"
    if name.endswith("_SECONDS") and value >= 3600:
        days, hours = value / 86400, value / 3600
        return f" ({days:g} days)" if days >= 1 and days == int(days) else f" ({hours:g} h)"
    return ""


# --- JSON schema -> words -------------------------------------------------------------------------

Linker = Callable[[str], str]


def type_of(schema: dict[str, Any], link: Linker) -> str:
    """A JSON schema's type in words: `integer`, `null or list of string`, a link to a model."""
    if "$ref" in schema:
        return link(schema["$ref"].rsplit("/", 1)[-1])
    for union in ("anyOf", "oneOf"):
        if union in schema:
            if "discriminator" in schema:
                return "one of " + ", ".join(type_of(s, link) for s in schema[union])
            parts = [type_of(s, link) for s in schema[union]]
            ordered = [p for p in parts if p != "null"] + (["null"] if "null" in parts else [])
            return " or ".join(dict.fromkeys(ordered))
    if "const" in schema:
        return code(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(code(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        if "prefixItems" in schema:
            return "[" + ", ".join(type_of(s, link) for s in schema["prefixItems"]) + "]"
        return "list of " + type_of(schema.get("items", {}), link)
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            return "map of string to " + type_of(extra, link)
        return "object"
    if kind == "string" and "format" in schema:
        return f"string ({schema['format']})"
    if isinstance(kind, list):
        return " or ".join(kind)
    return kind or "any"


BOUNDS = (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"),
          ("exclusiveMaximum", "<"), ("minLength", "length ≥"), ("maxLength", "length ≤"),
          ("minItems", "items ≥"), ("maxItems", "items ≤"))


def bounds_of(schema: dict[str, Any]) -> str:
    found = []
    for branch in [schema, *schema.get("anyOf", []), *schema.get("prefixItems", [])]:
        for key, sign in BOUNDS:
            if key in branch and not ("prefixItems" in branch and "Items" in key):
                found.append(f"{sign} {number(branch[key])}")
    return ", ".join(dict.fromkeys(found))


def default_of(model: Any, name: str, schema: dict[str, Any]) -> str:
    """The field's default as the JSON a spec would hold; `required` when it has none."""
    if "default" in schema:
        return code(schema["default"])
    field = model.model_fields.get(name) if model is not None else None
    if field is None or field.is_required():
        return "required"
    factory = field.default_factory
    if factory is None:
        return code(field.get_default())
    if inspect.isclass(factory) and hasattr(factory, "model_fields"):
        return f"the defaults of [{factory.__name__}](#{anchor(factory.__name__)})"
    if factory.__name__ == "<lambda>" or factory in (list, dict):
        return code(json.loads(json.dumps(factory(), default=str)))
    return "computed at start-up (see its description)"


def fields_table(model: Any, link: Linker, owner: str) -> str:
    schema = model.model_json_schema(ref_template="#/$defs/{model}")
    rows = []
    for name, prop in schema.get("properties", {}).items():
        description = prop.get("description", "")
        if not description:
            log.warning("%s.%s has no description: add Field(description=...) in %s", owner,
                        name, inspect.getsourcefile(model))
        rows.append((code(name), type_of(prop, link), default_of(model, name, prop),
                     bounds_of(prop), description))
    return table(("field", "type", "default", "bounds", "description"), rows)


# --- the job spec ----------------------------------------------------------------------------------


def spec_link(name: str) -> str:
    from models.objectives import PARAMS

    if name in SPEC_PARTS:
        return f"[{name}](#{anchor(name)})"
    objective = {cls.__name__: n for n, cls in PARAMS.items()}.get(name)
    return f"[`{objective}`](objectives.md#{anchor(objective)})" if objective else name


def job_spec() -> str:
    import models.spec as spec

    out = []
    for name in SPEC_PARTS:
        model = getattr(spec, name)
        doc = inspect.cleandoc(model.__doc__ or "") if "__doc__" in model.__dict__ else ""
        where = {"JobSpec": "The whole spec: the body of `POST /v1/jobs`.",
                 "ArchitectureSpec": "`architecture`.",
                 "NetSpec": "`architecture.generator` (and the base of the critic's).",
                 "CriticSpec": "`architecture.critic`: the fields of NetSpec, with "
                               "`activation` left to the recipe, and `spectral_norm`.",
                 "DatasetSpec": "`dataset`.", "TrainingSpec": "`training`."}[name]
        out.append(f"## {name}\n\n{where}\n\n" + (f"{doc}\n\n" if doc else "")
                   + fields_table(model, spec_link, name))
    fallbacks = ", ".join(f"`{k}` = {code(v)}" for k, v in spec.TRAINING_FALLBACKS.items())
    out.append(f"A training field that no recipe names and the spec leaves null takes its "
               f"fallback: {fallbacks}.")
    return "\n\n".join(out)


def resolved_spec() -> str:
    from models.spec import JobSpec

    resolved = JobSpec.model_validate(MINIMAL_SPEC).model_dump(mode="json")
    return ("```json\n" + json.dumps(MINIMAL_SPEC) + "\n```\n\nbecomes, as stored:\n\n```json\n"
            + json.dumps(resolved, indent=2) + "\n```")


# --- the objectives ----------------------------------------------------------------------------------


def objectives() -> str:
    from models.objectives import PARAMS, REGISTRY
    from models.objectives.registry import describe
    from models.spec import TRAINING_FALLBACKS, CriticSpec, TrainingSpec

    overview, sections = [], []
    for name, params in PARAMS.items():
        info = describe(params)
        signed = getattr(REGISTRY[name], "signed_weights_ok", False)
        own = ", ".join(code(p) for p in info["parameters"]) or "none"
        overview.append((f"[`{name}`](#{anchor(name)})", info["description"], own,
                         "sound" if signed else "refused"))
        parts = [f"## `{name}`", info["description"],
                 f"Its parameters' model is `{params.__name__}` (`{params.__module__}`). "
                 f"Negative per-event weights as given: "
                 f"{'sound' if signed else 'refused (the loss is unbounded below)'}."]
        rows = []
        for pname, prop in info["parameters"].items():
            default = default_of(params, pname, prop)
            if default == code(None):
                default = "`null`: the recipe's"
            rows.append((code(pname), type_of(prop, lambda n: n), default, bounds_of(prop),
                         prop.get("description", "") or "see the description above"))
        if rows:
            parts.append(table(("parameter", "type", "default", "bounds", "description"), rows))
        else:
            whole = json.dumps({"name": name})
            parts.append(f"No parameters of its own: `{whole}` is the whole objective.")
        recipes = info["recipes"]
        keys: dict[str, None] = {}
        for recipe in recipes.values():
            for group in ("objective", "training", "critic"):
                for key in recipe[group]:
                    keys[f"{group}.{key}"] = None
        names = list(recipes)
        recipe_rows = []
        order = [f"objective.{k}" for k in params.model_fields] + [
            f"training.{k}" for k in TrainingSpec.model_fields] + [
            f"critic.{k}" for k in CriticSpec.model_fields]
        for key in sorted(keys, key=lambda k: order.index(k) if k in order else len(order)):
            group, field = key.split(".", 1)
            shown = {"objective": "objective", "training": "training",
                     "critic": "architecture.critic"}[group]
            recipe_rows.append([code(f"{shown}.{field}")] + [
                code(recipes[r][group][field]) if field in recipes[r][group] else "–"
                for r in names])
        parts.append("Recipes (`training.recipe`):\n\n" + "\n".join(
            f"- `{r}`: {recipes[r]['description']}" for r in names))
        parts.append(table(["field", *(f"`{r}`" for r in names)], recipe_rows))
        sections.append("\n\n".join(parts))
    fallbacks = ", ".join(f"`training.{k}` = {code(v)}" for k, v in TRAINING_FALLBACKS.items())
    head = table(("objective", "description", "own parameters", "negative weights as given"),
                 overview)
    return (head + "\n\nA recipe fills only the fields the spec leaves out (null). Fields no "
            f"recipe names: {fallbacks}.\n\n" + "\n\n".join(sections))


# --- the HTTP API --------------------------------------------------------------------------------------


def _routes(routes: Iterable[Any], prefix: str = "", deps: tuple[Any, ...] = ()) -> Iterable[
        tuple[str, set[str], tuple[Any, ...]]]:
    """(path, methods, dependencies) of every route, through included routers (FastAPI keeps
    them as included-router entries in `app.routes` from 0.16x on; flat before)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            context = getattr(route, "include_context", None)
            yield from _routes(inner.routes, prefix + getattr(context, "prefix", ""),
                               deps + tuple(getattr(context, "dependencies", ())))
        elif hasattr(route, "methods") and hasattr(route, "path"):
            yield prefix + route.path, set(route.methods), deps + tuple(route.dependencies)


def route_scopes(app: Any) -> dict[tuple[str, str], str]:
    """(METHOD, path) -> the scope that its `service.auth.require(scope)` dependency checks."""
    scopes = {}
    for path, methods, deps in _routes(app.routes):
        for dep in deps:
            call = getattr(dep, "dependency", None)
            closure = inspect.getclosurevars(call).nonlocals if inspect.isfunction(call) else {}
            if isinstance(closure.get("scope"), str):
                for method in methods:
                    scopes[(method, path)] = closure["scope"]
    if not scopes:
        log.warning("no route's scope could be read (service.auth.require changed?): the API "
                    "page would call every route open")
    return scopes


def api() -> str:
    from service.main import create_app

    app = create_app()
    doc = app.openapi()
    schemas = doc.get("components", {}).get("schemas", {})
    scopes = route_scopes(app)
    shown: dict[str, None] = {}

    def link(name: str) -> str:
        if name == "JobSpec":
            return f"[JobSpec]({JOB_SPEC_PAGE}#jobspec)"
        shown[name] = None
        return f"[{name}](#{anchor(name)})"

    by_tag: dict[str, list[str]] = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            tag = (op.get("tags") or ["other"])[0]
            by_tag.setdefault(tag, []).append(operation(path, method, op, scopes, link))
    order = sorted(by_tag, key=lambda t: TAG_ORDER.index(t) if t in TAG_ORDER else len(TAG_ORDER))
    out = [f"## {tag.capitalize()}\n\n" + "\n\n".join(by_tag[tag]) for tag in order]
    # The schemas the routes name, and those these name in turn.
    done: set[str] = set()
    blocks = []
    while len(done) < len(shown):
        for name in [n for n in shown if n not in done]:
            done.add(name)
            schema = schemas.get(name, {})
            rows = []
            required = set(schema.get("required", []))
            for prop, sub in schema.get("properties", {}).items():
                default = code(sub["default"]) if "default" in sub else (
                    "required" if prop in required else "")
                rows.append((code(prop), type_of(sub, link), default,
                             sub.get("description", "")))
            text = f"### {name}\n\n"
            if schema.get("description"):
                text += " ".join(schema["description"].split()) + "\n\n"
            text += table(("property", "type", "default", "description"), rows) if rows else \
                type_of(schema, link)
            blocks.append(text)
    out.append("## Schemas\n\nThe bodies the routes above take and answer.\n\n"
               + "\n\n".join(blocks))
    return "\n\n".join(out)


def operation(path: str, method: str, op: dict[str, Any], scopes: dict[tuple[str, str], str],
              link: Linker) -> str:
    scope = scopes.get((method.upper(), path))
    lines = [f"### `{method.upper()} {path}`"]
    if op.get("description"):
        lines.append(" ".join(op["description"].split()))
    elif op.get("summary"):
        lines.append(op["summary"] + ".")
    lines.append(f"Scope: `{scope}` (or `admin`)." if scope and scope != "admin" else
                 "Scope: `admin`." if scope else "No API key needed.")
    params = op.get("parameters", [])
    if params:
        rows = []
        for p in params:
            schema = p.get("schema", {})
            default = code(schema["default"]) if "default" in schema else ""
            rows.append((code(p["name"]), p["in"], type_of(schema, link),
                         "yes" if p.get("required") else "no", default,
                         bounds_of(schema), p.get("description", "")))
        lines.append(table(("parameter", "in", "type", "required", "default", "bounds",
                            "description"), rows))
    body = op.get("requestBody")
    if body:
        content = body.get("content", {})
        kinds = []
        for media, entry in content.items():
            kinds.append(f"{type_of(entry.get('schema', {}), link)} as `{media}`")
        lines.append("Body" + (" (required)" if body.get("required") else "") + ": "
                     + "; ".join(kinds) + ".")
    answers: list[tuple[str, str, str]] = []
    for status, response in op.get("responses", {}).items():
        content = response.get("content", {})
        bodies = []
        for media, entry in content.items():
            schema = entry.get("schema") or {}
            if schema.get("$ref", "").endswith("/HTTPValidationError"):
                bodies.append("a [problem document](#errors) (`application/problem+json`), "
                              "with `errors`")
            else:
                bodies.append(f"{type_of(schema, link)} (`{media}`)" if schema else f"`{media}`")
        answers.append((status, "; ".join(bodies) or "–", response.get("description", "")))
    lines.append(table(("status", "body", "description"), answers))
    return "\n\n".join(lines)


# --- the settings ----------------------------------------------------------------------------------------


def settings_groups(cls: type) -> dict[str, str]:
    """Field name -> the `# --- group ---` comment above it in the class's source."""
    groups, current = {}, "other"
    for line in inspect.getsource(cls).splitlines():
        header = re.match(r"\s*# --- (.+?) -*$", line)
        if header:  # "launcher (`make run`) supervision (docs/security.md)": no page pointer
            current = re.sub(r"\s*\([^()]*\.md\)", "", header.group(1)).strip()
            continue
        field = re.match(r"\s{4}([A-Z][A-Z0-9_]*)\s*:", line)
        if field:
            groups[field.group(1)] = current
    return groups


def settings() -> str:
    from gan_platform.settings import Settings

    schema = Settings.model_json_schema()
    groups = settings_groups(Settings)
    by_group: dict[str, list[tuple[str, ...]]] = {}
    for name, prop in schema.get("properties", {}).items():
        description = prop.get("description", "")
        if not description:
            log.warning("setting %s has no description: add Field(description=...) in "
                        "gan_platform/settings.py", name)
        default = default_of(Settings, name, prop)
        if "default" in prop:
            default = "unset" if prop["default"] is None else default + size_hint(
                name, prop["default"])
        by_group.setdefault(groups.get(name, "other"), []).append(
            (code(name), type_of(prop, lambda n: n), default, bounds_of(prop), description))
    return "\n\n".join(
        f"## {group[0].upper() + group[1:]}\n\n"
        + table(("variable", "type", "default", "bounds", "description"), rows)
        for group, rows in by_group.items())


GENERATORS: dict[str, Callable[[], str]] = {
    "job-spec": job_spec, "resolved-spec": resolved_spec, "objectives": objectives,
    "api": api, "settings": settings,
}


@cache
def generated(name: str) -> str:
    text = GENERATORS[name]()
    if "torch" in sys.modules:
        log.warning("generating %r loaded torch: the reference must build without it", name)
    return text


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            log.warning("%s: unknown marker 'generated: %s' (known: %s)", page.file.src_uri,
                        name, ", ".join(GENERATORS))
            return match.group(0)
        return generated(name)

    return MARKER.sub(replace, markdown)


def on_config(config: Any) -> None:
    # The repository's packages, whichever mkdocs runs the hook (mkdocs restores sys.path
    # after loading a hook, so this is done here, not at import).
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def on_pre_build(config: Any) -> None:
    generated.cache_clear()  # `mkdocs serve` rebuilds: generate again

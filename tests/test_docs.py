"""The documentation site: `mkdocs build --strict` passes (no broken link or anchor, no page
outside the nav, no undocumented setting or spec field: docs/hooks/reference.py warns), every
page is in the nav, the README stays short, and the reference pages generated from the code
name every objective, every setting and every API path. The JSON specs the pages show are
valid job specs, and the security page's limits name real settings with their real defaults."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

DOCS = ROOT / "docs"
MKDOCS = Path(sys.executable).with_name("mkdocs")
README_LIMIT = 8 * 1024


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    r = subprocess.run([str(MKDOCS), "build", "--strict", "-d", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, f"mkdocs build --strict failed:\n{r.stdout[-3000:]}{r.stderr[-6000:]}"
    return out


def nav_pages(entries: object) -> Iterator[str]:
    if isinstance(entries, str):
        yield entries
    elif isinstance(entries, list):
        for entry in entries:
            yield from nav_pages(entry)
    elif isinstance(entries, dict):
        for value in entries.values():
            yield from nav_pages(value)


def markdown_pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts)


def test_the_site_builds_strict(site: Path) -> None:
    assert (site / "index.html").is_file()
    assert not (site / "hooks").exists(), "the hook's source must not be published"


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = set(nav_pages(config["nav"]))
    pages = {p.relative_to(DOCS).as_posix() for p in markdown_pages()}
    assert not pages - listed, f"pages outside the nav (orphans): {sorted(pages - listed)}"
    assert not listed - pages, f"nav entries without a page: {sorted(listed - pages)}"


def test_the_readme_is_short_and_its_links_resolve() -> None:
    readme = ROOT / "README.md"
    assert len(readme.read_bytes()) < README_LIMIT, "README.md must stay under 8 KB"
    text = readme.read_text()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not re.match(r"[a-z]+://", target):
            assert (ROOT / target).exists(), f"README.md links to {target}, which is missing"
    assert "make run" in text and "make test" in text and "mkdocs serve" in text


def _text(html: Path) -> str:
    return html.read_text()


def test_the_reference_names_every_objective(site: Path) -> None:
    from models.objectives import PARAMS

    page = _text(site / "reference" / "objectives" / "index.html")
    missing = [name for name in PARAMS if f"<code>{name}</code>" not in page]
    assert not missing, f"objectives missing from the generated reference: {missing}"
    for params in PARAMS.values():
        for field in set(params.model_fields) - {"name"}:
            assert f"<code>{field}</code>" in page, f"{params.__name__}.{field} not rendered"


def test_the_reference_names_every_setting(site: Path) -> None:
    from gan_platform.settings import Settings

    page = _text(site / "reference" / "settings" / "index.html")
    missing = [name for name in Settings.model_fields if f"<code>{name}</code>" not in page]
    assert not missing, f"settings missing from the generated reference: {missing}"


def test_the_reference_names_every_api_route(site: Path) -> None:
    from service.main import create_app

    page = _text(site / "reference" / "api" / "index.html")
    doc = create_app().openapi()
    missing = [f"{method.upper()} {path}" for path, methods in doc["paths"].items()
               for method in methods if f"<code>{method.upper()} {path}</code>" not in page]
    assert not missing, f"routes missing from the generated API reference: {missing}"


def test_the_reference_names_every_job_spec_field(site: Path) -> None:
    import models.spec as spec

    page = _text(site / "reference" / "job-spec" / "index.html")
    for part in ("JobSpec", "ArchitectureSpec", "NetSpec", "CriticSpec", "DatasetSpec",
                 "TrainingSpec"):
        for field in getattr(spec, part).model_fields:
            assert f"<code>{field}</code>" in page, f"{part}.{field} not rendered"


def test_the_specs_the_pages_show_are_valid() -> None:
    from models.spec import JobSpec

    decoder = json.JSONDecoder()
    found = 0
    for page in [ROOT / "README.md", *markdown_pages()]:
        for block in re.findall(r"```(?:json|sh)\n(.*?)```", page.read_text(), flags=re.S):
            for match in re.finditer(r"\{\s*\"objective\"", block):
                try:
                    candidate = decoder.raw_decode(block, match.start())[0]
                except json.JSONDecodeError:
                    continue
                try:
                    JobSpec.model_validate(candidate)
                except Exception as exc:  # noqa: BLE001 - report which page and spec
                    pytest.fail(f"{page.relative_to(ROOT)} shows an invalid spec {candidate}: "
                                f"{exc}")
                found += 1
    assert found >= 8, f"only {found} example specs found"


def test_the_security_page_lists_every_limit_with_its_default() -> None:
    from gan_platform.settings import Settings

    text = (DOCS / "security.md").read_text()
    fields = Settings.model_fields
    limits = [name for name in fields if name.startswith("MAX_")]
    missing = [name for name in limits if f"`{name}`" not in text]
    assert not missing, f"limits missing from docs/security.md: {missing}"
    checked = 0
    for row in re.findall(r"^\|(.+)\|\s*$", text, flags=re.M):
        cells = [c.strip() for c in row.split("|")]
        if len(cells) < 3 or not re.fullmatch(r"`[A-Z_]+`", cells[1]):
            continue
        name = cells[1].strip("`")
        assert name in fields, f"docs/security.md names a setting {name} that does not exist"
        shown = re.match(r"`([^`]+)`", cells[2])
        default = fields[name].default
        if shown is None or default is None or fields[name].default_factory is not None:
            continue
        assert float(shown.group(1)) == float(default), (
            f"docs/security.md gives {name} the default {shown.group(1)}; it is {default}")
        checked += 1
    assert checked >= 10, f"only {checked} limits with a default found in the tables"

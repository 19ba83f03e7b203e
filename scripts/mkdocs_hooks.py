"""MkDocs hook (mkdocs.yml `hooks:`): the site's home page is the README, whose links to
docs/X.md become links to the page X.md beside it, so the README stays the one copy."""

from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "index.md":
        return markdown
    return README.read_text(encoding="utf-8").replace("](docs/", "](")

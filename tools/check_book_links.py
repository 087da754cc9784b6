#!/usr/bin/env python3
"""Checks the book's internal links (and the README's): every relative link
in docs/src/**/*.md and README.md names a file that exists, every page is in
SUMMARY.md, and every SUMMARY.md entry exists. A book page may not link out
of docs/src (to `../../src/model/params.rs`, say): the built book holds only
docs/src, so such a link is dead there; name the file as code instead
(`src/model/params.rs`). Exits 1 listing what is dead.

Usage: python3 tools/check_book_links.py   (from the repository root)
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "docs" / "src"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def links(path):
    in_code = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            yield number, target


def dead_links(path):
    for number, target in links(path):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        file = (path.parent / target.split("#", 1)[0]).resolve()
        if not file.exists():
            yield f"{path.relative_to(ROOT)}:{number}: dead link {target}"
        elif in_book(path) and not in_book(file):
            yield (
                f"{path.relative_to(ROOT)}:{number}: link out of the book {target} "
                f"(dead in the built book; write `{file.relative_to(ROOT)}` as code)"
            )


def in_book(path):
    """Whether `path` is inside docs/src, the part of the tree the built book holds."""
    return path.resolve().is_relative_to(SRC.resolve())


def main():
    pages = sorted(SRC.rglob("*.md"))
    problems = [p for page in pages + [ROOT / "README.md"] for p in dead_links(page)]
    summary = SRC / "SUMMARY.md"
    listed = {(SRC / t.split("#")[0]).resolve() for _, t in links(summary)}
    for page in pages:
        if page != summary and page.resolve() not in listed:
            problems.append(f"{page.relative_to(ROOT)}: not in SUMMARY.md")
    for problem in problems:
        print(problem)
    print(f"{len(pages)} pages checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

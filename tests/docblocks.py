"""The fenced code blocks of README.md and docs/*.md, for the tests that run them.

A block is run unless the line before its fence is `<!-- not run: REASON -->`. A block whose
names come from around it (a file, an input, a model) has `<!-- doc-test: NAME ... -->` before
its fence: NAME picks what the test writes before the block and checks after it. Python blocks
run in tests/python/test_docs.py, C and sh blocks in tests/integration/test_docs.py."""
import pathlib
import re
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
MARKER = re.compile(r"<!-- (not run|doc-test): *(.*?) *-->\s*$")


@dataclass
class Block:
    page: str          # relative to the repository
    line: int          # of the opening fence
    lang: str
    code: str
    skip: str | None   # the reason it is not run
    name: str | None   # the doc-test name

    @property
    def id(self):
        return f"{self.page}:{self.line}:{self.name or self.lang}"


def blocks(langs):
    """Every fenced block of the pages in one of langs, in page order."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for m in FENCE.finditer(text):
            if m.group(1) not in langs:
                continue
            before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            mark = MARKER.match(before)
            skip = mark.group(2) if mark and mark.group(1) == "not run" else None
            name = mark.group(2).split()[0] if mark and mark.group(1) == "doc-test" else None
            found.append(Block(str(page.relative_to(ROOT)), text.count("\n", 0, m.start()) + 1,
                               m.group(1), m.group(2), skip, name))
    return found

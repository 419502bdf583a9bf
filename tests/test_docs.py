"""Every relative link and anchor in README.md and docs/ resolves inside the repository (a clone
has nothing beside it), as GitHub renders them."""

import pathlib
import re
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"```.*?```", re.S)


def anchors(markdown: str) -> set[str]:
  """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
  out = set()
  for line in _FENCE.sub("", markdown).splitlines():
    m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
    if m:
      out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
  return out


def broken_links(files) -> list[str]:
  bad = []
  for f in files:
    for link in _LINK.findall(_FENCE.sub("", f.read_text())):
      if re.match(r"^[a-z]+:", link):
        continue
      path, _, frag = link.partition("#")
      target = (f.parent / path).resolve() if path else f
      where = f"{f.relative_to(REPO)}: {link}"
      if REPO not in (target, *target.parents) or not target.exists():
        bad.append(f"{where} (no such file in the repository)")
      elif frag and target.suffix == ".md" and frag not in anchors(target.read_text()):
        bad.append(f"{where} (no such heading)")
  return bad


def test_every_relative_link_and_anchor_resolves():
  files = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
  assert not broken_links(files), broken_links(files)


def test_a_broken_link_or_anchor_is_caught(tmp_path, monkeypatch):
  monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
  (tmp_path / "a.md").write_text("# Top `x` (y)\n[ok](#top-x-y) [up](../z.md) [gone](#nope) "
                                 "[web](https://example.com)\n```\n[in code](nowhere.md)\n```\n")
  (tmp_path.parent / "z.md").write_text("outside the repository")
  got = broken_links([tmp_path / "a.md"])
  assert len(got) == 2 and "../z.md" in got[0] and "#nope" in got[1], got

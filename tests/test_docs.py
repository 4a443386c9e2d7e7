"""Every documentation citation in the repository resolves to a file of the repository.

* ``docs/<file>.md`` and ``docs/<file>.md#<anchor>`` cited anywhere (code, configs, tests, READMEs): the file
  exists and has a heading with that GitHub-style anchor;
* a number cited with it ("item 4", "items 3-4", "step 5", "finding 1-2") is a numbered list entry of that file (of
  the anchor's section when an anchor is given), and a quoted label after it ("Decoder D(z)") occurs there;
* relative Markdown links in README.md and docs/*.md point at existing files;
* no file mentions the developers' private notes or their shared folder (they do not ship with the project);
* docs/official-code.md keeps its numbering (the code cites items by number).

The scanned files are git's tracked and untracked-but-not-ignored files, so a new file is checked before it is
committed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import unicodedata
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve().relative_to(REPO).as_posix()

#: ``docs/<name>.md`` with an optional ``#anchor``, then optionally a number reference or a quoted label.
CITATION = re.compile(r"docs/(?P<file>[A-Za-z0-9_.-]+?\.md)(?:#(?P<anchor>[A-Za-z0-9_-]+))?")
NUMBER_REF = re.compile(
    r"""^[\s,(]*(?:"Findings"\s*|\(\s*)?(?P<kind>items?|steps?|findings?|bugs?)?\s*(?P<first>\d+)(?:\s*[-–]\s*(?P<last>\d+))?""",
    re.IGNORECASE,
)
QUOTED_LABEL = re.compile(r'^[\s,(`]*"(?P<label>[^"\n]{2,60})"')
MARKDOWN_LINK = re.compile(r"\]\((?P<target>[^)\s#]+)(?:#[^)\s]*)?\)")

#: Private notes of the developers and their shared folder: never part of the project, so never cited.
FORBIDDEN = ("paper.md", "anchors.md", "feasibility.md", "testbed-notes.md", "style-anchors.md", "/work/shared")

BINARY_SUFFIXES = {".png", ".jpg", ".jpeg", ".npz", ".npy", ".parquet", ".safetensors", ".pt", ".pth", ".gz", ".zip"}


@cache
def repository_files() -> tuple[str, ...]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the list of the project's files comes from git")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return tuple(path for path in listed if (REPO / path).is_file() and Path(path).suffix not in BINARY_SUFFIXES)


def read(path: str) -> str:
    return (REPO / path).read_text(encoding="utf-8", errors="replace")


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading.strip().lower())
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return kept.replace(" ", "-")


def headings(text: str) -> list[tuple[int, str, int]]:
    """(level, anchor, line index) of every ATX heading outside fenced code blocks; duplicates get -1, -2 ..."""
    found, seen, in_fence = [], {}, False
    for index, line in enumerate(text.splitlines()):
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        match = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if in_fence or not match:
            continue
        anchor = github_anchor(match.group(2))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.append((len(match.group(1)), anchor if count == 0 else f"{anchor}-{count}", index))
    return found


def section(text: str, anchor: str | None) -> str | None:
    """The text under the heading with ``anchor`` (up to the next heading of the same or a higher level)."""
    if anchor is None:
        return text
    lines = text.splitlines()
    marks = headings(text)
    for position, (level, name, start) in enumerate(marks):
        if name == anchor:
            end = next((line for lvl, _, line in marks[position + 1 :] if lvl <= level), len(lines))
            return "\n".join(lines[start:end])
    return None


def numbered_entries(text: str) -> set[int]:
    return {int(match.group(1)) for match in re.finditer(r"^(\d+)\. ", text, re.MULTILINE)}


def citations() -> list[tuple[str, int, str, str | None, str]]:
    """(citing file, line, cited file, anchor, text that follows the citation) for every citation."""
    found = []
    for path in repository_files():
        if path == THIS_FILE:
            continue
        for number, line in enumerate(read(path).splitlines(), start=1):
            for match in CITATION.finditer(line):
                found.append((path, number, match.group("file"), match.group("anchor"), line[match.end() :]))
    return found


def test_citations_are_found():
    # Guards the scan itself: the code cites the docs dozens of times, so an empty list means the scan broke.
    cited = {(name, anchor) for _, _, name, anchor, _ in citations()}
    assert ("method.md", "dwgf") in cited and ("official-code.md", None) in cited
    assert len(citations()) > 100


def test_every_cited_docs_file_and_anchor_exists():
    problems = []
    for path, number, name, anchor, _ in citations():
        target = REPO / "docs" / name
        if not target.is_file():
            problems.append(f"{path}:{number}: docs/{name} does not exist")
        elif anchor is not None and anchor not in {a for _, a, _ in headings(read(f"docs/{name}"))}:
            problems.append(f"{path}:{number}: docs/{name} has no heading with anchor #{anchor}")
    assert not problems, "\n".join(problems)


def test_cited_numbers_and_labels_exist():
    problems = []
    for path, number, name, anchor, rest in citations():
        if not (REPO / "docs" / name).is_file():
            continue  # reported by the test above
        text = section(read(f"docs/{name}"), anchor) or ""
        ref = NUMBER_REF.match(rest)
        if ref and (ref.group("kind") or rest.lstrip().startswith(("(", '"Findings"'))):
            first = int(ref.group("first"))
            last = int(ref.group("last") or first)
            missing = sorted(set(range(first, last + 1)) - numbered_entries(text))
            if missing:
                where = f"docs/{name}" + (f"#{anchor}" if anchor else "")
                problems.append(f"{path}:{number}: {where} has no numbered entry {missing}")
        label = QUOTED_LABEL.match(rest)
        if label and label.group("label") not in text:
            problems.append(f"{path}:{number}: docs/{name} does not contain {label.group('label')!r}")
    assert not problems, "\n".join(problems)


def test_markdown_links_in_the_docs_resolve():
    problems = []
    pages = [path for path in repository_files() if path.endswith(".md")]
    for path in pages:
        for match in MARKDOWN_LINK.finditer(read(path)):
            target = match.group("target")
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            if not (REPO / path).parent.joinpath(target).resolve().exists():
                problems.append(f"{path}: link to {target} does not resolve")
    assert not problems, "\n".join(problems)


def test_no_file_mentions_the_private_notes():
    problems = []
    for path in repository_files():
        if path == THIS_FILE:
            continue
        for number, line in enumerate(read(path).splitlines(), start=1):
            for needle in FORBIDDEN:
                if needle in line:
                    problems.append(f"{path}:{number}: mentions {needle!r}")
    assert not problems, "\n".join(problems)


def test_rlsd_repulsion_gate_is_stated_as_sigma_break_400():
    """The DWGF copy of RLSD gates repulsion on sigma_t > sigma[int(999 / 1000 * 600)] of its descending 999-step
    schedule: index 599 is t = 400, so the matching setting here is sigma_break=400 (repulsion for t = 999 ... 401),
    and no file may state 599 (a position, not a timestep) as the gate."""
    from dwgf.solvers.rlsd import HYPER

    schedule = list(range(999, 0, -1))
    assert schedule[int(len(schedule) / 1000 * 600)] == 400
    assert "T = 400" in HYPER["sigma_break"].meaning
    stale = re.compile(r"sigma_break\s*=\s*599|t > 599")
    problems = [f"{path}: {m.group(0)!r}" for path in repository_files() if path != THIS_FILE
                for m in stale.finditer(read(path))]  # fmt: skip
    assert not problems, "\n".join(problems)


def test_official_code_items_keep_their_numbers():
    text = read("docs/official-code.md")
    assert numbered_entries(text) == set(range(1, 14))
    # The code cites these items by number for these facts; a renumbering would silently re-point them.
    expected = {
        1: "single_test.sh",
        2: "decode_before_last_step",
        3: "998",
        4: "vae.train()",
        5: "per_particle_noise",
        6: "sigma_x0",
        7: "decoder_noise_in_likelihood",
        8: "LPIPS",
        9: "CUDA",
        10: "NotImplementedError",
        11: "w_t",
        12: "Hydra",
        13: "prior_weight_over_rho",
    }
    items = re.split(r"^(\d+)\. ", text, flags=re.MULTILINE)
    bodies = {int(items[k]): items[k + 1] for k in range(1, len(items) - 1, 2)}
    for item, needle in expected.items():
        assert needle in bodies[item], (item, needle)


def test_dwgf_steps_match_the_solver_docstring():
    # dwgf/solvers/dwgf.py numbers its update 1-7 and cites "docs/method.md#dwgf step k".
    documented = numbered_entries(section(read("docs/method.md"), "the-update") or "")
    docstring = read("dwgf/solvers/dwgf.py").split('"""')[1]
    assert set(range(1, 8)) <= documented
    assert numbered_entries(docstring) == documented


def test_github_anchor_rule():
    assert github_anchor("Hyper-parameters") == "hyper-parameters"
    assert github_anchor("Latent-DPS") == "latent-dps"
    assert github_anchor("Decoder D(z) and `E(x)`") == "decoder-dz-and-ex"
    assert [a for _, a, _ in headings("# A\n```\n# not a heading\n```\n## A\n")] == ["a", "a-1"]

"""The ``>>>`` examples in the dwgf package's docstrings run as part of the suite.

Every module of the package is imported (except ``dwgf.__main__``, which runs the CLI) and its doctests are
collected with :class:`doctest.DocTestFinder`; each module with examples is one test. An example marked
``# doctest: +SKIP`` is not run (it needs files or a process of its own), and the count of skipped examples is
kept small by :func:`test_most_examples_run`.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import dwgf

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _module_names() -> list[str]:
    names = ["dwgf"]
    for info in pkgutil.walk_packages(dwgf.__path__, prefix="dwgf."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        names.append(info.name)
    return sorted(names)


def _doctests(module_name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(module_name)
    # exclude_empty: docstrings without examples are not tests.
    found = doctest.DocTestFinder(exclude_empty=True).find(module, module_name)
    # The finder also follows re-exported objects; keep each test in the module that defines it.
    return [test for test in found if test.examples and _defined_in(test, module)]


def _defined_in(test: doctest.DocTest, module) -> bool:
    return test.filename is not None and module.__file__ is not None and test.filename == module.__file__


def _skipped(example: doctest.Example) -> bool:
    return example.options.get(doctest.SKIP, False)


MODULES_WITH_EXAMPLES = [name for name in _module_names() if _doctests(name)]


def test_modules_with_examples_are_found():
    # Guards the collection itself: if discovery broke, the parametrised test below would pass vacuously.
    for expected in ("dwgf.operators", "dwgf.solvers.base", "dwgf.solvers.dwgf", "dwgf.solvers.psld", "dwgf.io"):
        assert expected in MODULES_WITH_EXAMPLES, expected


def test_most_examples_run():
    examples = [example for name in MODULES_WITH_EXAMPLES for test in _doctests(name) for example in test.examples]
    skipped = [example for example in examples if _skipped(example)]
    assert len(examples) >= 20, len(examples)
    assert len(examples) - len(skipped) >= 17, f"{len(skipped)} of {len(examples)} examples are skipped"


@pytest.mark.parametrize("module_name", MODULES_WITH_EXAMPLES)
def test_docstring_examples(module_name):
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report: list[str] = []
    for test in _doctests(module_name):
        runner.run(test, out=report.append)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, "".join(report)

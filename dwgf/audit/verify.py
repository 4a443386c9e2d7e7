"""``dwgf verify``: walk a suite's results from tables back to inputs and report every broken link.

Checks (each failure is a :class:`Problem` naming the file):

``missing``
    a file that a record names (as output or input) does not exist.
``modified``
    a file's sha256 differs from the value its producing record stored (bytes changed after the job ran).
``stale``
    a record's *input* now hashes differently from what the record stored: the record's outputs were made from
    another version of that file (for example a table built from an earlier metrics.parquet).
``unexpected``
    a file under the results folder that no record names as an output (a stray or left-over file, or an
    artifact whose record was lost). ``logs/``, ``benchmarks/`` and ``audit/`` are not recorded by design.
``bad-record``
    a record that cannot be read, whose ``config_sha256`` is not the hash of its ``config``
    (:func:`dwgf.provenance.config_hash`), or two records that claim the same output.
``stale-rows``
    per-image metric rows (``level == "image"``, :mod:`dwgf.metrics.schema`) whose link hashes
    (``observation_sha256``, ``run_sha256``) do not match the files the records index now, or aggregated rows
    that are not exactly the rows of the Parquet files they were aggregated from.
``unlinked-rows``
    per-image metric rows without the link columns :data:`LINK_COLUMNS`, which therefore cannot be traced.

Per-image solve records (schema ``dwgf.solve_image/1``) are checked too: their particle files must still hash to
the values stored when the image was solved.

Against the plan. A folder is a suite's results when it holds the root record ``run/root.prov.json``
(:mod:`dwgf.audit.root`) or, for a run that never finished, the invocation record ``run/invocation.json``
(:mod:`dwgf.suite_run`); anything else is refused with one line (:class:`dwgf.errors.DwgfError`). The suite config
recorded there rebuilds the plan (:class:`dwgf.pipeline.plan.Plan`), which lists every artifact the suite must
have (:func:`dwgf.audit.root.expected_artifacts`); each absent one is ``missing``. Records are protected as
wholes: every consumer stores the sha256 of the records it read, up to the root record, so an edited record is
``stale`` at its consumer even when its own stored hashes were edited to match. Its repair then forces the job
that *wrote* the edited record (re-running only the consumer would sign the forgery).

``recompute``: the per-image metrics of K randomly chosen solved images (seeded) are recomputed from the
particle files and the ground truth (:mod:`dwgf.audit.recompute`) and compared with their Parquet rows, which
catches a forged value whose hashes were all updated consistently (``recomputed`` problems).

Repair. Snakemake decides what to re-run from modification times, params and code, not from file contents, so a
flipped byte or an edited row goes unnoticed by a plain ``snakemake`` call. Every problem therefore names the
Snakemake target of the job that writes the broken file (the record, for steps whose record is the rule's
output; otherwise the rule's first output); ``snakemake --forcerun <targets>`` re-runs those jobs and everything
downstream of them, after which ``dwgf verify`` passes again. Jobs are deterministic (per-image seeds,
:mod:`dwgf.seeding`), so a repaired file has its original bytes.
"""

from __future__ import annotations

import os
import shlex
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dwgf.audit.index import SOLVE_IMAGE_SCHEMA, RecordEntry, ResultsIndex
from dwgf.provenance import RECORD_SUFFIX, config_hash

#: Columns that link a per-image metric row to its artifacts (all required).
LINK_COLUMNS = ("method", "task", "variant", "image_id", "particle", "observation_sha256", "run_sha256")
#: Steps whose provenance record is itself a Snakemake output of the rule (a completion marker; for
#: reference-stats the record is declared beside stats.npz, while its images are not Snakemake outputs).
MARKER_STEPS = ("acquire-images", "fit-prior", "acquire-weights", "observe", "solve", "reference-stats")
EXAMPLE_COLUMNS = ("method", "task", "variant", "image_id", "particle", "sample_policy", "metric", "protocol", "value")
KINDS = ("missing", "modified", "stale", "unexpected", "bad-record", "stale-rows", "unlinked-rows", "recomputed")


@dataclass(frozen=True)
class Problem:
    """One broken link. ``path`` is relative to the results folder (absolute outside it)."""

    kind: str
    path: str
    detail: str
    record: str | None = None
    #: Snakemake target whose forced re-run repairs the problem (relative to the results folder).
    forcerun: str | None = None
    #: A stray file to delete (no job writes it).
    remove: str | None = None

    def line(self) -> str:
        where = f" [record {self.record}]" if self.record and self.record != self.path else ""
        return f"{self.kind.upper():13s} {self.path}: {self.detail}{where}"


@dataclass
class VerifyReport:
    root: Path
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    n_records: int = 0
    n_files: int = 0
    suite: str | None = None
    #: the Snakemake invocation the repair replays (root record, else run/invocation.json), or None.
    invocation: dict[str, Any] | None = None
    n_expected: int = 0
    n_recomputed: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def forcerun_targets(self) -> list[str]:
        return sorted({p.forcerun for p in self.problems if p.forcerun})

    def removals(self) -> list[str]:
        return sorted({p.remove for p in self.problems if p.remove})

    def repair_commands(self) -> list[str]:
        """Shell commands that repair every problem found (to be run one after the other in one shell).

        With a recorded invocation: ``rm`` of the stray files (all inside this suite's folder), then one command
        that replays the invocation (:func:`dwgf.suite_run.replay_command`: its working directory, Snakefile,
        ``--configfile``s, ``--config`` overrides, cores and profiles) with the jobs writing the broken files
        forced, then ``dwgf verify`` again. A folder copied or moved since the run is repaired in place: the
        replay runs from the folder's own working directory (relative ``results``) or names the folder with
        ``--config results=...`` (absolute ``results``).

        Without one (folders made before invocations were recorded): the workflow's working directory is taken
        to be the folder above ``<results>/<suite>``, and when it holds no Snakefile (or config.yaml), those of
        the checkout this package is installed from are named explicitly.
        """
        if self.invocation is not None:
            return self._replay_commands()
        workdir, results = self.root.parent.parent, self.root.parent.name
        commands = [] if _same(workdir, Path.cwd()) else [f"cd {shlex.quote(str(workdir))}"]
        commands += [f"rm {shlex.quote(_from_workdir(self.root, r, workdir))}" for r in self.removals()]
        targets = [_from_workdir(self.root, t, workdir) for t in self.forcerun_targets()]
        if not (targets or self.removals()):
            return []
        checkout = Path(__file__).resolve().parents[2]
        options = ""
        if not (workdir / "Snakefile").is_file() and (checkout / "Snakefile").is_file():
            options += f" -s {shlex.quote(str(checkout / 'Snakefile'))}"
        if not (workdir / "config.yaml").is_file() and (checkout / "config.yaml").is_file():
            options += f" --configfile {shlex.quote(str(checkout / 'config.yaml'))}"
        config = f"suite={self.suite or self.root.name}" + ("" if results == "results" else f" results={results}")
        force = " --forcerun " + " ".join(map(shlex.quote, targets)) if targets else ""
        commands.append(f"snakemake -c 2{options} --config {config}{force}")
        commands.append(f"dwgf verify {shlex.quote(_from_workdir(self.root, '.', workdir))}")
        return commands

    def _replay_commands(self) -> list[str]:
        from dwgf.suite_run import replay_command

        record = dict(self.invocation)
        config = record["config"]
        results, suite = config["results"], config["suite"]
        here = self.root.resolve()
        workdir = Path(record["cwd"])
        args = list(record.get("config_args") or [])
        if not _same(Path(record.get("results") or ""), here):  # copied or moved since the run
            relative = Path(results)
            if not relative.is_absolute() and here.parts[-len(relative.parts) - 1 :] == (*relative.parts, suite):
                workdir = Path(*here.parts[: -len(relative.parts) - 1])
            else:
                args = [a for a in args if not a.startswith("results=")] + [f"results={here.parent}"]
                record["config_args"] = args
        record["cwd"] = str(workdir)
        removals = [f"rm {shlex.quote(str(self.root / r))}" for r in self.removals()]
        targets = [os.path.relpath(self.root / t, workdir) if not Path(t).is_absolute() else t
                   for t in self.forcerun_targets()]  # fmt: skip
        if not (targets or removals):
            return []
        return [*removals, replay_command(record, targets), f"dwgf verify {shlex.quote(str(self.root))}"]

    def format(self) -> str:
        lines = [f"dwgf verify {self.root}: {self.n_records} records, {self.n_files} files checked"]
        if self.n_expected:
            lines[0] += f", {self.n_expected} artifacts of the plan expected"
        if self.n_recomputed:
            lines[0] += f", metrics of {self.n_recomputed} image(s) recomputed"
        for kind in KINDS:
            lines += [p.line() for p in self.problems if p.kind == kind]
        lines += [f"note: {n}" for n in self.notes]
        if self.ok:
            lines.append("OK: every file matches its record and every record matches its inputs")
            return "\n".join(lines)
        lines.append(f"FAILED: {len(self.problems)} problem(s)")
        lines.append(
            "repair (Snakemake re-runs on modification time, not content, so force the jobs that write the broken "
            "files; --forcerun also re-runs everything downstream of them):"
        )
        lines += [f"  {command}" for command in self.repair_commands()]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "suite": self.suite,
            "ok": self.ok,
            "n_records": self.n_records,
            "n_files": self.n_files,
            "problems": [asdict(p) for p in self.problems],
            "notes": self.notes,
            "n_expected": self.n_expected,
            "n_recomputed": self.n_recomputed,
            "repair": self.repair_commands(),
        }


def verify_results(
    root: str | os.PathLike, strict: bool = False, recompute: int | None = None, seed: int = 0
) -> VerifyReport:
    """Check every record, file and metric row under a suite's results folder (module docstring).

    ``strict``: records made from a modified checkout (``code.git_dirty``) or by several commits are problems
    (``bad-record``) instead of notes. ``recompute``: recompute the per-image metrics of that many randomly chosen
    images (``seed``; ``-1``: all of them) and compare them with the Parquet rows.
    Raises :class:`~dwgf.errors.DwgfError` when ``root`` is not a suite's results folder.
    """
    index = ResultsIndex.load(root)
    report = VerifyReport(root=index.root, n_records=len(index.records))
    problems: dict[tuple[str, str, str | None], Problem] = {}

    def add(problem: Problem) -> None:
        problems.setdefault((problem.kind, problem.path, problem.record), problem)

    expected, config, report.invocation = _suite_plan(index, add)

    for relative in expected:
        if index.sha256(relative) is None:
            add(Problem("missing", relative, "the suite's plan expects this artifact", None, forcerun=relative))
    for entry in index.records.values():
        _check_record(index, entry, add)
    named = set(index.producers) | set(index.records)
    files = list(index.walk())
    report.n_files = len(files)
    for relative in files:
        if relative not in named:
            add(_unexpected(relative))
    for entry in index.records.values():
        for relative in entry.outputs:
            if relative.endswith(".json") and not relative.endswith(RECORD_SUFFIX):
                _check_solve_image(index, entry, relative, add)
            if relative.endswith(".parquet") and index.sha256(relative) is not None:
                _check_rows(index, entry, relative, add)
        _check_aggregation(index, entry, add)
    if recompute:
        from dwgf.audit.recompute import recompute_rows

        workdir = (report.invocation or {}).get("cwd")
        report.n_recomputed = recompute_rows(index, recompute, seed, add, workdir=workdir)
    _keep_files_of_forced_jobs(problems)
    report.n_expected = len(expected)
    report.problems = sorted(problems.values(), key=lambda p: (KINDS.index(p.kind), p.path))
    _code_notes(index, report, strict)
    suites = {(e.config or {}).get("suite") for e in index.records.values() if isinstance(e.config, dict)}
    suites.discard(None)
    report.suite = config["suite"] if config else next(iter(suites)) if len(suites) == 1 else None
    if len(suites) > 1:
        report.notes.append(f"records name several suites {sorted(suites)}; pass one suite's folder")
    return report


def _suite_plan(index: ResultsIndex, add) -> tuple[list[str], dict[str, Any] | None, dict[str, Any] | None]:
    """(artifacts the suite must have, its recorded config, the invocation a repair replays) of ``index.root``.

    From the root record when the run completed, else from ``run/invocation.json``; raises
    :class:`~dwgf.errors.DwgfError` when there is neither (not a suite's results folder).
    """
    from dwgf.audit.root import ROOT_RECORD, SEAL_STEP, expected_artifacts, plan_of
    from dwgf.errors import DwgfError
    from dwgf.suite_run import INVOCATION, read_invocation

    invocation = read_invocation(index.root)
    root_entry = index.records.get(ROOT_RECORD)
    if root_entry is not None and root_entry.step == SEAL_STEP:
        config = root_entry.config
        expected = list(root_entry.extra.get("expected") or [])
        invocation = root_entry.extra.get("invocation") or invocation
        if isinstance(config, dict) and "suites" in config:
            planned = expected_artifacts(plan_of(config))
            if planned != sorted(expected):
                detail = f"extra.expected ({len(expected)} artifacts) is not the plan of its config ({len(planned)})"
                add(Problem("bad-record", ROOT_RECORD, detail, ROOT_RECORD, ROOT_RECORD))
                expected = sorted(set(planned) | set(expected))
        return expected, config if isinstance(config, dict) else None, invocation
    if invocation is not None:
        return expected_artifacts(plan_of(invocation["config"])), invocation["config"], invocation
    raise DwgfError(
        f"not a dwgf suite results folder: {index.root} (neither {ROOT_RECORD} nor {INVOCATION}; pass "
        f"results/<suite> of a run made with `snakemake --config suite=<suite>`)"
    )


def _keep_files_of_forced_jobs(problems: dict) -> None:
    """Files beside a lost record are that record's outputs, which the forced job names again: no ``rm`` for them
    (deleting them would only make the job redo work it can resume, e.g. solved images)."""
    forced = {
        str(Path(p.path).parent)
        for p in problems.values()
        if p.kind == "missing" and p.path.endswith(RECORD_SUFFIX) and "/" in p.path
    }
    for key, problem in list(problems.items()):
        if problem.remove and any(problem.remove.startswith(folder + "/") for folder in forced):
            problems[key] = Problem(problem.kind, problem.path, problem.detail + "; rewritten by the forced job",
                                    problem.record)  # fmt: skip


def snakemake_target(entry: RecordEntry) -> str:
    """The Snakemake output of the job that wrote ``entry`` (forcing it re-runs that job)."""
    if entry.step in MARKER_STEPS or entry.record is None:
        return entry.path
    outputs = sorted(p for p in entry.outputs if not Path(p).is_absolute() and not p.endswith(RECORD_SUFFIX))
    return outputs[0] if outputs else entry.path


def _check_record(index: ResultsIndex, entry: RecordEntry, add) -> None:
    if entry.record is None:
        add(Problem("bad-record", entry.path, entry.error or "unreadable", entry.path, forcerun=entry.path))
        return
    target = snakemake_target(entry)
    stored = entry.record.get("config_sha256")
    if stored != config_hash(entry.config):
        add(
            Problem(
                "bad-record",
                entry.path,
                f"config_sha256 {_short(stored)} is not the hash of the stored config "
                f"({_short(config_hash(entry.config))}): the record was edited",
                entry.path,
                forcerun=target,
            )
        )
    for relative, digest in entry.outputs.items():
        owners = index.producers.get(relative, [])
        if len(owners) > 1:
            add(Problem("bad-record", relative, f"named as an output by several records {owners}", entry.path, target))
        now = index.sha256(relative)
        if now is None:
            add(Problem("missing", relative, f"output of `dwgf {entry.step}` does not exist", entry.path, target))
        elif now != digest:
            add(
                Problem(
                    "modified",
                    relative,
                    f"sha256 is {_short(now)}, but `dwgf {entry.step}` wrote {_short(digest)}",
                    entry.path,
                    target,
                )
            )
    for relative, digest in entry.inputs.items():
        now = index.sha256(relative)
        producer = _producer_target(index, relative)
        if now is None:
            add(
                Problem(
                    "missing",
                    relative,
                    f"input of {entry.path} does not exist",
                    entry.path,
                    producer or target,
                )
            )
        elif now != digest:
            # an input record that changed was edited (or re-made without its consumers): force the job that
            # writes it, so the repair replaces the record instead of signing it by re-running the consumer only
            edited = relative.endswith(RECORD_SUFFIX) or relative.endswith(".json")
            detail = f"was made from {relative} with sha256 {_short(digest)}, which now hashes to {_short(now)}"
            if edited:
                detail += " (that record changed after this one was made)"
            add(Problem("stale", entry.path, detail, entry.path, (edited and producer) or target))


def _producer_target(index: ResultsIndex, relative: str) -> str | None:
    owners = index.producers.get(relative)
    if owners:
        return snakemake_target(index.records[owners[0]])
    if relative.endswith(RECORD_SUFFIX) and not Path(relative).is_absolute():
        return relative  # a lost completion record: asking Snakemake for it re-runs the job
    return None


def _unexpected(relative: str) -> Problem:
    name = Path(relative).name
    if name.startswith(".") and ".tmp" in name:
        detail = "left-over temporary file of an interrupted atomic write"
    else:
        detail = "no record names this file as an output (stray file, or its record was lost)"
    return Problem("unexpected", relative, detail, None, remove=relative)


def _check_solve_image(index: ResultsIndex, shard: RecordEntry, relative: str, add) -> None:
    """A per-image solve record's own sha256 list (files beside it) must still hold, and so must its ``inputs``
    (``{path relative to the results folder: sha256}`` of the observation and prior it was solved from) when it
    states them: a resumed shard keeps an image only if it was solved from the current inputs."""
    import json

    path = index.resolve(relative)
    if not path.is_file():
        return  # reported as missing by the shard record
    try:
        image_record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return  # its bytes are checked against the shard record; a broken one is reported as modified there
    if not isinstance(image_record, dict) or image_record.get("schema") != SOLVE_IMAGE_SCHEMA:
        return
    folder = Path(relative).parent
    target = snakemake_target(shard)
    for name, digest in (image_record.get("files") or {}).items():
        file = (folder / name).as_posix()
        now = index.sha256(file)
        if now is None:
            add(Problem("missing", file, f"particle file of {relative} does not exist", shard.path, target))
        elif now != digest:
            add(
                Problem(
                    "modified",
                    file,
                    f"sha256 is {_short(now)}, but {relative} recorded {_short(digest)}",
                    shard.path,
                    target,
                )
            )
    for source, digest in (image_record.get("inputs") or {}).items():  # what the image was solved from
        now = index.sha256(source)
        if now != digest:
            state = "does not exist" if now is None else f"now hashes to {_short(now)}"
            add(
                Problem(
                    "stale",
                    relative,
                    f"the image was solved from {source} with sha256 {_short(digest)}, which {state}",
                    shard.path,
                    target,
                )
            )


def _check_rows(index: ResultsIndex, entry: RecordEntry, relative: str, add) -> None:
    import pandas as pd

    frame = pd.read_parquet(index.resolve(relative))
    if "image_id" not in frame.columns:
        return
    rows = frame[frame["level"] == "image"] if "level" in frame.columns else frame[frame["image_id"].notna()]
    if rows.empty:
        return
    missing = [c for c in LINK_COLUMNS if c not in rows.columns]
    if missing:
        add(
            Problem(
                "unlinked-rows",
                relative,
                f"per-image metric rows lack the link column(s) {missing}; they cannot be traced to artifacts",
                entry.path,
                snakemake_target(entry),
            )
        )
        return
    _check_links(index, entry, relative, rows, add)


def _check_links(index: ResultsIndex, entry: RecordEntry, relative: str, rows, add) -> None:
    """Every row's link hashes must equal the current hashes of the files that the records index.

    ``observation_sha256``: ``observations/<task>/<id>.npz``; ``run_sha256``: the solve output with the particles
    (``solve/<method>/<task>/<variant>/images/<id>.npz``; null for an image whose solve raised, which has no
    particles) -- the definitions of :mod:`dwgf.metrics.schema`.
    """
    bad: dict[str, list[str]] = {}

    def check(column: str, key: tuple[str, ...], locate) -> None:
        for values, stored in rows.groupby(list(key), dropna=False, sort=True)[column].unique().items():
            values = values if isinstance(values, tuple) else (values,)
            where = "/".join(map(str, values))
            try:
                path = locate(*values)
            except LookupError as error:
                bad.setdefault(column, []).append(f"{where}: {error}")
                continue
            now = index.sha256(path) if path else None
            if path and now is None:
                bad.setdefault(column, []).append(f"{where}: {path} does not exist")
                continue
            for digest in stored:
                digest = None if digest is None or digest != digest else digest  # NaN -> None
                if digest != now:
                    bad.setdefault(column, []).append(
                        f"{where}: rows say {_short(digest)} but {path or 'no artifact'} is {_short(now)}"
                    )

    check("observation_sha256", ("task", "image_id"), index.observation_path)

    def run_artifact(method: str, task: str, variant: str, image_id: str) -> str | None:
        return index.solve_image_paths(method, task, variant, image_id).get("npz")

    check("run_sha256", ("method", "task", "variant", "image_id"), run_artifact)
    for column, messages in bad.items():
        shown = "; ".join(messages[:3]) + (f"; ... ({len(messages)} in all)" if len(messages) > 3 else "")
        add(
            Problem(
                "stale-rows",
                relative,
                f"rows link to other artifacts than the current ones via {column}: {shown}",
                entry.path,
                snakemake_target(entry),
            )
        )


def _check_aggregation(index: ResultsIndex, entry: RecordEntry, add) -> None:
    """The Parquet outputs of a record that reads Parquet files must hold exactly the rows of those files.

    ``dwgf aggregate`` concatenates (and sorts) per-shard and per-set rows into ``metrics.parquet`` and
    ``set_metrics.parquet``: the multiset of all output rows must equal the multiset of all input rows.
    """
    import pandas as pd

    outputs = [p for p in entry.outputs if p.endswith(".parquet") and index.sha256(p) is not None]
    inputs = [p for p in entry.inputs if p.endswith(".parquet") and index.sha256(p) is not None]
    if not outputs or not inputs or len(inputs) != sum(p.endswith(".parquet") for p in entry.inputs):
        return  # nothing aggregated, or a missing input (reported as missing)
    made_frames = {p: pd.read_parquet(index.resolve(p)) for p in outputs}
    given_frames = {p: pd.read_parquet(index.resolve(p)) for p in inputs}
    columns = sorted(set.intersection(*(set(f.columns) for f in [*made_frames.values(), *given_frames.values()])))
    if not columns:
        return
    made = {p: Counter(_row_keys(f[columns])) for p, f in made_frames.items()}
    given = Counter()
    for frame in given_frames.values():
        given.update(_row_keys(frame[columns]))
    lost = given - sum(made.values(), Counter())
    extra = {p: rows - given for p, rows in made.items()}
    if not lost and not any(extra.values()):
        return
    # rows that appear in no input belong to the output holding them; lost rows to the outputs that gained
    # rows in their place (an edited row), or to every output when none did
    blamed = [p for p in outputs if extra[p]] or outputs
    for output in blamed:
        rows = extra[output] or lost
        example = {k: v for k, v in zip(columns, next(iter(rows))) if k in EXAMPLE_COLUMNS and v not in ("None", "nan")}
        add(
            Problem(
                "stale-rows",
                output,
                f"{sum(extra[output].values())} row(s) not in, and {sum(lost.values())} row(s) missing from, the "
                f"{len(inputs)} Parquet file(s) aggregated by {entry.path}; e.g. "
                f"{'row' if extra[output] else 'missing row'} {example}",
                entry.path,
                snakemake_target(entry),
            )
        )


def _row_keys(frame) -> list[tuple]:
    return [tuple(repr(v) for v in row) for row in frame.itertuples(index=False, name=None)]


def _code_notes(index: ResultsIndex, report: VerifyReport, strict: bool) -> None:
    commits: dict[str, list[str]] = {}
    dirty = []
    for entry in index.records.values():
        code = (entry.record or {}).get("code") or {}
        commits.setdefault(str(code.get("git_commit")), []).append(entry.path)
        if code.get("git_dirty"):
            dirty.append(entry.path)
    messages = []
    if dirty:
        messages.append(
            (dirty[0], f"{len(dirty)} record(s) were made from a checkout with uncommitted changes (e.g. {dirty[0]})")
        )
    if len(commits) > 1:
        summary = ", ".join(f"{c[:12]} ({len(p)} records)" for c, p in sorted(commits.items()))
        first = sorted(commits.values(), key=len)[0][0]
        messages.append((first, f"records were made by several code versions: {summary}"))
    for path, message in messages:
        if strict:
            report.problems.append(Problem("bad-record", path, message + " (--strict)", path))
        else:
            report.notes.append(message)


def _short(digest: str | None) -> str:
    return "none" if digest is None else f"{digest[:12]}…"


def _from_workdir(root: Path, relative: str, workdir: Path) -> str:
    path = Path(relative)
    if path.is_absolute():
        return str(path)
    return os.path.relpath(root / path, workdir)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False

"""One run per results folder: the suite lock and the invocation record (dwgf/audit/README.md, "Runs").

Lock. ``results/<suite>/.dwgf.lock`` is held with an exclusive ``flock(2)`` by the main Snakemake process of every
run (taken in the Snakefile's ``onstart``, i.e. after the DAG is built and before any job starts) and by ``dwgf
verify``. A second run on the same folder -- from any working directory, with any ``--configfile`` -- is refused
with a :class:`~dwgf.errors.DwgfError` naming the holder (host, pid, start time, working directory, command). The
kernel drops the lock when the holding process ends, however it ends (SIGKILL included), so a stale lock cannot
exist and nothing has to be unlocked by hand; the file's JSON only *describes* the last holder. Snakemake's own
``.snakemake/locks`` play no part: Snakemake removes that whole folder whenever any run in the working directory
ends.

Processes started by the holder (the workflow's jobs, e.g. the ``verify`` rule's ``dwgf verify``) inherit
:data:`LOCK_ENV` = ``<lock path>\\t<token>`` and are part of the run: for them :meth:`SuiteLock.acquire` succeeds
without locking again, but only while the lock file still names that token.

Invocation record. The run also writes ``results/<suite>/run/invocation.json`` (:func:`invocation`): working
directory, command line, Snakefile, absolute ``--configfile`` paths, ``--config`` overrides, cores, profiles, the
resolved suite config, Snakemake and dwgf versions, host, pid and start time. ``dwgf verify`` uses its config to
know which artifacts a run that never finished should have made, and its repair command replays it
(:func:`replay_command`).
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

from dwgf.errors import DwgfError
from dwgf.io import atomic_write_json
from dwgf.pipeline.layout import LAYOUT

LOCK_NAME = ".dwgf.lock"
LOCK_ENV = "DWGF_RUN_LOCK"
INVOCATION = LAYOUT["invocation"]
INVOCATION_SCHEMA = "dwgf.invocation/1"


def _holder_text(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "an unknown process (the lock file holds no description yet)"
    command = " ".join(holder.get("argv") or []) or "?"
    return (
        f"{holder.get('purpose', 'a run')} (pid {holder.get('pid')} on host {holder.get('host')}, started "
        f"{holder.get('started_at')}, working directory {holder.get('cwd')}, command: {command})"
    )


def read_holder(root: str | os.PathLike) -> dict[str, Any] | None:
    """The description in the lock file of ``root`` (the current or the last holder), or None."""
    try:
        text = (Path(root) / LOCK_NAME).read_text(encoding="utf-8")
        return json.loads(text) if text.strip() else None
    except (OSError, json.JSONDecodeError):
        return None


class SuiteLock:
    """Exclusive lock of one suite's results folder (module docstring)."""

    def __init__(self, root: str | os.PathLike, purpose: str):
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self.purpose = purpose
        self._fd: int | None = None
        self._read_only = False
        self.inherited = False
        self.token: str | None = None

    def acquire(self, export: bool = False) -> SuiteLock:
        """Take the lock or raise :class:`DwgfError` naming the holder. ``export``: hand it to child processes."""
        import fcntl

        from dwgf.provenance import utc_now

        if self._inherited_from_parent():
            self.inherited = True
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            fd, mode = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666), fcntl.LOCK_EX
        except OSError as error:
            if isinstance(error, PermissionError) or error.errno == errno.EROFS:
                return self._acquire_read_only(fcntl)  # e.g. a collaborator verifying a shared, read-only folder
            raise
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DwgfError(
                f"results folder {self.root} is in use by {_holder_text(read_holder(self.root))}; one run per "
                f"results folder: wait for it to end (the lock goes away with its process, even after kill -9)"
            ) from None
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise DwgfError(
                    f"cannot lock {self.path}: the file system does not support flock ({error.strerror}); "
                    f"put results/ on a file system with locking (local disk, NFSv4 with locks)"
                ) from error
            raise
        self._fd = fd
        self.token = uuid.uuid4().hex
        holder = {
            "purpose": self.purpose,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": utc_now(),
            "cwd": os.getcwd(),
            "argv": list(sys.argv),
            "token": self.token,
        }
        data = (json.dumps(holder, indent=2, sort_keys=True) + "\n").encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        if export:
            os.environ[LOCK_ENV] = f"{self.path.resolve()}\t{self.token}"
        return self

    def _acquire_read_only(self, fcntl) -> SuiteLock:
        """A folder this user cannot write: a shared lock on the existing lock file still waits for no one and
        refuses while a run holds the exclusive one (no lock file: no run ever started there)."""
        if not self.path.exists():
            return self
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DwgfError(f"results folder {self.root} is in use by {_holder_text(read_holder(self.root))}") from None
        self._fd, self._read_only = fd, True
        return self

    def _inherited_from_parent(self) -> bool:
        value = os.environ.get(LOCK_ENV, "")
        path, _, token = value.partition("\t")
        if not token or not self.path.exists() or Path(path) != self.path.resolve():
            return False
        holder = read_holder(self.root) or {}
        return holder.get("token") == token

    def release(self) -> None:
        import fcntl

        if self._fd is None:
            return
        try:
            if not self._read_only:
                os.ftruncate(self._fd, 0)  # no description of a holder that is gone
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None
            if os.environ.get(LOCK_ENV, "").endswith(f"\t{self.token}"):
                del os.environ[LOCK_ENV]

    def __enter__(self) -> SuiteLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def suite_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a workflow config that defines the selected suite (enough for :class:`dwgf.pipeline.plan.Plan`)."""
    suite = config["suite"]
    return {"suite": suite, "results": config["results"], "suites": {suite: config["suites"][suite]}}


def _options(argv: list[str], *names: str) -> list[list[str]]:
    """``[name, value]`` of every ``--name value`` / ``--name=value`` option in a command line."""
    found = []
    for k, word in enumerate(argv):
        for name in names:
            if word == name and k + 1 < len(argv):
                found.append([name, argv[k + 1]])
            elif word.startswith(name + "="):
                found.append([name, word.split("=", 1)[1]])
    return found


def _config_words(argv: list[str]) -> list[str]:
    """The ``key=value`` words given after ``--config`` / ``-C`` (as typed, so a replay parses them the same)."""
    words, taking = [], False
    for word in argv[1:]:
        if word in ("--config", "-C"):
            taking = True
        elif word.startswith("--config="):
            words.append(word.split("=", 1)[1])
            taking = True
        elif word.startswith("-"):
            taking = False
        elif taking:
            words.append(word)
    return words


def invocation(workflow, config: dict[str, Any]) -> dict[str, Any]:
    """What is needed to replay the current Snakemake run (module docstring); ``workflow`` is Snakemake's."""
    import snakemake

    from dwgf.provenance import code_version, utc_now

    settings = workflow.config_settings
    argv = list(sys.argv)
    return {
        "schema": INVOCATION_SCHEMA,
        "cwd": os.getcwd(),
        "argv": argv,
        "snakefile": str(Path(workflow.main_snakefile).resolve()),
        "configfiles": [str(Path(f).resolve()) for f in settings.configfiles],
        "config_overrides": {str(k): v for k, v in dict(settings.config).items()},
        "config_args": _config_words(argv),
        "cores": workflow.cores if workflow.local_exec else None,
        "jobs": None if workflow.local_exec else workflow.nodes,
        "profiles": _options(argv, "--profile", "--workflow-profile"),
        "env_profile": os.environ.get("SNAKEMAKE_PROFILE"),
        "executor": getattr(getattr(workflow, "executor_plugin", None), "name", None),
        "results": str(Path(config["results"], config["suite"]).resolve()),
        "config": suite_config(config),
        "snakemake": snakemake.__version__,
        "code": code_version(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": utc_now(),
    }


def replay_command(record: dict[str, Any], forcerun: list[str]) -> str:
    """One shell command that replays ``record`` (an invocation) with the jobs writing ``forcerun`` forced.

    Targets are given relative to the recorded working directory. ``--rerun-incomplete`` lets it continue a run
    that was killed; the default target is used, so every forced job's downstream jobs re-run too.
    """
    cores = record.get("cores")
    words = ["snakemake", *(["-c", str(cores)] if cores else []), "-s", record["snakefile"]]
    for flag, profile in record.get("profiles") or []:
        words += [flag, profile]
    for configfile in record.get("configfiles") or []:
        words += ["--configfile", configfile]
    words += ["-j", str(record["jobs"])] if record.get("jobs") else []
    words += ["--rerun-incomplete"]
    if forcerun:
        words += ["--forcerun", *forcerun]
    config_args = record.get("config_args") or []
    if config_args:
        words += ["--config", *config_args]  # last: --config takes every following word
    return f"cd {shlex.quote(record['cwd'])} && " + " ".join(shlex.quote(str(w)) for w in words)


class SuiteRun:
    """The Snakefile's hooks: ``onstart`` -> :meth:`start`, ``onsuccess`` / ``onerror`` -> :meth:`finish`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.lock: SuiteLock | None = None

    def start(self, workflow, config: dict[str, Any]) -> dict[str, Any]:
        """Take the suite lock (refusing a second run) and write ``run/invocation.json``."""
        self.lock = SuiteLock(self.root, "a snakemake run").acquire(export=True)
        if self.lock.inherited:
            return {}
        record = invocation(workflow, config)
        atomic_write_json(self.root / INVOCATION, record)
        return record

    def finish(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def is_suite_folder(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds a suite's run records (the root record or the invocation record)."""
    return (Path(root) / LAYOUT["root_record"]).is_file() or (Path(root) / INVOCATION).is_file()


def read_invocation(root: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(root) / INVOCATION
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("schema") == INVOCATION_SCHEMA else None

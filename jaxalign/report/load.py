"""Reading one run's result files, or every run under a sweep directory, into columns.

A run directory holds ``questions/<qid>.parquet`` (one row per path, node, teacher and algorithm),
``questions/<qid>.json`` (the question's summary), ``questions/<qid>.tree.npz`` (the skeleton tree),
optionally ``questions/<qid>.children.parquet`` (one row per child token of a scored node) and
``run.json`` or ``config.json`` (the config). Reports never pool runs: a sweep is a list of runs.
"""

from __future__ import annotations

import dataclasses
import json
from functools import cached_property
from pathlib import Path
from typing import Optional

import numpy as np

from jaxalign.errors import JaxalignError
from jaxalign.integrity import damage
from jaxalign.pipeline.phase2 import CHILD_SCHEMA, ROW_SCHEMA

DEFAULT_CONVENTION = "renormalized"
# the pipeline's row schemas, the one definition of the result files; `convention` is optional so
# that files written before it existed still read (as the renormalised convention)
ROW_COLUMNS = tuple(c for c in ROW_SCHEMA if c != "convention")
CHILD_COLUMNS = tuple(CHILD_SCHEMA)
STRING_COLUMNS = ("qid", "teacher", "algorithm", "convention")
BOOL_COLUMNS = ("correct", "valid", "in_s")


@dataclasses.dataclass(frozen=True)
class Rows:
    """A column table: equal-length 1-D numpy arrays. String columns are int32 codes into ``labels``.

    Codes follow the sorted order of the labels, so the same results always give the same codes.
    """

    columns: dict[str, np.ndarray]
    labels: dict[str, tuple[str, ...]]

    @classmethod
    def from_columns(cls, columns: dict[str, np.ndarray]) -> "Rows":
        """Rows from plain arrays; the STRING_COLUMNS among them may hold strings."""
        out, labels = {}, {}
        for name, values in columns.items():
            if name in STRING_COLUMNS:
                out[name], labels[name] = _encode(np.asarray(values))
            else:
                out[name] = np.asarray(values)
        return cls(out, labels)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    def where(self, mask: np.ndarray) -> "Rows":
        return Rows({k: v[mask] for k, v in self.columns.items()}, self.labels)

    def with_columns(self, **columns: np.ndarray) -> "Rows":
        return Rows({**self.columns, **columns}, self.labels)

    def code(self, column: str, label: str) -> int:
        """The code of ``label`` in a string column; -1 (matching no row) if absent."""
        names = self.labels[column]
        return names.index(label) if label in names else -1

    def present(self, column: str) -> list[str]:
        """The labels of a string column that occur in these rows, sorted."""
        return [self.labels[column][c] for c in np.unique(self.columns[column])]

    def is_(self, column: str, label: str) -> np.ndarray:
        return self.columns[column] == self.code(column, label)

    def decoded(self, column: str) -> np.ndarray:
        """A string column as an object array of labels."""
        return np.asarray(self.labels[column], dtype=object)[self.columns[column]]


def _encode(strings: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    labels, codes = np.unique(np.asarray(strings, dtype=str), return_inverse=True)
    return codes.astype(np.int32).reshape(-1), tuple(labels.tolist())


def _encode_arrow(column) -> tuple[np.ndarray, tuple[str, ...]]:
    """A pyarrow string column (nulls read as "") as sorted-label codes, without a Python loop."""
    import pyarrow.compute as pc

    encoded = pc.fill_null(column.cast("string"), "").combine_chunks().dictionary_encode()
    names = np.asarray(encoded.dictionary.to_pylist(), dtype=str)
    order = np.argsort(names, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[encoded.indices.to_numpy(zero_copy_only=False)].astype(np.int32), tuple(names[order].tolist())


def check_columns(names: list[str], required: tuple[str, ...], source: str) -> None:
    """Raises JaxalignError naming ``source`` and the columns it lacks."""
    missing = [c for c in required if c not in names]
    if missing:
        raise JaxalignError(f"{source}: missing columns {missing}; another jaxalign version wrote it. Build the "
                            "report with that version, or delete the question's .json and .parquet and rerun the "
                            "run to recompute it")


def table_to_rows(table) -> Rows:
    """A pyarrow table as Rows: string columns encoded, numbers as numpy (NaN for nulls)."""
    columns, labels = {}, {}
    for name in table.column_names:
        if name in STRING_COLUMNS:
            columns[name], labels[name] = _encode_arrow(table.column(name))
            continue
        values = table.column(name).to_numpy(zero_copy_only=False)
        if values.dtype == object:  # a column that is all null (an empty file) or mixed
            columns[name] = np.asarray([np.nan if v is None else v for v in values], np.float64)
        else:
            columns[name] = values
    return Rows(columns, labels)


def read_rows(files: list[Path], required: tuple[str, ...]) -> Rows:
    """Concatenates parquet files into Rows. Files with no rows are left out."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for path in files:
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as err:
            raise JaxalignError(f"{path}: unreadable result file ({err}); delete it and the question's .json to "
                                "recompute that question") from err
        if table.num_rows:
            check_columns(table.column_names, required, str(path))
            tables.append(table)
    if not tables:
        dtype = {**{c: np.int32 for c in STRING_COLUMNS}, **{c: bool for c in BOOL_COLUMNS}}
        return Rows({c: np.zeros(0, dtype.get(c, np.float64)) for c in required},
                    {c: () for c in required if c in STRING_COLUMNS})
    return table_to_rows(pa.concat_tables(tables, promote_options="default"))  # newer columns: null in older files


def with_convention(rows: Rows) -> Rows:
    """Fills ``convention`` (absent, or null, in files written before it existed) with the default one."""
    if "convention" in rows and "" not in rows.labels["convention"]:
        return rows
    names = rows.decoded("convention") if "convention" in rows else np.full(len(rows), "", object)
    codes, labels = _encode(np.where(names == "", DEFAULT_CONVENTION, names))
    return Rows({**rows.columns, "convention": codes}, {**rows.labels, "convention": labels})


@dataclasses.dataclass
class Run:
    """One run directory's results. ``name`` labels it in reports (its path relative to a sweep)."""

    root: Path
    name: str

    @cached_property
    def config(self) -> dict:
        """The resolved config from run.json (after a run) or config.json (while it finishes)."""
        for file in ("run.json", "config.json"):
            path = self.root / file
            if path.is_file():
                data = json.loads(path.read_text())
                return data.get("config", data) if file == "run.json" else data
        return {}

    @cached_property
    def models(self) -> list[dict]:
        """run.json's model records (id, roles, directory, ...); [] before the run has finished."""
        path = self.root / "run.json"
        return json.loads(path.read_text()).get("models", []) if path.is_file() else []

    @cached_property
    def damaged(self) -> dict[str, str]:
        """{question file stem: what is wrong} for every question that started (it has a file or a lock
        in questions/) but whose manifest and files do not check out (:mod:`jaxalign.integrity`)."""
        folder = self.root / "questions"
        stems = {_stem(p.name) for p in folder.glob("*")} if folder.is_dir() else set()
        found = {stem: damage(folder / stem) for stem in sorted(stems - {None})}
        return {stem: problem for stem, problem in found.items() if problem is not None}

    def _intact(self, path: Path) -> bool:
        return _stem(path.name) not in self.damaged

    @cached_property
    def questions(self) -> list[dict]:
        """Summaries of the questions whose files check out, sorted by qid (see :attr:`damaged`)."""
        out = []
        for path in sorted(p for p in (self.root / "questions").glob("*.json")
                           if self._intact(p)):
            try:
                out.append(json.loads(path.read_text()))
            except json.JSONDecodeError as err:
                raise JaxalignError(f"{path}: not valid JSON ({err}); delete it (and the question's other "
                                    "files) to recompute that question") from err
        return sorted(out, key=lambda q: q["qid"])

    @cached_property
    def rows(self) -> Rows:
        files = [p for p in sorted((self.root / "questions").glob("*.parquet"))
                 if not p.name.endswith(".children.parquet") and self._intact(p)]
        return with_convention(read_rows(files, ROW_COLUMNS))

    @cached_property
    def children(self) -> Optional[Rows]:
        """Per-child rows (P_theta, P_te, P̂_succ, visits), or None if this run did not write them."""
        files = [p for p in sorted((self.root / "questions").glob("*.children.parquet")) if self._intact(p)]
        return read_rows(files, CHILD_COLUMNS) if files else None

    def tree(self, qid: str) -> Optional[dict[str, np.ndarray]]:
        """The skeleton tree arrays of one question, or None if it has none (a skipped question)."""
        path = self.root / "questions" / f"{safe_name(qid)}.tree.npz"
        if not path.is_file():
            return None
        with np.load(path) as data:
            return {k: data[k] for k in data.files}

    @property
    def n_sig(self) -> int:
        return int(self.config.get("budget", {}).get("n_sig", 20))

    @property
    def title(self) -> str:
        c = self.config
        student, dataset = c.get("student", {}).get("name", "?"), c.get("dataset", {}).get("name", "?")
        return f"student {student}, dataset {dataset}, {len(c.get('teachers', {}))} teachers, seed {c.get('seed', '?')}"


_QUESTION_SUFFIXES = (".manifest", ".children.parquet", ".tree.npz", ".parquet", ".json", ".lock")


def _stem(name: str) -> Optional[str]:
    """``q1.tree.npz`` -> ``q1``; None for a file that is not a question's (e.g. a temporary file)."""
    for suffix in _QUESTION_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def safe_name(name: str) -> str:
    """The file-name form of a qid or teacher name (the pipeline's rule for question files)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def run_dirs(root: str | Path) -> list[Path]:
    """Every run directory (one with questions/ or shards/) at or under ``root``, sorted."""
    root = Path(root)
    marks = [*root.glob("**/questions"), *root.glob("**/shards")]
    return sorted({p.parent for p in marks if p.is_dir()})


def load_runs(root: str | Path) -> list[Run]:
    """The runs at or under ``root``, named by their path relative to it ("." for root itself)."""
    root = Path(root)
    found = run_dirs(root)
    if not found:
        raise JaxalignError(f"{root}: no runs found (no questions/ or shards/ below it); pass a run directory "
                            "(hydra.run.dir) or a sweep directory (hydra.sweep.dir)")
    return [Run(d, str(d.relative_to(root))) for d in found]

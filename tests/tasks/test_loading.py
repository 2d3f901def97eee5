"""Loading rows: local JSONL/Parquet, hub ids through a stand-in `datasets`, malformed rows, ids, subsamples."""

import hashlib
import json
import shutil
import sys
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxalign.errors import ConfigError, JaxalignError
from jaxalign.tasks import get_task

FIXTURES = Path(__file__).parent / "fixtures"
NAMES = ("boolq", "mmlu", "aime2025")


def rows(name: str, prefix: str = "") -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / f"{prefix}{name}.jsonl").read_text().splitlines()]


def write_jsonl(path: Path, items) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return path


def reference_qid(name: str, row: dict) -> str:
    fields = {"boolq": lambda r: [r["question"], r["passage"]],
              "mmlu": lambda r: [r["question"], *r["choices"]],
              "aime2025": lambda r: [r.get("problem") or r["question"]]}[name](row)
    return f"{name}-" + hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:12]


@pytest.mark.parametrize("name", NAMES)
def test_fixture_rows_load_with_content_ids(name):
    task = get_task(name, path=str(FIXTURES / f"{name}.jsonl"))
    assert task.skipped == {}
    pool = task.pool()
    raw = rows(name)
    assert len(pool) == len(raw) == 8 and task.skipped == {}
    assert [q.qid for q in pool] == [reference_qid(name, r) for r in raw]
    assert [q.answer for q in pool] == [r["answer"] for r in raw]  # the hub's own value, type included


@pytest.mark.parametrize("name", NAMES)
def test_ids_and_subsamples_do_not_depend_on_file_order_or_format(name, tmp_path):
    jsonl = get_task(name, path=str(FIXTURES / f"{name}.jsonl"))
    shuffled = write_jsonl(tmp_path / f"{name}.jsonl", rows(name)[::-1])
    parquet = tmp_path / f"{name}.parquet"
    pq.write_table(pa.Table.from_pylist(rows(name)), parquet)
    for seed in (0, 1, 7):
        picked = jsonl.questions(5, seed)
        assert len({q.qid for q in picked}) == 5
        assert picked == get_task(name, path=str(shuffled)).questions(5, seed)
        assert picked == get_task(name, path=str(parquet)).questions(5, seed)
        assert picked == jsonl.questions(5, seed) and picked[:3] == jsonl.questions(3, seed)
    orders = {tuple(q.qid for q in jsonl.questions(8, seed)) for seed in range(6)}
    assert len(orders) > 1  # the seed matters
    ranked = sorted(jsonl.pool(), key=lambda q: hashlib.sha256(f"3:{q.qid}".encode()).digest())
    assert jsonl.questions(4, 3) == ranked[:4]


@pytest.mark.parametrize("name, expected", [
    ("boolq", {"missing 'passage'": 1, "'answer' is not a bool": 1, "'question' is not a non-empty string": 1,
               "missing 'question'": 1, "duplicate question": 1, "line is not valid JSON": 1,
               "row is not a JSON object": 1}),
    ("mmlu", {"'choices' is not a list of 4": 1, "'answer' is not an int 0-3": 3, "missing 'choices'": 1,
              "'choices' holds an empty or non-string choice": 1, "missing 'answer'": 1}),
    ("aime2025", {"'answer' is not an integer 0-999": 4, "missing 'answer'": 1,
                  "missing 'problem' or 'question'": 1, "'problem' is not a non-empty string": 1}),
])
def test_malformed_rows_are_skipped_and_counted(name, expected, caplog):
    task = get_task(name, path=str(FIXTURES / f"malformed_{name}.jsonl"))
    with caplog.at_level("WARNING"):
        assert len(task.questions(1, 0)) == 1
    assert task.skipped == expected
    assert f"skipped {sum(expected.values())} malformed rows of 8" in caplog.text


def test_aime_accepts_question_and_int_answer_layouts(tmp_path):
    path = write_jsonl(tmp_path / "aime.jsonl", [{"question": "Find $6 \\cdot 7$.", "answer": 42},
                                                 {"problem": "Find $2^3$.", "answer": "008", "question": "ignored"}])
    task = get_task("aime2025", path=str(path))
    first, second = task.pool()
    assert first.answer == 42 and first.user.endswith("\nFind $6 \\cdot 7$.") and task.grade("Answer: 42", first.answer)
    assert second.answer == "008" and second.user.endswith("\nFind $2^3$.") and task.grade("\\boxed{8}", second.answer)


def test_nothing_is_read_before_questions_are_asked_for(tmp_path):
    path = write_jsonl(tmp_path / "boolq.jsonl", rows("boolq")[:2])
    task = get_task("boolq", path=str(path))
    write_jsonl(path, rows("boolq")[2:5])  # changed after get_task: the new rows are the ones read
    assert len(task.pool()) == 3
    write_jsonl(path, rows("boolq"))  # read once: later changes are not seen
    assert len(task.questions(3, 0)) == 3 and len(task.pool()) == 3


def test_bad_counts_and_unusable_files(tmp_path):
    task = get_task("mmlu", path=str(FIXTURES / "mmlu.jsonl"))
    with pytest.raises(JaxalignError, match="asked for 9 questions but .* has 8 usable rows"):
        task.questions(9, 0)
    with pytest.raises(ConfigError, match="at least 1"):
        task.questions(0, 0)
    empty = write_jsonl(tmp_path / "mmlu.jsonl", [{"question": "q?", "answer": 1}])
    with pytest.raises(JaxalignError, match="no usable rows .*missing 'choices'"):
        get_task("mmlu", path=str(empty)).questions(1, 0)
    broken = tmp_path / "mmlu.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(JaxalignError, match="cannot read .* as Parquet"):
        get_task("mmlu", path=str(broken)).questions(1, 0)


class FakeDatasets(types.ModuleType):
    """Stands in for the `datasets` package: serves rows per (hub id, config, split) and records calls."""

    def __init__(self, tables):
        super().__init__("datasets")
        self.tables, self.calls = tables, []

    def load_dataset(self, hub, config=None, *, split):
        self.calls.append((hub, config, split))
        if (hub, config, split) not in self.tables:
            raise FileNotFoundError(f"no {hub}/{config}/{split}")
        return list(self.tables[hub, config, split])


def test_hub_ids_load_through_datasets_with_their_layouts(monkeypatch):
    first = rows("aime2025")[:3]
    second = [{"question": r["problem"], "answer": r["answer"]} for r in rows("aime2025")[3:]]  # the other layout
    parts = [("opencompass/AIME2025", "AIME2025-I", "test"), ("opencompass/AIME2025", "AIME2025-II", "test")]
    fake = FakeDatasets({parts[0]: first, parts[1]: second,
                         ("cais/mmlu", "all", "test"): rows("mmlu"),
                         ("someone/boolq-copy", None, "test"): rows("boolq")})
    monkeypatch.setitem(sys.modules, "datasets", fake)
    aime = get_task("aime2025")
    assert fake.calls == []  # nothing loaded yet
    assert [q.qid for q in aime.pool()] == [reference_qid("aime2025", r) for r in first + second]
    assert fake.calls == parts
    assert len(get_task("mmlu").pool()) == 8 and fake.calls[-1] == ("cais/mmlu", "all", "test")
    local = get_task("boolq", path=str(FIXTURES / "boolq.jsonl")).pool()
    assert get_task("boolq", hub="someone/boolq-copy").pool() == local  # an unknown id: no config, split test
    only_one = get_task("aime2025", config="AIME2025-II")
    assert len(only_one.pool()) == len(second)

    with pytest.raises(JaxalignError, match="could not load 'google/boolq' split 'validation'.*path="):
        get_task("boolq").pool()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(JaxalignError, match="HF_HUB_OFFLINE is set: only a split already in the local cache"):
        get_task("boolq", split="train").pool()


def test_missing_datasets_package_is_named_with_the_path_alternative(monkeypatch):
    fake = FakeDatasets({("cais/mmlu", "all", "test"): rows("mmlu")})
    monkeypatch.setitem(sys.modules, "datasets", fake)
    built = get_task("mmlu")  # built while `datasets` was importable ...
    monkeypatch.setitem(sys.modules, "datasets", None)  # ... then it is gone: `import datasets` fails
    for make in (lambda: get_task("mmlu"), built.pool):
        with pytest.raises(ConfigError, match=r"needs the `datasets` package.*pip install datasets.*path="):
            make()
    assert len(get_task("mmlu", path=str(FIXTURES / "mmlu.jsonl")).pool()) == 8  # local files need no datasets


def test_source_options_are_checked_up_front(tmp_path):
    good = str(FIXTURES / "boolq.jsonl")
    with pytest.raises(ConfigError, match="does not exist"):
        get_task("boolq", path=str(tmp_path / "absent.jsonl"))
    with pytest.raises(ConfigError, match=r"must end in one of \('.jsonl', '.parquet'\)"):
        get_task("boolq", path=str(shutil.copy(good, tmp_path / "boolq.csv")))
    with pytest.raises(ConfigError, match="either path="):
        get_task("boolq", path=good, split="train")
    with pytest.raises(ConfigError, match="'owner/name'"):
        get_task("boolq", hub="boolq")
    with pytest.raises(ConfigError, match="config must be"):
        get_task("boolq", hub="google/boolq", config=3)

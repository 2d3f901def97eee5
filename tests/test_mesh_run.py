"""A whole run on meshes: student.mesh={data: 2, model: 2}, an external teacher on {data: 1, model: 4} and
the context model that writes SELF-1C's demonstrations on context_mesh={data: 2, model: 4}, on 8 host CPU
devices, gives the demonstrations and the rows of the same run without a mesh.

The embedded toy's vocabulary (101) splits no way, so both runs use copies of the toy student and
teacher whose vocabulary is padded to 104 rows of zeros (:func:`padded_toy`): a padded id gets
logit 0, far below the toy's answers, and both runs share the checkpoints. The worker
(:func:`worker`) runs in one subprocess started with ``--xla_force_host_platform_device_count=8``
(jax reads XLA_FLAGS at import) and saves what the tests compare: the two runs' rows, where the
models were placed, and the bytes one device holds against :mod:`jaxalign.cost`'s arithmetic.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxalign import meshes

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "jaxalign" / "assets" / "toy"
PADDED_VOCAB = 104  # divisible by 2, 4 and 8
# the context model's mesh spans 8 devices, the others 4: it writes text only, so it need not match them
STUDENT_MESH, TEACHER_MESH, CONTEXT_MESH = (2, 2), (1, 4), (2, 4)
# RUN on one device needs a peak of 2.40 MB (weights 1.04 MB, the student's sampler cache 1.36 MB); on the
# meshes above, 1.4 MB on the first device (the pre-pass: the context model's round of demonstrations for
# both questions, 32 rows). Of 1.7 MB, the check's 90% refuses the first and passes the second.
FITS_MESHES_ONLY_GB = 0.0017
# Rows agree to float32 round-off of the sharded sums: floats within 1e-5 + 1e-5 relative (probabilities
# differ by at most 2.6e-6; the KL, up to 4.3 nats, by 2.0e-5); the cosine, whose small gradient norms
# amplify that round-off, within 5e-5 (measured 1.6e-5). Every discrete column is equal.
FLOAT_ATOL = {"cosine": 5e-5}
# the toy teacher writes SELF-1C's demonstrations and is no teacher itself: a context-only model
CONTEXT_ONLY = ["+teachers.SELF-1C.source=toy:teacher", "~teachers.toy-teacher"]
RUN = ["budget=smoke", "budget.max_response_tokens=64", "dataset.num_questions=2", "~teachers.SELF-1C1W",
       "~teachers.SELF-SUM-1C"]


def padded_toy(root: Path, vocab: int = PADDED_VOCAB) -> Path:
    """Copies of the embedded toy student and teacher (``root/student``, ``root/teacher``) with the
    vocabulary padded to ``vocab`` with zero embedding rows (tied: the head's rows too), and a copy of
    that teacher as a context-only model (``root/source``). Returns root."""
    import dataclasses

    import jax.numpy as jnp

    from jaxalign.models import load_qwen3
    from jaxalign.models.loading import save_qwen3

    for name in ("student", "teacher"):
        cfg, params = load_qwen3(TOY / name, jnp.float32)
        embed = jnp.zeros((vocab, cfg.hidden_size), jnp.float32).at[: cfg.vocab_size].set(params.embed)
        out = save_qwen3(params.replace(embed=embed), dataclasses.replace(cfg, vocab_size=vocab), root / name)
        for extra in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            shutil.copy(TOY / name / extra, out / extra)
    shutil.copytree(root / "teacher", root / "source")
    return root


def mesh_overrides(root: Path) -> list[str]:
    """The padded toy, with the student and the external teacher on their meshes."""
    return [*context_run(root), f"student.mesh={{data: {STUDENT_MESH[0]}, model: {STUDENT_MESH[1]}}}",
            f"+teachers.toy-teacher.mesh={{data: {TEACHER_MESH[0]}, model: {TEACHER_MESH[1]}}}",
            f"context_mesh={{data: {CONTEXT_MESH[0]}, model: {CONTEXT_MESH[1]}}}"]


def padded_run(root: Path) -> list[str]:
    return [*RUN, f"student.path={root / 'student'}", f"teachers.toy-teacher.model={root / 'teacher'}"]


def context_run(root: Path) -> list[str]:
    """The padded toy, with SELF-1C's demonstrations written by the context-only model ``root/source``."""
    return [*padded_run(root), f"+teachers.SELF-1C.source={root / 'source'}"]


def _device_bytes(tree, device) -> int:
    """Bytes of ``tree``'s arrays that live on ``device``."""
    import jax

    return sum(s.data.nbytes for leaf in jax.tree.leaves(tree) for s in leaf.addressable_shards if s.device == device)


def worker(out_dir: str) -> None:
    """Runs in the 8-device subprocess; writes rows_{plain,mesh}/ and facts.json under ``out_dir``."""
    import jax
    import jax.numpy as jnp

    from jaxalign import config as C
    from jaxalign import cost
    from jaxalign.calibrate import Shape
    from jaxalign.errors import ConfigError
    from jaxalign.models import init_cache, load_config
    from jaxalign.models.sharding import cache_axes, rules_for, shardings
    from jaxalign.pipeline.jobs import build_job, model_roles
    from jaxalign.pipeline.models import JobModels
    from jaxalign.run import execute
    from tests.test_run import composed

    assert jax.device_count() == 8, jax.devices()
    out = Path(out_dir)
    root = padded_toy(out / "models")
    facts: dict = {}

    # the memory check: refused without the meshes, passed with them, at the same device memory
    limit = f"device_memory_gb={FITS_MESHES_ONLY_GB}"
    try:
        build_job(C.from_omegaconf(composed(*padded_run(root), limit)), out / "refused", lambda: False)
        facts["refused"] = None
    except ConfigError as err:
        facts["refused"] = str(err)
    mesh_cfg = C.from_omegaconf(composed(*mesh_overrides(root), limit))
    C.validate(mesh_cfg)

    # where the weights went, and one device's bytes against the arithmetic
    models = JobModels(mesh_cfg, model_roles(mesh_cfg), mesh_cfg.student.path)
    first = jax.devices()[0]
    for role, model_id in (("student", mesh_cfg.student.path), ("teacher", str(root / "teacher"))):
        policy = models.policy(model_id)
        shape = Shape.of(policy.cfg, "float32")
        facts[role] = {"mesh": dict(policy.mesh.shape),
                       "embed_spec": [str(a) for a in policy.params.embed.sharding.spec],
                       "devices": len(policy.params.embed.sharding.device_set),
                       "weights_on_first": _device_bytes(policy.params, first),
                       "weights_formula": cost.weight_bytes_per_device(shape, policy.mesh.shape["model"]),
                       "kv_split": cost.kv_split(shape, policy.mesh.shape["model"])}
    caches = []
    student_cfg = load_config(root / "student")
    shape = Shape.of(student_cfg, "float32")
    for data, model, rows, slots in ((2, 2, 16, 24), (1, 4, 8, 16), (4, 2, 8, 8), (8, 1, 16, 8)):
        mesh = jax.make_mesh((data, model), ("data", "model"), devices=jax.devices()[: data * model])
        cache = jax.device_put(init_cache(student_cfg, rows, slots, jnp.float32),
                               shardings(cache_axes(student_cfg), mesh, rules_for(student_cfg, mesh)))
        caches.append({"mesh": [data, model], "on_first": _device_bytes((cache.k, cache.v), first),
                       "formula": -(-rows // data) * slots * cost.kv_slot_bytes_per_device(shape, model)})
    facts["caches"] = caches

    # the two runs
    for name, overrides in (("plain", context_run(root)), ("mesh", [*mesh_overrides(root), limit])):
        record = execute(composed(*overrides), out / f"run_{name}")
        facts[f"{name}_models"] = {Path(m["id"]).name: m["mesh"] for m in record["models"]}
        facts[f"{name}_totals"] = record["totals"]
    (out / "facts.json").write_text(json.dumps(facts))


@pytest.fixture(scope="module")
def eight(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mesh_run")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", "import sys; from tests.test_mesh_run import worker; "
                             "worker(sys.argv[1])", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]
    return out


def _facts(out: Path) -> dict:
    return json.loads((out / "facts.json").read_text())


def test_mesh_run_rows_equal_the_plain_run(eight):
    import pyarrow.parquet as pq

    plain = sorted((eight / "run_plain" / "questions").glob("*.parquet"))
    assert plain, "the plain run wrote no rows"
    rows = 0
    for path in plain:
        want = pq.read_table(path).to_pydict()
        got = pq.read_table(eight / "run_mesh" / "questions" / path.name).to_pydict()
        assert set(got) == set(want)
        for column, values in want.items():
            theirs, mine = np.array(values), np.array(got[column])
            if theirs.dtype.kind == "f":
                np.testing.assert_allclose(mine, theirs, atol=FLOAT_ATOL.get(column, 1e-5), rtol=1e-5,
                                           err_msg=f"{path.name}:{column}")
            else:
                np.testing.assert_array_equal(mine, theirs, err_msg=f"{path.name}:{column}")
        rows += len(want["qid"])
    assert rows > 0, "no question was analysed: the comparison would be empty"
    for summary in (eight / "run_plain" / "questions").glob("*.json"):
        if summary.name.endswith(".manifest.json"):
            continue
        mine = json.loads((eight / "run_mesh" / "questions" / summary.name).read_text())
        theirs = json.loads(summary.read_text())
        assert mine["budget"] == theirs["budget"] and mine["pass_rate"] == theirs["pass_rate"], summary.name
    facts = _facts(eight)
    assert facts["mesh_totals"]["rollouts"] == facts["plain_totals"]["rollouts"] > 0


def test_each_model_is_placed_on_its_own_mesh(eight):
    facts = _facts(eight)
    assert facts["student"]["mesh"] == {"data": 2, "model": 2} and facts["student"]["devices"] == 4
    assert facts["teacher"]["mesh"] == {"data": 1, "model": 4} and facts["teacher"]["devices"] == 4
    assert facts["student"]["embed_spec"] == facts["teacher"]["embed_spec"] == ["model", "None"]  # V split
    assert facts["teacher"]["kv_split"] == 1 and facts["student"]["kv_split"] == 2  # 2 kv heads: split by 2, not 4
    recorded = facts["mesh_models"]  # run.json says where each model ran
    assert recorded == {"student": {"data": 2, "model": 2}, "teacher": {"data": 1, "model": 4},
                        "source": {"data": 2, "model": 4}}
    assert set(facts["plain_models"]) == set(recorded)
    assert all(m == {"data": 1, "model": 1} for m in facts["plain_models"].values())


def test_the_context_model_on_its_mesh_writes_the_same_demonstrations(eight):
    plain = sorted((eight / "run_plain" / "demos").rglob("*.json"))
    assert plain and all(p.parent.name.endswith("_source") for p in plain), plain  # by the context model
    for path in plain:
        mine = eight / "run_mesh" / path.relative_to(eight / "run_plain")
        assert json.loads(mine.read_text()) == json.loads(path.read_text()), path.name


def test_one_devices_bytes_match_the_arithmetic(eight):
    """Weights and KV caches on the first device, summed over the arrays' shards, against jaxalign.cost."""
    facts = _facts(eight)
    for role in ("student", "teacher"):
        assert facts[role]["weights_on_first"] == facts[role]["weights_formula"], role
    for cache in facts["caches"]:
        assert cache["on_first"] == cache["formula"], cache


def test_the_meshes_make_a_refused_run_fit(eight):
    refused = _facts(eight)["refused"]
    assert refused is not None, "the one-device run was not refused"
    assert "needs a peak of" in refused and "largest KV cache" in refused and "student.mesh.model" in refused


# ---------------------------------------------------------------- the settings, on one device


def _validated(*overrides: str):
    from jaxalign import config as C
    from tests.test_run import composed

    cfg = C.from_omegaconf(composed(*overrides))
    C.validate(cfg)
    return cfg


def test_defaults_are_one_device_and_no_mesh(tmp_path):
    from jaxalign import config as C
    from jaxalign.pipeline.jobs import model_roles
    from jaxalign.pipeline.models import JobModels, job_meshes

    cfg = _validated()
    assert cfg.student.mesh == C.MeshConf(1, 1) and all(t.mesh is None for t in cfg.teachers.values())
    assert job_meshes(cfg, list(model_roles(cfg))) == {"toy:student": (1, 1), "toy:teacher": (1, 1)}
    assert meshes.mesh_devices(cfg) is None
    models = JobModels(cfg, model_roles(cfg), cfg.student.path)
    assert models.mesh("toy:student") is None and models.mesh("toy:teacher") is None  # loaded as before meshes


@pytest.mark.parametrize("overrides, message", [
    (["+teachers.SELF-1C.mesh={data: 1, model: 2}"],
     "teachers.SELF-1C.mesh: a self teacher runs on the student's weights, so on the student's mesh; remove "
     "teachers.SELF-1C.mesh and set student.mesh instead"),
    (["student.mesh.data=0"], "student.mesh.data: 0 must be >= 1, or -1 for all the devices that model=1 leaves"),
    (["student.mesh.model=0"], "student.mesh.model: 0 must be >= 1"),
    (["+teachers.toy-teacher.mesh={data: 1, model: -1}"], "teachers.toy-teacher.mesh.model: -1 must be >= 1"),
    (["student.mesh.model=2"], "student.mesh.model: tensor parallelism model=2 does not divide vocab_size=101"),
    (["student.mesh.data=4"], "student.mesh: data=4 x model=1 needs 4 devices, but jax sees 1; run the job with 4 "
                              "GPUs (launch/sweep.sh asks SLURM for them) or shrink the mesh"),
    (["student.mesh.data=2", "+teachers.toy-teacher.mesh={data: 4, model: 1}"],
     "student.mesh: the meshes span different numbers of devices (student.mesh spans 2, teachers.toy-teacher.mesh "
     "spans 4)"),
    (["+teachers.again={kind: external, model: 'toy:student', mesh: {data: 2, model: 1}}"],
     "teachers.again.mesh: toy:student is loaded once, but student.mesh gives it {data: 1, model: 1} and "
     "teachers.again.mesh {data: 2, model: 1}; give both the same mesh"),
    (["+experiment=exact", "student.mesh.data=2"], "student.mesh: exact models compute on the host"),
    (["+experiment=exact", "context_mesh={data: 2, model: 1}"], "context_mesh: exact models compute on the host"),
    (["context_mesh={data: 1, model: 0}"], "context_mesh.model: 0 must be >= 1"),
    (["context_mesh=4"], "context_mesh: expected a mapping like {data: 1, model: 4}, got 4"),
    ([*CONTEXT_ONLY, "context_mesh={data: 1, model: 2}"],
     "(toy:teacher, the context model named by teachers.SELF-1C.source)"),
    ([*CONTEXT_ONLY, "context_mesh={data: 4, model: 1}"], "context_mesh: data=4 x model=1 needs 4 devices, but jax "
                                                          "sees 1"),
])
def test_a_bad_mesh_is_named_with_its_fix(overrides, message):
    from jaxalign.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        _validated(*overrides)
    assert message in str(err.value)


def test_a_misspelt_mesh_key_is_named():
    from jaxalign import config as C
    from jaxalign.errors import ConfigError
    from tests.test_run import composed

    with pytest.raises(ConfigError, match="teachers.toy-teacher: .*dta"):
        C.from_omegaconf(composed("+teachers.toy-teacher.mesh={dta: 2}"))
    with pytest.raises(ConfigError, match="context_mesh: .*dta"):
        C.from_omegaconf(composed("context_mesh={dta: 2}"))


def test_context_only_models_take_the_context_mesh():
    """A demonstration source that is neither the student nor an external teacher runs on
    context_mesh (else the student's mesh); one that is also a teacher keeps the teacher's."""
    from jaxalign import config as C
    from jaxalign.pipeline.jobs import model_roles
    from jaxalign.pipeline.models import job_meshes
    from tests.test_run import composed

    cfg = C.from_omegaconf(composed(*CONTEXT_ONLY, "context_mesh={data: 2, model: 1}"))
    assert meshes.context_meshes(cfg) == {"toy:teacher": ("context_mesh", C.MeshConf(2, 1))}
    assert meshes.mesh_devices(cfg) == 2
    assert meshes.context_meshes(C.from_omegaconf(composed(*CONTEXT_ONLY, "student.mesh.data=2"))) == {
        "toy:teacher": ("student.mesh", C.MeshConf(2, 1))}
    shared = C.from_omegaconf(composed("+teachers.SELF-1C.source=toy:teacher", "context_mesh={data: 2, model: 1}"))
    assert meshes.context_meshes(shared) == {} and meshes.mesh_devices(shared) is None
    default = _validated(*CONTEXT_ONLY)
    assert job_meshes(default, list(model_roles(default))) == {"toy:student": (1, 1), "toy:teacher": (1, 1)}


def test_an_unused_context_mesh_is_logged(caplog):
    """A sweep may set context_mesh for teacher sets without a context-only model: logged, not refused."""
    with caplog.at_level("WARNING", logger="jaxalign.meshes"):
        _validated("+teachers.SELF-1C.source=toy:teacher", "context_mesh={data: 1, model: 1}")
    assert "context_mesh is set, but no teacher's source or summarizer is a context-only model" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="jaxalign.meshes"):
        _validated(*CONTEXT_ONLY, "context_mesh={data: 1, model: 1}")
    assert "context_mesh" not in caplog.text


def test_data_minus_one_takes_the_devices_model_leaves():
    from jaxalign import config as C
    from jaxalign.errors import ConfigError

    assert meshes.resolve_mesh("k", C.MeshConf(-1, 2), 8) == (4, 2)
    assert meshes.resolve_mesh("k", C.MeshConf(-1, 1), 1) == (1, 1)
    assert meshes.resolve_mesh("k", C.MeshConf(2, 4), 8) == (2, 4)
    with pytest.raises(ConfigError, match="k: model=3 with data=-1 needs a multiple of 3 devices, but jax sees 8"):
        meshes.resolve_mesh("k", C.MeshConf(-1, 3), 8)
    with pytest.raises(ConfigError, match="k: data=2 x model=8 needs 16 devices, but jax sees 8"):
        meshes.resolve_mesh("k", C.MeshConf(2, 8), 8)


def test_device_counts_are_checked_in_the_job_only():
    """A dry run prices a job for another machine, and a sweep's launch check runs on the login node:
    neither counts this machine's devices. The job does."""
    from jaxalign import config as C
    from jaxalign.errors import ConfigError
    from tests.test_run import composed

    assert _validated("student.mesh.data=4", "dry_run=true").student.mesh == C.MeshConf(4, 1)
    C.validate(C.from_omegaconf(composed("student.mesh.data=4")), check_models=False)
    with pytest.raises(ConfigError, match="jax sees 1"):
        _validated("student.mesh.data=4")
    assert meshes.mesh_devices(C.from_omegaconf(composed("student.mesh.data=4"))) == 4
    assert meshes.mesh_devices(C.from_omegaconf(composed("student.mesh={data: -1, model: 1}"))) is None


def test_the_memory_check_plans_with_the_resolved_data_axis(monkeypatch):
    """student.mesh.data=-1 on 8 devices is data=8 for the engine, so for the memory check's plan too
    (the dry run, which does not know the devices, prices data=-1 as 1)."""
    import jax

    from jaxalign import config as C
    from jaxalign.pipeline import models as job_models
    from jaxalign.pipeline.jobs import load_task, model_roles, select_questions
    from tests.test_run import composed

    monkeypatch.setattr(jax, "device_count", lambda: 8)
    caches = {}
    for mesh in ("{data: -1, model: 1}", "{data: 8, model: 1}"):  # 8 initial rollouts, then 8 pairs x 3
        cfg = C.from_omegaconf(composed(f"student.mesh={mesh}", "budget.num_initial=8", "budget.n_min=3",
                                        "budget.n_sig=3", "algorithms=[gkd]"))
        task = load_task(cfg)
        prompts = [q.user for q in select_questions(task, cfg.dataset)]
        models = job_models.JobModels(cfg, model_roles(cfg), cfg.student.path, prompts, task.system)
        assert models.meshes[cfg.student.path] == (8, 1)
        caches[mesh] = models.caches(cfg, models.prompt_tokens(prompts, task.system))
    assert caches["{data: -1, model: 1}"] == caches["{data: 8, model: 1}"]

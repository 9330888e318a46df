"""Seeds a source for migrations at scale, with MLflow's own client: an experiment of N runs
(nested two levels, some FAILED, some deleted, mixed sizes, a few logged models) and a
registered model of versions made from those runs (stages spread, two aliases, version tags).

Fast on purpose: one create per run, then each run's params, tags and metric points in a few
`log_batch` requests and its files in one `log_artifacts`, four runs filled at once. Used by
tests/e2e/test_migration_scale.py (small N) and bench/migration.py (200 runs).
"""
import concurrent.futures
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

START = 1_700_000_000_000
# A model file UC accepts: a signature with inputs and outputs (src/engine/mlmodel.rs).
MLMODEL = ("flavors: {}\nsignature:\n  inputs: '[{\"type\": \"double\"}]'\n"
           "  outputs: '[{\"type\": \"long\"}]'\n  params: null\n")
# The role of run i is ROLES[i % 8]: a root, its two children (one with a child of its own),
# a failed run, plain runs of different sizes and a run deleted after it finished.
ROLES = ("root", "child", "grandchild", "failed", "plain", "deleted", "child", "long")


@dataclass
class SeededRun:
    run_id: str
    name: str
    role: str
    parent_id: str = None
    status: str = "FINISHED"
    deleted: bool = False
    start_time: int = 0
    end_time: int = 0
    metric_points: int = 0
    files: int = 0
    logged_model: bool = False


@dataclass
class SeededExperiment:
    experiment_id: str
    name: str
    runs: list = field(default_factory=list)

    @property
    def active(self):
        """The runs a copy of the experiment must carry (deleted runs are not copied)."""
        return [r for r in self.runs if not r.deleted]

    def parent_of(self):
        return {r.run_id: r.parent_id for r in self.active}


def _params(i):
    return [Param("kind", ROLES[i % 8]), Param("index", str(i))] + \
        [Param(f"hp_{k:02d}", f"{(i * 7 + k) % 97 / 10}") for k in range(4 * (i % 5 + 1))]


def _tags(i):
    return [RunTag("team", "ml-platform" if i % 2 else "research"), RunTag("shard", str(i % 3))] + \
        [RunTag(f"note_{k}", f"run {i} note {k}") for k in range(i % 3)]


def _metrics(i, long_history):
    """1-3 keys; histories of 1 to 200 points, `long_history` points for the long runs; NaN
    in some."""
    length = long_history if ROLES[i % 8] == "long" else (1, 10, 50, 200)[i % 4]
    points = []
    for k in range(1 + i % 3):
        for step in range(length):
            value = math.nan if (k == 1 and step % 17 == 5) else 1.0 / (step + 1 + k)
            points.append(Metric(f"m{k}", value, START + i * 1000 + step, step))
    return points


def _files(i, folder):
    """Every run: a note and the model file (so any run can back a version); every fifth
    run a binary of 64-256 KiB; run 9 one of 1 MiB. Returns the number of files."""
    def write(rel, data):
        path = os.path.join(folder, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    write("notes/readme.txt", f"notes of run {i}\n".encode())
    write("model/MLmodel", MLMODEL.encode())
    count = 2
    if i % 5 == 0:
        write("data/blob.bin", os.urandom(64 * 1024 * (1 + i % 4)))
        count += 1
    if i == 9:
        write("data/large.bin", os.urandom(1 << 20))
        count += 1
    return count


def _log_model(client, experiment_id, run):
    """An MLflow 3 logged model of the run, with params, tags and a file."""
    model = client.create_logged_model(experiment_id, name="scorer", source_run_id=run.run_id,
                                       params={"alpha": "0.5"}, tags={"framework": "none"},
                                       model_type="classifier")
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "MLmodel"), "w") as f:
            f.write(MLMODEL)
        with open(os.path.join(d, "weights.bin"), "wb") as f:
            f.write(os.urandom(4096))
        client.log_model_artifacts(model.model_id, d)
    client.finalize_logged_model(model.model_id, "READY")


def _fill(client, experiment_id, i, run, long_history, with_model):
    """Everything but the create, for run `i`."""
    metrics = _metrics(i, long_history)
    client.log_batch(run.run_id, params=_params(i), tags=_tags(i), metrics=metrics[:1000])
    for j in range(1000, len(metrics), 1000):
        client.log_batch(run.run_id, metrics=metrics[j:j + 1000])
    run.metric_points = len(metrics)
    with tempfile.TemporaryDirectory() as d:
        run.files = _files(i, d)
        client.log_artifacts(run.run_id, d)
    if with_model:
        _log_model(client, experiment_id, run)
        run.logged_model = True
    client.set_terminated(run.run_id, run.status, end_time=run.end_time)
    if run.deleted:
        client.delete_run(run.run_id)


def seed_experiment(uri, name, runs=24, *, logged_models=2, long_history=1500, workers=4):
    """An experiment `name` of `runs` runs (roles: ROLES); `logged_models` of the plain runs
    get a logged model. Returns a SeededExperiment."""
    client = MlflowClient(uri, registry_uri=uri)
    exp_id = client.create_experiment(name, tags={"team": "ml-platform", "runs": str(runs)})
    client.set_experiment_tag(exp_id, "mlflow.note.content", f"{runs} runs seeded for a migration")
    seeded = SeededExperiment(exp_id, name)
    last = {}
    for i in range(runs):
        role = ROLES[i % 8]
        parent = {"child": last.get("root"), "grandchild": last.get("child")}.get(role)
        tags = {"mlflow.parentRunId": parent} if parent else {}
        created = client.create_run(exp_id, start_time=START + i * 1000, tags=tags, run_name=f"{role}-{i}")
        run = SeededRun(created.info.run_id, f"{role}-{i}", role, parent, "FAILED" if role == "failed" else "FINISHED",
                        deleted=role == "deleted", start_time=START + i * 1000, end_time=START + i * 1000 + 600_000)
        seeded.runs.append(run)
        last[role] = run.run_id
    plain = [i for i, r in enumerate(seeded.runs) if r.role == "plain"]
    with_model = set(plain[:logged_models])
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        jobs = [pool.submit(_fill, client, exp_id, i, run, long_history, i in with_model)
                for i, run in enumerate(seeded.runs)]
        for job in jobs:
            job.result()
    return seeded


# Versions 1-based: their stages, the aliases, and which carry a "validated" tag.
STAGES = {1: "Archived", 2: "Archived", 3: "Staging", 4: "Production", 5: "Archived", 6: "Staging",
          7: "Production", 8: "Staging", 10: "Archived", 11: "Production"}


def seed_model(uri, name, run_ids, versions=12):
    """A registered model of `versions` versions, version k from run_ids[(k-1) % len], with
    STAGES, aliases `champion` (the last but one) and `challenger` (the last) and version tags.
    Returns {version: run id}."""
    client = MlflowClient(uri, registry_uri=uri)
    client.create_registered_model(name, description=f"{versions} versions", tags={"owner": "ml-platform"})
    made = {}
    for k in range(1, versions + 1):
        run_id = run_ids[(k - 1) % len(run_ids)]
        v = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id,
                                        description=f"version {k}", tags={"index": str(k)})
        made[int(v.version)] = run_id
        if k % 3 == 0:
            client.set_model_version_tag(name, v.version, "validated", "true")
        if k in STAGES:
            with warnings.catch_warnings():  # stages are deprecated, and still migrated
                warnings.simplefilter("ignore", FutureWarning)
                client.transition_model_version_stage(name, v.version, STAGES[k])
    for alias, k in (("champion", versions - 1), ("challenger", versions)):
        client.set_registered_model_alias(name, alias, str(k))
    return made

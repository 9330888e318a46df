"""Field-by-field comparison of a source run and its copy, through the MLflow Python client."""
import contextlib
import hashlib
import math
import os
import tempfile

import mlflow
from mlflow import MlflowClient

LINEAGE_RUN_TAGS = {"mlflow_exim.run_info.run_id", "mlflow_exim.run_info.experiment_id",
                    "mlflow_exim.run_info.user_id", "mlflow_exim.src_client.tracking_uri"}
LINEAGE_MODEL_TAGS = {"mlflow_exim.src_model.model_id"}
# Tags a Databricks workspace sets itself or refuses (src/stores/databricks/workspace.rs).
WORKSPACE_TAGS = {"mlflow.user", "mlflow.log-model.history", "mlflow.rootRunId",
                  "mlflow.experiment.sourceType", "mlflow.experiment.sourceId"}


def runs_in(uri, experiment_name, view=3):
    """The runs of an experiment (view 3: all, 1: active only); [] when it does not exist."""
    client = MlflowClient(uri, registry_uri=uri)
    exp = client.get_experiment_by_name(experiment_name)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], run_view_type=view)


def _same_value(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def history(client, run_id, key):
    points = client.get_metric_history(run_id, key)
    return sorted(((m.timestamp, m.step, "nan" if math.isnan(m.value) else m.value) for m in points),
                  key=lambda t: (t[0], t[1], str(t[2])))


# `databricks://PROFILE` -> the DATABRICKS_* variables of that workspace. MLflow's artifact
# client for workspace artifacts reads credentials from the environment only.
WORKSPACE_ENV = {}


@contextlib.contextmanager
def workspace_env(tracking_uri):
    saved = dict(os.environ)
    os.environ.update(WORKSPACE_ENV.get(tracking_uri, {}))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def tree_digests(tracking_uri, artifact_uri):
    """{relative path: sha256} of every file under an artifact URI."""
    with workspace_env(tracking_uri):
        return _tree_digests(tracking_uri, artifact_uri)


def _tree_digests(tracking_uri, artifact_uri):
    if not mlflow.artifacts.list_artifacts(artifact_uri=artifact_uri, tracking_uri=tracking_uri):
        return {}
    with tempfile.TemporaryDirectory() as d:
        local = mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=d, tracking_uri=tracking_uri)
        out = {}
        for root, _, files in os.walk(local):
            for f in files:
                path = os.path.join(root, f)
                with open(path, "rb") as fh:
                    data = fh.read()
                out[os.path.relpath(path, local)] = (hashlib.sha256(data).hexdigest(), data if f == "MLmodel" else None)
        return out


def assert_trees_equal(src_uri, src_root, dst_uri, dst_root, id_pairs):
    src, dst = tree_digests(src_uri, src_root), tree_digests(dst_uri, dst_root)
    assert sorted(src) == sorted(dst), f"artifact paths differ: {sorted(src)} vs {sorted(dst)}"
    for path, (digest, mlmodel) in src.items():
        if mlmodel is not None:
            expected = mlmodel.decode()
            for old, new in sorted(id_pairs, key=lambda p: -len(p[0])):
                expected = "\n".join(
                    line.replace(old, new) if line.split(":")[0] in ("run_id", "model_id", "model_uuid", "artifact_path") else line
                    for line in expected.split("\n"))
            assert dst[path][1].decode() == expected, f"MLmodel {path} not rewritten as expected"
        else:
            assert dst[path][0] == digest, f"artifact {path} differs"
    return len(src)


def assert_run_copied(src_uri, src_run_id, dst_uri, dst_run_id, experiment_name, *, parent=None,
                      databricks_dst=False, src_server=None):
    """Every field the destination can store equals the source's, ids aside. A Databricks
    destination sets the user and some tags itself (`databricks_dst`); `src_server` is what the
    lineage tag names for a `databricks://` source (its host)."""
    s, d = MlflowClient(src_uri, registry_uri=src_uri), MlflowClient(dst_uri, registry_uri=dst_uri)
    sr, dr = s.get_run(src_run_id), d.get_run(dst_run_id)
    assert d.get_experiment(dr.info.experiment_id).name == experiment_name
    fields = ("run_name", "status", "start_time", "end_time", "lifecycle_stage")
    for field in fields + (() if databricks_dst else ("user_id",)):
        assert getattr(dr.info, field) == getattr(sr.info, field), field
    assert dr.data.params == sr.data.params
    skipped = WORKSPACE_TAGS if databricks_dst else set()
    # A source that is itself a copy has lineage of its own, which the copy replaces.
    src_tags = {k: v for k, v in sr.data.tags.items() if k not in skipped | LINEAGE_RUN_TAGS}
    dst_tags = {k: v for k, v in dr.data.tags.items() if k not in skipped}
    src_tags.pop("mlflow.parentRunId", None)
    assert dst_tags.pop("mlflow.parentRunId", None) == parent, "parent link"
    assert {k: v for k, v in dst_tags.items() if k not in LINEAGE_RUN_TAGS} == src_tags
    assert dst_tags["mlflow_exim.run_info.run_id"] == src_run_id
    assert dst_tags["mlflow_exim.run_info.experiment_id"] == sr.info.experiment_id
    assert dst_tags["mlflow_exim.src_client.tracking_uri"] == (src_server or src_uri)
    assert dst_tags.get("mlflow_exim.run_info.user_id") == (sr.info.user_id or None)
    assert "mlflow_exim.copy_incomplete" not in dst_tags
    assert set(dr.data.metrics) == set(sr.data.metrics)
    points = 0
    for key in sr.data.metrics:
        src_history, dst_history = history(s, src_run_id, key), history(d, dst_run_id, key)
        assert dst_history == src_history, f"history of {key}"
        points += len(src_history)
    # Datasets with their tags.
    def datasets(run):
        return sorted((i.dataset.name, i.dataset.digest, i.dataset.source_type, i.dataset.source,
                       i.dataset.schema, i.dataset.profile, tuple(sorted((t.key, t.value) for t in i.tags)))
                      for i in run.inputs.dataset_inputs)
    assert datasets(dr) == datasets(sr)
    # Logged models: outputs with steps, and each model's fields.
    assert len(dr.outputs.model_outputs) == len(sr.outputs.model_outputs)
    id_pairs = [(src_run_id, dst_run_id)]
    for so, do in zip(sorted(sr.outputs.model_outputs, key=lambda o: o.step),
                      sorted(dr.outputs.model_outputs, key=lambda o: o.step)):
        assert so.step == do.step
        sm, dm = s.get_logged_model(so.model_id), d.get_logged_model(do.model_id)
        for field in ("name", "model_type", "status", "params"):
            assert getattr(dm, field) == getattr(sm, field), field
        assert dm.source_run_id == dst_run_id
        # mlflow.modelVersions is maintained by each registry for its own registrations.
        assert {k: v for k, v in dm.tags.items() if k not in LINEAGE_MODEL_TAGS | {"mlflow.modelVersions"} | skipped} == \
            {k: v for k, v in sm.tags.items() if k not in LINEAGE_MODEL_TAGS | {"mlflow.modelVersions"} | skipped}
        assert dm.tags["mlflow_exim.src_model.model_id"] == sm.model_id
        def model_metrics(m):
            return sorted((x.key, x.timestamp, x.step, x.dataset_name, x.dataset_digest,
                           "nan" if math.isnan(x.value) else x.value) for x in m.metrics)
        assert model_metrics(dm) == model_metrics(sm)
        pairs = id_pairs + [(sm.model_id, dm.model_id), (sm.artifact_location, dm.artifact_location)]
        assert_trees_equal(src_uri, sm.artifact_location, dst_uri, dm.artifact_location, pairs)
    files = assert_trees_equal(src_uri, sr.info.artifact_uri, dst_uri, dr.info.artifact_uri, id_pairs)
    return {"metric_points": points, "run_files": files}


def assert_command_copies_a_run(run, src_uri, dst_uri, prefix):
    """Seeds a small run and copies it with an installed `copy-run` command line (`run(*args)`
    runs it and returns the CompletedProcess): exit 0, the JSON report alone on stdout, progress
    on stderr, and the copy faithful. The packaged hosts (wheel, npm tarball) share it."""
    import json
    import seed
    run_id = seed.seed_rich_run(src_uri, f"{prefix}-source-{os.urandom(4).hex()}",
                                metric_points=50, with_model=False)
    exp = f"{prefix}-copy-{os.urandom(4).hex()}"
    done = run("copy-run", "--run-id", run_id, "--experiment-name", exp,
               "--src-mlflow-uri", src_uri, "--dst-mlflow-uri", dst_uri)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # stdout is the report and nothing else
    assert report["src_run_id"] == run_id and report["outcome"] == "created"
    assert "reading source run" in done.stderr  # progress on stderr
    assert_run_copied(src_uri, run_id, dst_uri, report["dst_run_id"], exp)

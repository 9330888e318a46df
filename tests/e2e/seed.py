"""Seeds an MLflow server with runs that exercise every field a copy must carry.

Used by the end-to-end tests and by the demo. Run as a script to seed one demo run:
    python tests/e2e/seed.py http://127.0.0.1:5000 [experiment-name]
"""
import math
import os
import sys
import tempfile

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def seed_rich_run(tracking_uri, experiment_name, *, big_bytes=0, metric_points=1200,
                  with_model=True, register_as=None, parent_run_id=None, run_name="rich-run"):
    """Creates a finished run with params, tags, long NaN-bearing metric histories, a dataset
    input, nested/odd artifacts and (optionally) an MLflow 3 sklearn logged model.
    Returns the run id."""
    # The fluent API (log_model's registration) uses the process-global URIs: set both.
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment_name)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment_name)
    start = 1_600_000_000_000
    tags = {
        "mlflow.user": "alice",
        "mlflow.source.name": "train.py",
        "mlflow.source.type": "LOCAL",
        "mlflow.source.git.commit": "0123456789abcdef",
        "mlflow.note.content": "A run with **everything** in it.\nSecond line: ünïcødé",
        "team": "ml-platform",
        "dotted.key.with spaces": "v",
    }
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(exp_id, start_time=start, tags=tags, run_name=run_name)
    run_id = run.info.run_id
    params = [Param(f"p{i:03d}", f"value-{i}") for i in range(130)]
    params.append(Param("long", "x" * 500))
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i:i + 100])
    # Long histories: more than one log-batch request's worth, including NaN.
    metrics = []
    for step in range(metric_points):
        metrics.append(Metric("loss", 1.0 / (step + 1), start + step * 10, step))
    for step in range(50):
        value = math.nan if step % 7 == 3 else step * 0.5
        metrics.append(Metric("acc/train", value, start + step, step))
    metrics.append(Metric("same_ts", 1.0, start, 0))
    metrics.append(Metric("same_ts", 2.0, start, 0))
    metrics.append(Metric("neg_step", -3.25, start + 5, -1))
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])
    # A dataset input with tags.
    import pandas as pd
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
    dataset = mlflow.data.from_pandas(df, source="s3://bucket/train.csv", name="train-set")
    with mlflow.start_run(run_id=run_id):
        mlflow.log_input(dataset, context="training", tags={"split": "train"})
    # Artifacts: nested folders, an empty file, odd names, and an optional big binary.
    with tempfile.TemporaryDirectory() as d:
        _write(os.path.join(d, "README.txt"), b"hello artifacts\n")
        _write(os.path.join(d, "empty.txt"), b"")
        _write(os.path.join(d, "nested", "deeper", "data.json"), b'{"a": [1, 2, 3]}')
        _write(os.path.join(d, "odd names", "with space & ünïcødé.txt"), "ü".encode() * 100)
        _write(os.path.join(d, "odd names", "percent%20and+plus#hash.txt"), b"odd")
        if big_bytes:
            _write(os.path.join(d, "big", "blob.bin"), os.urandom(big_bytes))
        client.log_artifacts(run_id, d)
    if with_model:
        _log_sklearn_model(run_id, register_as)
    client.set_terminated(run_id, "FINISHED", end_time=start + 3_600_000)
    return run_id


def sklearn_requirements():
    """What a logged sklearn model declares it needs. Given, MLflow does not infer it (a
    subprocess that loads the model: about 6 s per model logged, against 0.1 s)."""
    import sklearn
    return [f"scikit-learn=={sklearn.__version__}", f"mlflow=={mlflow.__version__}"]


def _log_sklearn_model(run_id, register_as):
    from sklearn.linear_model import LogisticRegression
    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.2], [0.1, 0.9], [0.9, 0.1]])
    y = np.array([0, 1, 1, 0, 1])
    model = LogisticRegression().fit(X, y)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metric("model_score", 0.93, step=3)
        info = mlflow.sklearn.log_model(
            model, name="model", input_example=X[:2], pip_requirements=sklearn_requirements(),
            registered_model_name=register_as, step=3,
        )
    return info.model_id


if __name__ == "__main__":
    uri = sys.argv[1]
    exp = sys.argv[2] if len(sys.argv) > 2 else "demo-source"
    print(seed_rich_run(uri, exp, big_bytes=int(os.environ.get("SEED_BIG_BYTES", "0")),
                        register_as=os.environ.get("SEED_REGISTER_AS")))


def seed_registered_version(tracking_uri, model_name, *, big_bytes=0):
    """An MLflow 3 sklearn model version with signature, input example, description, tags, an
    alias and a stage, on a registered model with a description and tags. Returns (run id, version)."""
    run_id = seed_rich_run(tracking_uri, f"{model_name}-training", big_bytes=big_bytes,
                           metric_points=20, register_as=model_name)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    version = max(int(v.version) for v in client.search_model_versions(f"name='{model_name}'"))
    version = str(version)
    client.update_registered_model(model_name, description="Predicts the class of a point.")
    client.set_registered_model_tag(model_name, "owner", "ml-platform")
    client.update_model_version(model_name, version, description="Trained on the **train** split.")
    client.set_model_version_tag(model_name, version, "validated", "true")
    client.set_model_version_tag(model_name, version, "dataset.version", "2026-11")
    client.set_registered_model_alias(model_name, "champion", version)
    client.transition_model_version_stage(model_name, version, "Staging")
    return run_id, version


def seed_classic_versions(tracking_uri, model_name):
    """A run whose model lives in the run's own artifacts (`model/`), registered twice: once as
    `runs:/<run>/model` and once as `<run artifact root>/model`. Returns (run id, [versions])."""
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression
    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.2], [0.1, 0.9]])
    model = LogisticRegression().fit(X, np.array([0, 1, 1, 0]))
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    exp = client.get_experiment_by_name("classic") or client.get_experiment(client.create_experiment("classic"))
    run = client.create_run(exp.experiment_id, run_name="classic-run")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model")
        mlflow.sklearn.save_model(model, path, input_example=X[:1])
        client.log_artifacts(run.info.run_id, path, "model")
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(model_name)
    except Exception:
        pass
    a = client.create_model_version(model_name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    b = client.create_model_version(model_name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    return run.info.run_id, [a.version, b.version]


def seed_small_version(tracking_uri, model_name):
    """A version (runs:/ source) of a finished run with one small file, quick to make. Returns it."""
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    exp = client.get_experiment_by_name("small-versions")
    exp_id = exp.experiment_id if exp else client.create_experiment("small-versions")
    run = client.create_run(exp_id, run_name="small")
    client.log_text(run.info.run_id, "flavors: {}\n", "model/MLmodel")
    client.set_terminated(run.info.run_id)
    client.create_registered_model(model_name)
    return client.create_model_version(model_name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id).version


def seed_guarded_version(tracking_uri, admin_password):
    """On a basic-auth server (the caller's MLFLOW_TRACKING_USERNAME/PASSWORD are the admin's):
    a registered version whose model two new users may READ and EDIT.
    Returns (model name, version, {user: permission})."""
    import uuid

    import requests
    from mlflow.server import get_app_client
    name = f"guarded-{uuid.uuid4().hex[:8]}"
    version = seed_small_version(tracking_uri, name)
    users = get_app_client("basic-auth", tracking_uri=tracking_uri)
    grants = {f"reader-{uuid.uuid4().hex[:8]}": "READ", f"editor-{uuid.uuid4().hex[:8]}": "EDIT"}
    for user, permission in grants.items():
        users.create_user(user, "password-" + user + "-123")
        r = requests.post(f"{tracking_uri}/api/3.0/mlflow/users/permissions/grant", auth=("admin", admin_password),
                          json={"username": user, "resource_type": "registered_model", "resource_id": name,
                                "permission": permission})
        r.raise_for_status()
    return name, version, grants


def model_permission(tracking_uri, admin_password, user, model):
    """A user's permission on a registered model, read as the admin."""
    import requests
    r = requests.get(f"{tracking_uri}/api/3.0/mlflow/users/permissions/get", auth=("admin", admin_password),
                     params={"username": user, "resource_type": "registered_model", "resource_id": model})
    r.raise_for_status()
    return r.json()["permission"]

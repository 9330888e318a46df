"""copy-run end to end: the built component in `wasmtime run` and in the embedding host, against
two real MLflow servers."""
import math

import mlflow
import numpy as np
from mlflow import MlflowClient

import seed
from compare import assert_run_copied, runs_in
from conftest import copy_run_args, run_cli, run_host, unique


def test_cli_copy_is_faithful(src, dst, rich_run):
    exp = unique("cli-copy")
    result = run_cli(copy_run_args(rich_run, exp, src.uri, dst.uri))
    assert result.code == 0, result
    report = result.report
    assert report["outcome"] == "created"
    counts = assert_run_copied(src.uri, rich_run, dst.uri, report["dst_run_id"], exp)
    source = MlflowClient(src.uri, registry_uri=src.uri).get_run(rich_run)
    assert report["params"] == len(source.data.params) == 131
    assert report["tags"] == len(source.data.tags)
    assert report["metric_points"] == counts["metric_points"] > 1000
    assert report["dataset_inputs"] == 1
    assert report["logged_models"] == 1
    # Run files plus the logged model's files, including the 24 MiB blob.
    assert report["artifact_files"] > counts["run_files"]
    assert report["artifact_bytes"] > 24 * 1024 * 1024
    assert report["dst_experiment_id"] == MlflowClient(dst.uri, registry_uri=dst.uri).get_experiment_by_name(exp).experiment_id
    # Progress went to stderr, the report alone to stdout.
    assert "[mlflow-copy] artifacts:" in result.stderr
    assert result.stdout.strip().startswith("{") and result.stdout.strip().endswith("}")
    # verify-run agrees, the logged model and its files (contents by SHA-256) included.
    check = run_cli(["verify-run", "--src-run-id", rich_run, "--dst-run-id", report["dst_run_id"],
                     "--src-mlflow-uri", src.uri, "--dst-mlflow-uri", dst.uri])
    assert check.code == 0 and check.report["differences"] == [], check
    assert check.report["logged_models"] == 1
    assert (check.report["artifact_files"], check.report["artifact_bytes"]) == (
        report["artifact_files"], report["artifact_bytes"])


def test_copied_logged_model_loads_and_predicts_like_the_source(src, dst, rich_run):
    exp = unique("predict")
    result = run_cli(copy_run_args(rich_run, exp, src.uri, dst.uri))
    assert result.code == 0, result
    src_model = MlflowClient(src.uri, registry_uri=src.uri).get_run(rich_run).outputs.model_outputs[0].model_id
    dst_model = MlflowClient(dst.uri, registry_uri=dst.uri).get_run(result.report["dst_run_id"]).outputs.model_outputs[0].model_id
    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.3, 0.3]])
    mlflow.set_tracking_uri(src.uri)
    expected = mlflow.pyfunc.load_model(f"models:/{src_model}").predict(X)
    mlflow.set_tracking_uri(dst.uri)
    copied = mlflow.pyfunc.load_model(f"models:/{dst_model}")
    assert copied.metadata.run_id == result.report["dst_run_id"]
    assert copied.metadata.model_id == dst_model
    assert list(copied.predict(X)) == list(expected)


def test_embedding_host_copy_is_faithful(src, dst, rich_run):
    exp = unique("host-copy")
    result = run_host("copy-run", {"run_id": rich_run, "experiment_name": exp,
                                   "src_mlflow_uri": src.uri, "dst_mlflow_uri": dst.uri, "concurrency": 3})
    assert result.code == 0, result
    report = result.report["ok"]
    assert report["outcome"] == "created"
    assert_run_copied(src.uri, rich_run, dst.uri, report["dst_run_id"], exp)


def test_embedding_host_returns_errors_as_values(src, dst):
    result = run_host("copy-run", {"run_id": "0" * 32, "experiment_name": unique("x"),
                                   "src_mlflow_uri": src.uri, "dst_mlflow_uri": dst.uri})
    assert result.code == 1, result
    err = result.report["err"]
    assert err["kind"] == "not_found"
    assert "0" * 32 in err["message"] and src.uri in err["message"]


def test_invoke_calls_the_exported_function(src, dst):
    run_id = seed.seed_rich_run(src.uri, "invoke-source", metric_points=10, with_model=False)
    exp = unique("invoke")
    call = (f'copy-run({{run-id: "{run_id}", experiment-name: "{exp}", '
            f'src-mlflow-uri: "{src.uri}", dst-mlflow-uri: "{dst.uri}"}})')
    result = run_cli([], wasmtime_args=["--invoke", call])
    # wasmtime prints the WIT result in WAVE syntax.
    assert result.code == 0, result
    assert result.stdout.startswith("ok("), result
    assert 'outcome: created,' in result.stdout  # the WIT enum case, unquoted
    copies = runs_in(dst.uri, exp)
    assert len(copies) == 1
    assert_run_copied(src.uri, run_id, dst.uri, copies[0].info.run_id, exp)


def test_rerun_after_success_creates_nothing(src, dst, rich_run):
    exp = unique("rerun")
    first = run_cli(copy_run_args(rich_run, exp, src.uri, dst.uri))
    assert first.code == 0, first
    second = run_cli(copy_run_args(rich_run, exp, src.uri, dst.uri))
    assert second.code == 0, second
    assert second.report["outcome"] == "existing"
    assert second.report["dst_run_id"] == first.report["dst_run_id"]
    assert second.report["artifact_files"] == 0
    assert len(runs_in(dst.uri, exp)) == 1


def test_failed_copy_is_marked_and_rerun_resumes_it(src, dst, rich_run, proxy):
    exp = unique("resume")
    # The destination breaks for good after three uploads.
    proxy.fail_artifact_puts_after = 3
    failed = run_cli(copy_run_args(rich_run, exp, src.uri, proxy.uri, "--concurrency", "1"))
    assert failed.code == 1, failed
    assert "re-run the same command to resume" in failed.stderr
    runs = runs_in(dst.uri, exp)
    assert len(runs) == 1
    half = runs[0]
    assert half.info.status == "FAILED"
    assert half.data.tags["mlflow_exim.copy_incomplete"] == "true"
    assert proxy.injected > 0
    # Same command, destination healthy again: the same run is finished, not a second one.
    proxy.fail_artifact_puts_after = None
    resumed = run_cli(copy_run_args(rich_run, exp, src.uri, proxy.uri))
    assert resumed.code == 0, resumed
    assert resumed.report["outcome"] == "resumed"
    assert resumed.report["dst_run_id"] == half.info.run_id
    assert resumed.report["artifact_files_skipped"] >= 3
    assert len(runs_in(dst.uri, exp)) == 1
    assert_run_copied(src.uri, rich_run, dst.uri, half.info.run_id, exp)


def test_transient_failures_are_retried(src, dst, proxy):
    run_id = seed.seed_rich_run(src.uri, "flaky-source", metric_points=2500, with_model=True)
    exp = unique("flaky")
    proxy.flaky_every = 4
    result = run_cli(copy_run_args(run_id, exp, src.uri, proxy.uri))
    assert result.code == 0, result
    assert proxy.injected >= 5
    assert_run_copied(src.uri, run_id, dst.uri, result.report["dst_run_id"], exp)


def test_children_are_copied_and_nested(src, dst):
    parent = seed.seed_rich_run(src.uri, "family", metric_points=5, with_model=False, run_name="parent")
    child = seed.seed_rich_run(src.uri, "family", metric_points=5, with_model=False, parent_run_id=parent, run_name="child")
    grandchild = seed.seed_rich_run(src.uri, "family", metric_points=5, with_model=False, parent_run_id=child, run_name="grandchild")
    exp = unique("children")
    result = run_cli(copy_run_args(parent, exp, src.uri, dst.uri, "--copy-children"))
    assert result.code == 0, result
    report = result.report
    assert len(report["child_run_ids"]) == 2
    dst_child, dst_grandchild = report["child_run_ids"]
    assert_run_copied(src.uri, parent, dst.uri, report["dst_run_id"], exp)
    assert_run_copied(src.uri, child, dst.uri, dst_child, exp, parent=report["dst_run_id"])
    assert_run_copied(src.uri, grandchild, dst.uri, dst_grandchild, exp, parent=dst_child)


def test_child_copied_alone_is_nested_under_an_earlier_copy_of_its_parent(src, dst):
    parent = seed.seed_rich_run(src.uri, "family2", metric_points=5, with_model=False, run_name="parent")
    child = seed.seed_rich_run(src.uri, "family2", metric_points=5, with_model=False, parent_run_id=parent)
    exp = unique("child-alone")
    orphan = run_cli(copy_run_args(child, unique("orphan"), src.uri, dst.uri))
    assert orphan.code == 0 and "not nested" in orphan.stderr, orphan
    first = run_cli(copy_run_args(parent, exp, src.uri, dst.uri))
    second = run_cli(copy_run_args(child, exp, src.uri, dst.uri))
    assert first.code == 0 and second.code == 0, second
    assert_run_copied(src.uri, child, dst.uri, second.report["dst_run_id"], exp, parent=first.report["dst_run_id"])


def test_running_source_run_stays_running(src, dst):
    client = MlflowClient(src.uri, registry_uri=src.uri)
    exp_id = client.create_experiment(unique("running-src"))
    run = client.create_run(exp_id, start_time=1_700_000_000_000, run_name="still-running")
    client.log_metric(run.info.run_id, "inf", math.inf, step=1)
    exp = unique("running")
    result = run_cli(copy_run_args(run.info.run_id, exp, src.uri, dst.uri))
    assert result.code == 0, result
    copied = MlflowClient(dst.uri, registry_uri=dst.uri).get_run(result.report["dst_run_id"])
    assert copied.info.status == "RUNNING" and copied.info.end_time is None
    assert_run_copied(src.uri, run.info.run_id, dst.uri, copied.info.run_id, exp)


def test_model_inputs_link_to_copies_of_their_models(src, dst):
    from mlflow.entities import LoggedModelInput
    producer = seed.seed_rich_run(src.uri, "lineage-src", metric_points=5, with_model=True, run_name="train")
    s = MlflowClient(src.uri, registry_uri=src.uri)
    model_id = s.get_run(producer).outputs.model_outputs[0].model_id
    consumer = s.create_run(s.get_run(producer).info.experiment_id, run_name="evaluate")
    s.log_inputs(consumer.info.run_id, models=[LoggedModelInput(model_id)])
    s.set_terminated(consumer.info.run_id)
    # Alone, the consumer's input cannot be linked: a warning says why.
    alone = run_cli(copy_run_args(consumer.info.run_id, unique("alone"), src.uri, dst.uri))
    assert alone.code == 0 and "has no copy in the destination experiment" in alone.stderr, alone
    # After the producer, it links to the producer's copy of the model.
    exp = unique("model-inputs")
    first = run_cli(copy_run_args(producer, exp, src.uri, dst.uri))
    second = run_cli(copy_run_args(consumer.info.run_id, exp, src.uri, dst.uri))
    assert first.code == 0 and second.code == 0, second
    d = MlflowClient(dst.uri, registry_uri=dst.uri)
    copied_model = d.get_run(first.report["dst_run_id"]).outputs.model_outputs[0].model_id
    inputs = d.get_run(second.report["dst_run_id"]).inputs.model_inputs
    assert [m.model_id for m in inputs] == [copied_model]


def test_history_longer_than_one_page_is_copied_in_full(src, dst):
    # The copier reads histories in pages of 25,000 points (the Databricks maximum).
    client = MlflowClient(src.uri, registry_uri=src.uri)
    run = client.create_run(client.create_experiment(unique("long-src")), start_time=1_600_000_000_000)
    from mlflow.entities import Metric
    points = [Metric("long", float(i % 97), 1_600_000_000_000 + i, i) for i in range(25_500)]
    for i in range(0, len(points), 1000):
        client.log_batch(run.info.run_id, metrics=points[i:i + 1000])
    client.set_terminated(run.info.run_id, end_time=1_600_000_100_000)
    exp = unique("long")
    result = run_cli(copy_run_args(run.info.run_id, exp, src.uri, dst.uri))
    assert result.code == 0, result
    assert result.report["metric_points"] == 25_500
    assert_run_copied(src.uri, run.info.run_id, dst.uri, result.report["dst_run_id"], exp)


def test_upload_cut_mid_file_is_retried(src, dst, rich_run, proxy):
    # The destination connection drops 5 MiB into the 24 MiB upload.
    proxy.cut_upload_after = 5 * 1024 * 1024
    exp = unique("cut-upload")
    result = run_cli(copy_run_args(rich_run, exp, src.uri, proxy.uri, "--concurrency", "2"))
    assert result.code == 0, result
    assert proxy.injected == 1
    assert_run_copied(src.uri, rich_run, dst.uri, result.report["dst_run_id"], exp)


def test_download_truncated_mid_file_is_retried(src, dst, rich_run, src_proxy):
    # The source sends the big file's full length header but only 3 MiB of it.
    src_proxy.truncate_download_after = 3 * 1024 * 1024
    exp = unique("cut-download")
    result = run_cli(copy_run_args(rich_run, exp, src_proxy.uri, dst.uri))
    assert result.code == 0, result
    assert src_proxy.injected == 1
    assert_run_copied(src_proxy.uri, rich_run, dst.uri, result.report["dst_run_id"], exp)

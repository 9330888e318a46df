"""Bad input and refused credentials: a clear one-line error naming what was wrong and its kind,
a non-zero exit, nothing written at the destination, no secret in any output."""
import pytest
from mlflow import MlflowClient

import seed
from compare import assert_run_copied
from conftest import ADMIN_PASSWORD, copy_run_args, free_port, run_cli, unique


def nothing_created(dst_uri, experiment):
    return MlflowClient(dst_uri, registry_uri=dst_uri).get_experiment_by_name(experiment) is None


@pytest.fixture(scope="module")
def small_run(src):
    return seed.seed_rich_run(src.uri, "errors-source", metric_points=3, with_model=False)


def single_error_line(result):
    lines = [l for l in result.stderr.splitlines() if l.startswith("mlflow-copy: error")]
    assert len(lines) == 1, result
    assert result.stdout == "", result
    return lines[0]


def test_unknown_run_id(src, dst):
    exp = unique("unknown")
    result = run_cli(copy_run_args("f" * 32, exp, src.uri, dst.uri))
    assert result.code == 1, result
    line = single_error_line(result)
    assert "[not_found]" in line and "f" * 32 in line and src.uri in line
    assert nothing_created(dst.uri, exp)


@pytest.mark.parametrize("uri,needle", [
    ("sqlite:///mlflow.db", '"sqlite"'),
    ("file:///tmp/mlruns", '"file"'),
    ("not a uri", "not a valid MLflow server URI"),
    ("http://", "not a valid MLflow server URI"),
])
def test_malformed_or_unsupported_uri(src, dst, small_run, uri, needle):
    exp = unique("bad-uri")
    result = run_cli(copy_run_args(small_run, exp, src.uri, uri))
    assert result.code == 1, result
    line = single_error_line(result)
    assert "[bad_input]" in line and needle in line
    assert nothing_created(dst.uri, exp)


def test_credentials_in_uri_are_refused_and_not_echoed(src, small_run):
    result = run_cli(copy_run_args(small_run, unique("x"), src.uri, "http://admin:sup3rsecret@127.0.0.1:1"))
    assert result.code == 1, result
    assert "sup3rsecret" not in result.stderr + result.stdout
    assert "carries credentials" in single_error_line(result)


def test_unreachable_server(src, dst, small_run):
    dead = f"http://127.0.0.1:{free_port()}"
    exp = unique("unreachable")
    # MLflow's seven retries would take four minutes: two are enough to see them happen.
    few = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}
    result = run_cli(copy_run_args(small_run, exp, src.uri, dead), env=few)
    assert result.code == 1, result
    line = single_error_line(result)
    assert "[upstream]" in line and dead in line and "connection refused" in line
    assert "attempts" in line, "transient failures are retried before giving up"
    result = run_cli(copy_run_args(small_run, exp, dead, dst.uri), env=few)
    assert result.code == 1 and dead in single_error_line(result)
    assert nothing_created(dst.uri, exp)


def test_deleted_source_run(src, dst):
    run_id = seed.seed_rich_run(src.uri, "deleted-source", metric_points=3, with_model=False)
    MlflowClient(src.uri, registry_uri=src.uri).delete_run(run_id)
    exp = unique("deleted-src")
    result = run_cli(copy_run_args(run_id, exp, src.uri, dst.uri))
    assert result.code == 1, result
    assert "[not_found]" in single_error_line(result) and "is deleted" in single_error_line(result)
    assert nothing_created(dst.uri, exp)


def test_deleted_destination_experiment_is_not_restored(src, dst, small_run):
    exp = unique("deleted-dst")
    client = MlflowClient(dst.uri, registry_uri=dst.uri)
    client.delete_experiment(client.create_experiment(exp))
    result = run_cli(copy_run_args(small_run, exp, src.uri, dst.uri))
    assert result.code == 1, result
    assert "[conflict]" in single_error_line(result) and "is deleted" in single_error_line(result)
    assert client.get_experiment_by_name(exp).lifecycle_stage == "deleted"


def test_missing_flag_and_help():
    result = run_cli(["copy-run", "--run-id", "abc"])
    assert result.code == 1 and "--experiment-name" in result.stderr, result
    help_ = run_cli(["copy-run", "--help"])
    assert help_.code == 0
    for flag in ("--run-id", "--experiment-name", "--src-mlflow-uri", "--dst-mlflow-uri", "--copy-children", "--concurrency"):
        assert flag in help_.stdout


def test_basic_auth_destination(src, auth_server, small_run, monkeypatch):
    exp = unique("auth")
    env = {"MLFLOW_DST_TRACKING_USERNAME": "admin", "MLFLOW_DST_TRACKING_PASSWORD": ADMIN_PASSWORD}
    result = run_cli(copy_run_args(small_run, exp, src.uri, auth_server.uri), env=env)
    assert result.code == 0, result
    assert ADMIN_PASSWORD not in result.stdout + result.stderr
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    # The source server has no auth: the comparison's client credentials are ignored there.
    assert_run_copied(src.uri, small_run, auth_server.uri, result.report["dst_run_id"], exp)


def test_wrong_credentials_are_refused_without_leaking_them(src, auth_server, small_run, monkeypatch):
    exp = unique("auth-wrong")
    for env in ({"MLFLOW_DST_TRACKING_USERNAME": "admin", "MLFLOW_DST_TRACKING_PASSWORD": "wrong-password-xyz"},
                {}):
        result = run_cli(copy_run_args(small_run, exp, src.uri, auth_server.uri), env=env)
        assert result.code == 1, result
        line = single_error_line(result)
        assert "[unauthorized]" in line and auth_server.uri in line and "MLFLOW_DST_TRACKING_USERNAME" in line
        assert "wrong-password-xyz" not in result.stdout + result.stderr
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    assert nothing_created(auth_server.uri, exp)


def test_source_side_credentials_are_separate(auth_server, dst, monkeypatch):
    # Source behind basic auth, destination open: only MLFLOW_SRC_* is needed.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    run_id = seed.seed_rich_run(auth_server.uri, "auth-source", metric_points=3, with_model=False)
    exp = unique("from-auth")
    env = {"MLFLOW_SRC_TRACKING_USERNAME": "admin", "MLFLOW_SRC_TRACKING_PASSWORD": ADMIN_PASSWORD}
    result = run_cli(copy_run_args(run_id, exp, auth_server.uri, dst.uri), env=env)
    assert result.code == 0, result
    assert_run_copied(auth_server.uri, run_id, dst.uri, result.report["dst_run_id"], exp)

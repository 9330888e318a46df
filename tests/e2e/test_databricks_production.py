"""The Databricks emulator in its production mode (`like_production=True`: the behaviours real
workspaces show and our own emulator first did not; each cited in tests/databricks_emulator/),
met by the built component: OAuth tokens refused with 403 before they expire, a throttled
log-batch, a create that happened although it was answered 500, and credentials that must never
cross from one workspace to another."""
import os
import sys

from mlflow import MlflowClient

import seed
from compare import assert_run_copied
from conftest import copy_run_args, unique
from databricks_profiles import EXPERIMENT_ROOT, copy, pat_profile, profiles_file, workspace_profiles

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from databricks_emulator import Emulator  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def production():
    """Two workspaces like production: `pw1` reached with a personal access token, `pw2` with
    OAuth tokens that live 2 s and are refused after 0.6 s, long before a client that refreshes
    ahead of expiry (ours: at a quarter of the life left) fetches another: every copy meets 403s,
    and one that refreshed only on 401, or authorized files when opened, fails."""
    pw1 = Emulator(name="pw1", like_production=True)
    pw2 = Emulator(name="pw2", like_production=True, oauth_token_ttl=2, refuse_tokens_before_expiry=1.4)
    Emulator.start_all(pw1, pw2)
    try:
        with workspace_profiles(pw1, pw2, oauth=(pw2,)) as cfg_dir:
            yield pw1, pw2, cfg_dir
    finally:
        pw1.stop()
        pw2.stop()


@pytest.fixture(scope="module")
def run_with_files(src):
    return seed.seed_rich_run(src.uri, unique("prod-source"), metric_points=400,
                              big_bytes=4 * 1024 * 1024, with_model=True)


def runs_named(uri, exp):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(exp)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_oauth_tokens_refused_with_403_before_expiry_are_refreshed(src, production, run_with_files):
    _, pw2, cfg_dir = production
    exp = f"{EXPERIMENT_ROOT}/{unique('oauth-403')}"
    # One file at a time, so that the copy outlives several tokens.
    result = copy(cfg_dir, copy_run_args(run_with_files, exp, src.uri, "databricks://pw2", "--concurrency", "1"))
    assert result.code == 0, result
    assert pw2.auth.tokens_refused > 0, "tokens were refused with 403 during the copy"
    assert pw2.auth.tokens_issued >= 2, "a fresh token was fetched"
    assert_run_copied(src.uri, run_with_files, "databricks://pw2", result.report["dst_run_id"], exp,
                      databricks_dst=True)
    refused = [r for r in pw2.requests if r["status"] == 403]
    assert all(r["path"] != "/oidc/v1/token" for r in refused)


def test_a_log_batch_throttled_for_25_seconds_is_ridden_out(src, production):
    pw1, _, cfg_dir = production
    run_id = seed.seed_rich_run(src.uri, unique("prod-throttled"), metric_points=50, with_model=False)
    exp = f"{EXPERIMENT_ROOT}/{unique('throttled')}"
    # Retried at once, then after 4, 8 and 16 s (MLflow's schedule): the retry about 28 s in
    # gets through.
    fault = pw1.throttle(r"/runs/log-batch$", seconds=25)
    try:
        result = copy(cfg_dir, copy_run_args(run_id, exp, src.uri, "databricks://pw1"))
    finally:
        pw1.app.faults.remove(fault)
    assert result.code == 0, result
    assert fault.get("hits", 0) >= 2, "the throttle answered 429 more than once"
    assert_run_copied(src.uri, run_id, "databricks://pw1", result.report["dst_run_id"], exp, databricks_dst=True)


def test_a_run_created_although_answered_500_is_not_created_twice(src, production):
    pw1, _, cfg_dir = production
    run_id = seed.seed_rich_run(src.uri, unique("prod-500"), metric_points=10, with_model=False)
    exp = f"{EXPERIMENT_ROOT}/{unique('create-500')}"
    pw1.inject_api_error(r"/runs/create$", 500, "INTERNAL_ERROR", "internal error", performed=True)
    result = copy(cfg_dir, copy_run_args(run_id, exp, src.uri, "databricks://pw1"))
    assert result.code == 0, result
    runs = runs_named("databricks://pw1", exp)
    assert [r.info.run_id for r in runs] == [result.report["dst_run_id"]], "exactly one copy"
    assert any(r.get("injected") for r in pw1.requests if r["path"].endswith("/runs/create"))
    assert_run_copied(src.uri, run_id, "databricks://pw1", runs[0].info.run_id, exp, databricks_dst=True)


def test_credentials_never_cross_workspaces(src, production):
    """The environment names workspace B without a token while the config file's DEFAULT profile
    holds workspace A's token: the copy is refused, and neither workspace hears anything. A URI
    profile of A with B's host and token in the environment: the copy goes to A with A's token."""
    pw1, pw2, _ = production
    run_id = seed.seed_rich_run(src.uri, unique("prod-pairing"), metric_points=5, with_model=False)
    exp = f"{EXPERIMENT_ROOT}/{unique('pairing')}"
    with profiles_file({"DEFAULT": pat_profile(pw1), "a": pat_profile(pw1)}) as cfg_dir:
        before = (len(pw1.requests), len(pw2.requests))
        refused = copy(cfg_dir, copy_run_args(run_id, exp, src.uri, "databricks"),
                       env={"DATABRICKS_HOST": pw2.host})
        assert refused.code == 1 and "[bad_input]" in refused.stderr, refused
        assert "token or client id/secret not set (from environment)" in refused.stderr
        assert (len(pw1.requests), len(pw2.requests)) == before, "no workspace was contacted"
        assert pw1.token not in refused.stdout + refused.stderr

        b_env = {"DATABRICKS_HOST": pw2.host, "DATABRICKS_TOKEN": pw2.token}
        done = copy(cfg_dir, copy_run_args(run_id, exp, src.uri, "databricks://a"), env=b_env)
        assert done.code == 0, done
        assert len(pw2.requests) == before[1], "B's host got nothing"
        users = {r["user"] for r in pw1.requests[before[0]:] if r["user"]}
        assert users == {pw1.user}, users
    assert [r.info.run_id for r in runs_named("databricks://pw1", exp)] == [done.report["dst_run_id"]]


def test_mlflow_s_own_client_works_through_the_production_mode(production):
    """The emulator's production behaviours are ones MLflow's client copes with: it logs and
    reads a run through a workspace in that mode with its own retries and token handling."""
    pw1, _, _ = production
    env = {**os.environ, **pw1.pat_env(), "DATABRICKS_AUTH_TYPE": "pat"}
    env.pop("DATABRICKS_CONFIG_FILE", None)
    code = (
        "import mlflow; from mlflow import MlflowClient\n"
        "mlflow.set_tracking_uri('databricks')\n"
        f"mlflow.set_experiment('{EXPERIMENT_ROOT}/{unique('mlflow-client')}')\n"
        "with mlflow.start_run() as run:\n"
        "    mlflow.log_metric('m', 1.5); mlflow.log_param('p', 'v'); mlflow.log_text('hello', 'a.txt')\n"
        "r = MlflowClient().get_run(run.info.run_id)\n"
        "assert r.data.metrics == {'m': 1.5} and r.data.params == {'p': 'v'}\n"
        "print('ok')\n")
    import subprocess
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]

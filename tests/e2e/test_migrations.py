"""copy-experiment and copy-model end to end: the built component under `wasmtime run`, the
HTTP function and the embedding host, against two real MLflow servers. Small on purpose (a
few runs and versions); sizes belong to the benchmark."""
import json
import os
import tempfile

import pytest
import requests
from mlflow import MlflowClient

from compare import assert_run_copied, runs_in
from conftest import Served, run_cli, run_host, unique

SRC_LINEAGE = "mlflow_exim.run_info.run_id"


def seed_experiment(uri, name):
    """An experiment with a description and a tag: a root run with a child and a grandchild,
    a failed run, runs of two kinds (param `kind`), and a deleted run. Returns the run ids by
    role."""
    c = MlflowClient(uri, registry_uri=uri)
    exp = c.create_experiment(name, tags={"team": "ml-platform"})
    c.set_experiment_tag(exp, "mlflow.note.content", "Runs of the **wine** project")
    ids = {}

    def run(role, *, parent=None, status="FINISHED", kind="a", start=0):
        tags = {"mlflow.parentRunId": ids[parent]} if parent else {}
        r = c.create_run(exp, start_time=1_700_000_000_000 + start, tags=tags, run_name=role)
        c.log_param(r.info.run_id, "kind", kind)
        for step in range(5):
            c.log_metric(r.info.run_id, "loss", 1.0 / (step + 1), step=step, timestamp=1_700_000_000_000 + step)
        c.log_text(r.info.run_id, f"notes of {role}\n", "notes/readme.txt")
        c.set_terminated(r.info.run_id, status=status, end_time=1_700_000_100_000 + start)
        ids[role] = r.info.run_id

    # Children are made before their parents' end, and listed before them (newer first).
    run("root", start=1)
    run("child", parent="root", start=2, kind="b")
    run("grandchild", parent="child", start=3)
    run("failed", status="FAILED", start=4, kind="b")
    run("deleted", start=5)
    c.delete_run(ids["deleted"])
    return exp, ids


def experiment_args(src_name, dst_name, src, dst, *extra):
    return ["copy-experiment", "--src-experiment-name", src_name, "--dst-experiment-name", dst_name,
            "--src-mlflow-uri", src, "--dst-mlflow-uri", dst, *extra]


def test_an_experiment_is_planned_copied_with_nesting_and_found_copied_on_re_run(src, dst):
    name, dst_name = unique("team-exp"), unique("team-exp-copy")
    _, ids = seed_experiment(src.uri, name)

    plan = run_cli(experiment_args(name, dst_name, src.uri, dst.uri, "--dry-run"))
    assert plan.code == 0, plan
    assert plan.report["dry_run"] and plan.report["dst"] is None
    assert [i["status"] for i in plan.report["items"]] == ["would_create"] * 4
    assert MlflowClient(dst.uri).get_experiment_by_name(dst_name) is None, "a dry run writes nothing"

    with tempfile.TemporaryDirectory() as folder:
        result = run_cli(experiment_args(name, dst_name, src.uri, dst.uri, "--verify", "--report", "/out/ids.jsonl"),
                         wasmtime_args=("--dir", f"{folder}::/out"))
        assert result.code == 0, result
        with open(os.path.join(folder, "ids.jsonl")) as f:
            id_map = [json.loads(line) for line in f]
    report = result.report
    assert (report["created"], report["failed"]) == (4, 0), report
    assert id_map == report["items"], "the id map has one line per item"
    order = [i["src_id"] for i in report["items"]]
    assert ids["deleted"] not in order
    assert order.index(ids["root"]) < order.index(ids["child"]) < order.index(ids["grandchild"])
    copy_of = {i["src_id"]: i["dst_id"] for i in report["items"]}
    assert "1/4" in result.stderr and "ETA" in result.stderr

    d = MlflowClient(dst.uri)
    for role in ("root", "child", "grandchild", "failed"):
        parent = {"child": copy_of[ids["root"]], "grandchild": copy_of[ids["child"]]}.get(role)
        assert_run_copied(src.uri, ids[role], dst.uri, copy_of[ids[role]], dst_name, parent=parent)
    exp = d.get_experiment_by_name(dst_name)
    assert exp.tags["mlflow.note.content"] == "Runs of the **wine** project"
    assert exp.tags["team"] == "ml-platform"
    assert exp.experiment_id == report["dst"]

    again = run_cli(experiment_args(name, dst_name, src.uri, dst.uri))
    assert again.code == 0, again
    assert [i["status"] for i in again.report["items"]] == ["existing"] * 4
    assert len(runs_in(dst.uri, dst_name)) == 4, "a re-run duplicates nothing"


def test_filter_run_ids_and_max_runs_choose_the_runs(src, dst):
    name = unique("choose")
    _, ids = seed_experiment(src.uri, name)
    filtered = run_cli(experiment_args(name, unique("only-b"), src.uri, dst.uri, "--filter", "params.kind = 'b'"))
    assert filtered.code == 0, filtered
    assert sorted(i["src_id"] for i in filtered.report["items"]) == sorted([ids["child"], ids["failed"]])

    newest = run_cli(experiment_args(name, unique("newest"), src.uri, dst.uri, "--max-runs", "1"))
    assert [i["src_id"] for i in newest.report["items"]] == [ids["failed"]]

    listed = run_cli(experiment_args(name, unique("listed"), src.uri, dst.uri,
                                     "--run-ids", f"{ids['grandchild']},{ids['root']}"))
    assert [i["src_id"] for i in listed.report["items"]] == [ids["root"], ids["grandchild"]]

    bad = run_cli(experiment_args(name, unique("bad"), src.uri, dst.uri, "--filter", "params.kind === 'b'"))
    assert bad.code != 0 and "error [bad_input]" in bad.stderr, bad


def test_a_failed_item_does_not_stop_the_others_and_a_re_run_finishes_it(src, dst, proxy):
    name, dst_name = unique("flaky"), unique("flaky-copy")
    seed_experiment(src.uri, name)
    # The second run's final status is refused (400: not retried), once.
    proxy.add("POST", "/runs/update", nth=2, status=400,
              answer=b'{"error_code": "INVALID_PARAMETER_VALUE", "message": "injected"}')
    result = run_cli(experiment_args(name, dst_name, src.uri, proxy.uri))
    assert result.code != 0, result
    assert (result.report["created"], result.report["failed"]) == (3, 1), result.report
    assert "1 of 4 items failed" in result.stderr.strip().splitlines()[-1]
    failed = [i for i in result.report["items"] if i["status"] == "failed"][0]
    assert failed["error"]["kind"] == "bad_input" and "injected" in failed["error"]["message"]

    again = run_cli(experiment_args(name, dst_name, src.uri, dst.uri))
    assert again.code == 0, again
    statuses = {i["src_id"]: i["status"] for i in again.report["items"]}
    assert statuses.pop(failed["src_id"]) == "resumed"
    assert set(statuses.values()) == {"existing"}
    assert len(runs_in(dst.uri, dst_name)) == 4


def seed_model(uri, name):
    """A model of three versions (two runs, runs:/ sources) with stages and an alias."""
    c = MlflowClient(uri, registry_uri=uri)
    exp = c.get_experiment_by_name("model-runs") or c.get_experiment(c.create_experiment("model-runs"))
    c.create_registered_model(name, description="wine classifier", tags={"owner": "ml"})
    versions = []
    for i in range(3):
        run = c.create_run(exp.experiment_id, run_name=f"train-{i}")
        c.log_text(run.info.run_id, "flavors: {}\n", "model/MLmodel")
        c.set_terminated(run.info.run_id)
        versions.append(c.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id,
                                               description=f"version {i + 1}").version)
    c.transition_model_version_stage(name, "1", "Archived")
    c.transition_model_version_stage(name, "3", "Production")
    c.set_registered_model_alias(name, "champion", "3")
    c.set_model_version_tag(name, "2", "validated", "yes")
    return versions


def model_request(src_model, dst_model, src, dst, **extra):
    return {"src_model": src_model, "dst_model": dst_model, "src_registry_uri": src, "dst_registry_uri": dst,
            "dst_experiment_name": unique("model-copies"), "copy_stages_and_aliases": True,
            "versions": [], "stages": [], "aliases": [], **extra}


def test_a_model_is_copied_through_the_embedding_host_with_its_numbers_stages_and_alias(src, dst):
    name, dst_name = unique("wine"), unique("wine-prod")
    seed_model(src.uri, name)
    request = model_request(name, dst_name, src.uri, dst.uri, verify=True)  # each run verified
    result = run_host("copy-model", request)
    assert result.code == 0, result
    report = result.report["ok"]
    assert [(i["src_id"], i["dst_id"], i["status"]) for i in report["items"]] == [
        ("1", "1", "created"), ("2", "2", "created"), ("3", "3", "created")]
    s, d = MlflowClient(src.uri, registry_uri=src.uri), MlflowClient(dst.uri, registry_uri=dst.uri)
    for v in ("1", "2", "3"):
        sv, dv = s.get_model_version(name, v), d.get_model_version(dst_name, v)
        assert (dv.current_stage, dv.description) == (sv.current_stage, sv.description)
        assert {k: x for k, x in dv.tags.items() if not k.startswith("mlflow_exim")} == sv.tags
        assert dv.run_id != sv.run_id and d.get_run(dv.run_id).data.tags[SRC_LINEAGE] == sv.run_id
    assert d.get_registered_model(dst_name).aliases == {"champion": "3"}

    again = run_host("copy-model", request)
    assert [i["status"] for i in again.report["ok"]["items"]] == ["existing"] * 3

    check = {k: request[k] for k in ("src_model", "dst_model", "src_registry_uri", "dst_registry_uri",
                                     "dst_experiment_name", "copy_stages_and_aliases")}
    clean = run_host("verify-model-version", {**check, "src_version": "3"})
    assert clean.code == 0 and clean.report["ok"]["differences"] == [], clean
    assert clean.report["ok"]["dst_version"] == "3" and clean.report["ok"]["run"]["metric_points"] == 0
    # Damage the copies: a tag, a stage, the alias, a description; each is found and named.
    d.set_model_version_tag(dst_name, "2", "validated", "no")
    d.transition_model_version_stage(dst_name, "3", "Staging")
    d.delete_registered_model_alias(dst_name, "champion")
    d.update_model_version(dst_name, "1", description="rewritten")
    fields = {}
    for v in ("1", "2", "3"):
        args = ["verify-model-version", "--src-model", name, "--src-version", v, "--dst-model", dst_name,
                "--src-registry-uri", src.uri, "--dst-registry-uri", dst.uri,
                "--dst-experiment-name", request["dst_experiment_name"], "--copy-stages-and-aliases"]
        result = run_cli(args)
        assert result.code != 0 and "error [conflict]" in result.stderr, result
        fields[v] = [line.split(":")[0] for line in result.report["differences"]]
    assert fields == {"1": ["description"], "2": ['tag "validated"'], "3": ["stage", "aliases"]}, fields


def test_a_model_plan_and_a_selection_over_http(src, dst):
    name, dst_name = unique("wine"), unique("wine-staged")
    seed_model(src.uri, name)
    served = Served({"MLFLOW_COPY_ALLOW_UNAUTHENTICATED": "true"})
    try:
        request = model_request(name, dst_name, src.uri, dst.uri, stages=["production"], versions=["1"])
        plan = requests.post(served.url + "/copy-model", json={**request, "dry_run": True}, timeout=300)
        assert plan.status_code == 200, plan.text
        assert [(i["src_id"], i["status"]) for i in plan.json()["items"]] == [
            ("1", "would_create"), ("3", "would_create")]
        assert MlflowClient(dst.uri, registry_uri=dst.uri).search_registered_models(f"name='{dst_name}'") == []

        events = requests.post(served.url + "/copy-model", json=request, timeout=300,
                               headers={"Accept": "application/x-ndjson"})
        lines = [json.loads(line) for line in events.text.splitlines()]
        items = [e for e in lines if e["event"] == "item"]
        assert [(e["done"], e["total"]) for e in items] == [(1, 2), (2, 2)]
        assert lines[-1]["event"] == "report" and lines[-1]["report"]["created"] == 2
        # A new model: the selected versions are its first two, in source order.
        assert [i["dst_id"] for i in lines[-1]["report"]["items"]] == ["1", "2"]

        missing = requests.post(served.url + "/copy-model", json={**request, "versions": ["99"]}, timeout=300)
        assert missing.status_code == 404 and "version 99" in missing.json()["error"]["message"]

        check = {k: request[k] for k in ("src_model", "dst_model", "src_registry_uri", "dst_registry_uri",
                                         "dst_experiment_name", "copy_stages_and_aliases")}
        ok = requests.post(served.url + "/verify-model-version", json={**check, "src_version": "3"}, timeout=300)
        assert ok.status_code == 200 and ok.json()["dst_version"] == "2", ok.text
        assert ok.json()["differences"] == []
        # Version 2 was not selected: it has no copy to verify.
        absent = requests.post(served.url + "/verify-model-version", json={**check, "src_version": "2"},
                               timeout=300)
        assert absent.status_code == 404 and "no copy of" in absent.json()["error"]["message"], absent.text
    finally:
        served.stop()


def verify_args(src_run, dst_run, src, dst):
    return ["verify-run", "--src-run-id", src_run, "--dst-run-id", dst_run,
            "--src-mlflow-uri", src, "--dst-mlflow-uri", dst]


def test_verify_finds_a_faithful_copy_and_every_damage(src, dst):
    name, dst_name = unique("verify"), unique("verify-copy")
    _, ids = seed_experiment(src.uri, name)
    copied = run_cli(experiment_args(name, dst_name, src.uri, dst.uri, "--run-ids", f"{ids['root']},{ids['child']}"))
    assert copied.code == 0, copied
    copy_of = {i["src_id"]: i["dst_id"] for i in copied.report["items"]}

    for role in ("root", "child"):
        ok = run_cli(verify_args(ids[role], copy_of[ids[role]], src.uri, dst.uri))
        assert ok.code == 0, ok
        assert ok.report["differences"] == [] and ok.report["metric_points"] == 5
        assert ok.report["artifact_files"] == 1 and ok.report["params"] == 1

    selection = ["--src-experiment-name", name, "--dst-experiment-name", dst_name,
                 "--src-mlflow-uri", src.uri, "--dst-mlflow-uri", dst.uri]
    whole = run_cli(["verify-experiment", *selection, "--run-ids", f"{ids['root']},{ids['child']}"])
    assert whole.code == 0 and whole.report["runs_compared"] == 2, whole
    assert whole.report["differences"] == [] and whole.report["missing"] == []
    # Without --run-ids: every active run is selected, and two were never copied.
    partial = run_cli(["verify-experiment", *selection])
    assert partial.code != 0 and "error [conflict]" in partial.stderr, partial
    assert sorted(partial.report["missing"]) == sorted([ids["grandchild"], ids["failed"]])

    d = MlflowClient(dst.uri)
    damaged = copy_of[ids["root"]]
    d.set_tag(damaged, "team", "someone-else")
    d.log_metric(damaged, "loss", 9.0, step=99)
    d.log_text(damaged, "surprise\n", "notes/extra.txt")
    d.log_text(damaged, "NOTES of root\n", "notes/readme.txt")  # same size, other bytes
    bad = run_cli(verify_args(ids["root"], damaged, src.uri, dst.uri))
    assert bad.code != 0 and "error [conflict]" in bad.stderr, bad
    differences = "\n".join(bad.report["differences"])
    assert 'tag "team"' in differences
    assert 'metric "loss"' in differences
    assert '"notes/extra.txt": only in the copy' in differences
    assert 'artifact "notes/readme.txt": content differs (sha256 ' in differences
    assert len(bad.report["differences"]) == 4, differences
    # verify-experiment finds the same damage, under the run's name.
    found = run_cli(["verify-experiment", *selection, "--run-ids", ids["root"]])
    assert found.code != 0 and found.report["runs_differing"] == 1, found
    assert all(line.startswith(f"run {ids['root']} (copy {damaged}): ") for line in found.report["differences"])
    # The child's copy is nested under the root's copy: comparing it with the wrong parent fails.
    wrong = run_cli(verify_args(ids["child"], damaged, src.uri, dst.uri))
    assert wrong.code != 0 and any("parent" in line for line in wrong.report["differences"]), wrong


@pytest.mark.parametrize("host", ["python", "node"])
def test_the_packages_migrate_verify_and_report_item_errors_as_values(host, src, dst, proxy):
    from conftest import WASM
    import hosts
    name = unique(f"{host}-bulk")
    _, ids = seed_experiment(src.uri, name)
    request = {"src_experiment_name": name, "dst_experiment_name": unique("py-bulk-copy"),
               "src_mlflow_uri": src.uri, "dst_mlflow_uri": proxy.uri, "run_ids": [ids["failed"]]}
    proxy.add("POST", "/runs/update", status=400,
              answer=b'{"error_code": "INVALID_PARAMETER_VALUE", "message": "injected"}')
    code, out, err = hosts.run(host, "copy-experiment", request, WASM)
    assert code == 0, err  # failed items are in the report, not raised
    item = out["ok"]["items"][0]
    # Python: {kind, message}; Node: jco's {tag, val} of the WIT variant.
    kind = item["error"].get("kind") or item["error"]["tag"].replace("-", "_")
    assert item["status"] == "failed" and kind == "bad_input", item

    code, out, err = hosts.run(host, "copy-experiment", request, WASM)
    assert out["ok"]["items"][0]["status"] == "resumed", out
    check = {"src_run_id": ids["failed"], "dst_run_id": out["ok"]["items"][0]["dst_id"],
             "src_mlflow_uri": src.uri, "dst_mlflow_uri": dst.uri}
    code, out, err = hosts.run(host, "verify-run", check, WASM)
    assert code == 0 and out["ok"]["differences"] == [], out
    whole = {"src_experiment_name": name, "dst_experiment_name": request["dst_experiment_name"],
             "src_mlflow_uri": src.uri, "dst_mlflow_uri": dst.uri}
    code, out, err = hosts.run(host, "verify-experiment", whole, WASM)
    # Only the failed run was copied: the others are missing, and the copy is faithful.
    assert code == 0 and out["ok"]["runs_compared"] == 1 and out["ok"]["differences"] == [], out
    assert sorted(out["ok"]["missing"]) == sorted(ids[r] for r in ("root", "child", "grandchild")), out

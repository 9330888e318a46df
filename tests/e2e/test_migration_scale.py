"""Migrations at (small) scale, end to end: the built component under `wasmtime run`, killed
mid-way with SIGKILL and run again, against real MLflow servers and the Databricks emulator;
then a clean copy damaged on purpose, each damage found by verify.

The source is tests/e2e/seed_migration.py's: an experiment of RUNS runs (nested two levels,
failed, deleted, mixed sizes, logged models) and a model of VERSIONS versions made from them
(stages spread, two aliases, version tags). The 200-run figures are bench/migration.py's."""
import collections
import os
import re
import signal
import subprocess
import sys
import threading

import pytest
from mlflow import MlflowClient

import seed_migration
from conftest import cli_command, run_cli, unique
from test_migrations import experiment_args, verify_args

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from databricks_emulator import Emulator  # noqa: E402

RUNS, VERSIONS = 24, 12
SRC_LINEAGE = "mlflow_exim.run_info.run_id"
INCOMPLETE = "mlflow_exim.copy_incomplete"
# A progress line on stderr: `[mlflow-copy] k/N src -> dst: status ...`.
ITEM_LINE = re.compile(r"\[mlflow-copy\] (\d+)/(\d+) \S+ -> ")


# ---------------------------------------------------------------- killing and counting

def run_killed(args, *, after=0, then=None, when=None, env=None, wasmtime_args=(), timeout=300):
    """Runs the CLI and SIGKILLs it in the middle of an item: once its stderr has reported item
    `after` done, at the next line matching `then` (a step of the next item); or as soon as
    the event `when` is set (a proxy rule holding a request). Returns (items reported done,
    total); fails if the command ended on its own first."""
    cmd, full_env = cli_command(args, env, wasmtime_args)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=full_env)
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    if when is not None:
        threading.Thread(target=lambda: when.wait(timeout) and proc.send_signal(signal.SIGKILL), daemon=True).start()
    seen, lines = (0, 0), []
    try:
        for line in proc.stderr:
            lines.append(line)
            m = ITEM_LINE.search(line)
            if m:
                seen = (int(m.group(1)), int(m.group(2)))
            elif then and seen[0] >= after and re.search(then, line):
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        watchdog.cancel()
        proc.kill() if proc.poll() is None else None
        proc.wait(60)
    assert proc.returncode == -signal.SIGKILL, f"not killed mid-way (exit {proc.returncode}):\n{''.join(lines)}"
    assert 0 < seen[0] < seen[1], f"killed at {seen}"
    return seen


def copies_by_source(uri, experiment_name):
    """{source run id: [its copies]} of every run (deleted ones too) in the experiment."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([exp.experiment_id], run_view_type=3, max_results=1000) if exp else []
    out = collections.defaultdict(list)
    for run in runs:
        out[run.data.tags.get(SRC_LINEAGE)].append(run)
    return out


def assert_each_run_copied_once(uri, experiment_name, seeded):
    """Every active source run has exactly one complete copy, nested under its parent's copy
    with the source's status and times; nothing else is in the experiment. Returns
    {source id: copy id}."""
    copies = copies_by_source(uri, experiment_name)
    active = {r.run_id: r for r in seeded.active}
    assert set(copies) == set(active), "the copies are of the active source runs, and only those"
    duplicated = {k: len(v) for k, v in copies.items() if len(v) != 1}
    assert not duplicated, f"runs copied more than once: {duplicated}"
    copy_of = {k: v[0].info.run_id for k, v in copies.items()}
    for src_id, [copy] in copies.items():
        tags = copy.data.tags
        assert INCOMPLETE not in tags and copy.info.lifecycle_stage == "active", copy.info
        source = active[src_id]
        assert (copy.info.status, copy.info.start_time, copy.info.end_time) == \
            (source.status, source.start_time, source.end_time)
        assert tags.get("mlflow.parentRunId") == (copy_of[source.parent_id] if source.parent_id else None), "nesting"
        assert copy.info.run_name == source.name
    return copy_of


def writes(traffic):
    """The requests that change something (MLflow's reads are GETs and POST .../search)."""
    return [r for r in traffic.records
            if r.method not in ("GET", "HEAD") and not r.path.split("?")[0].endswith("/search")]


# ---------------------------------------------------------------- the source

@pytest.fixture(scope="module")
def scaled(src):
    return seed_migration.seed_experiment(src.uri, unique("scale"), RUNS)


@pytest.fixture(scope="module")
def scaled_model(src, scaled):
    name = unique("scale-model")
    backing = [r.run_id for r in scaled.active if r.role in ("plain", "long", "root", "failed")]
    return name, seed_migration.seed_model(src.uri, name, backing, VERSIONS)


# ---------------------------------------------------------------- OSS -> OSS

def test_an_experiment_killed_mid_way_finishes_on_re_run_with_each_run_copied_once(src, dst, scaled, proxy):
    dst_name = unique("scale-copy")
    args = experiment_args(scaled.name, dst_name, src.uri, dst.uri)
    total = len(scaled.active)
    # Killed once the next run's copy is created: that copy is left incomplete.
    done, listed = run_killed(args, after=total // 3, then="created destination run")
    assert listed == total

    plan = run_cli(args + ["--dry-run"])
    assert plan.code == 0, plan
    statuses = collections.Counter(i["status"] for i in plan.report["items"])
    # The run in flight is incomplete, or (had the kill come late) complete.
    assert statuses["existing"] + statuses["would_resume"] == done + 1, statuses
    assert statuses["would_resume"] <= 1 and statuses["would_create"] == total - done - 1, statuses

    resumed = run_cli(args + ["--verify"])  # every item compared with its source
    assert resumed.code == 0, resumed
    report = resumed.report
    assert (report["failed"], len(report["items"])) == (0, total), report
    again = collections.Counter(i["status"] for i in report["items"])
    assert again == collections.Counter(existing=done + 1 - statuses["would_resume"],
                                        resumed=statuses["would_resume"], created=total - done - 1), again
    copy_of = assert_each_run_copied_once(dst.uri, dst_name, scaled)
    assert copy_of == {i["src_id"]: i["dst_id"] for i in report["items"]}

    # A third run writes nothing: every item existing, no write request, nothing changed.
    client = MlflowClient(dst.uri)
    before = client.get_experiment_by_name(dst_name).last_update_time
    third = run_cli(experiment_args(scaled.name, dst_name, src.uri, proxy.uri))
    assert third.code == 0, third
    assert [i["status"] for i in third.report["items"]] == ["existing"] * total
    assert len(proxy.traffic) > total and writes(proxy.traffic) == [], writes(proxy.traffic)
    assert assert_each_run_copied_once(dst.uri, dst_name, scaled) == copy_of
    assert client.get_experiment_by_name(dst_name).last_update_time == before


def model_args(src_model, dst_model, src_uri, dst_uri, dst_experiment, *extra):
    return ["copy-model", "--src-model", src_model, "--dst-model", dst_model,
            "--src-registry-uri", src_uri, "--dst-registry-uri", dst_uri,
            "--dst-experiment-name", dst_experiment, "--copy-stages-and-aliases", *extra]


def assert_versions_copied(src_uri, src_model, dst_uri, dst_model, versions, *, stages=True, aliases=True):
    """The destination model has exactly the source's versions, with its numbers, the copy of
    each one's run, its stage, description, tags and aliases (a workspace registry has no
    aliases, Unity Catalog no stages: `aliases`/`stages` False expects none)."""
    s = MlflowClient(src_uri, registry_uri=src_uri)
    d = MlflowClient(dst_uri.replace("databricks-uc", "databricks"), registry_uri=dst_uri)
    copied = d.search_model_versions(f"name='{dst_model}'")
    assert sorted(int(v.version) for v in copied) == list(range(1, versions + 1)), "no version twice"
    for v in range(1, versions + 1):
        sv, dv = s.get_model_version(src_model, str(v)), d.get_model_version(dst_model, str(v))
        assert d.get_run(dv.run_id).data.tags[SRC_LINEAGE] == sv.run_id, f"version {v}: its run's copy"
        assert {k: x for k, x in dv.tags.items() if not k.startswith("mlflow_exim")} == sv.tags, v
        assert dv.description == sv.description, v
        assert dv.current_stage in ((sv.current_stage,) if stages else (None, "None")), v
    src_aliases = s.get_registered_model(src_model).aliases
    assert d.get_registered_model(dst_model).aliases == (src_aliases if aliases else {})
    assert not aliases or len(src_aliases) == 2


def test_a_model_of_twelve_versions_killed_mid_way_keeps_numbers_stages_and_aliases(src, dst, scaled_model, proxy):
    name, made = scaled_model
    dst_model, dst_exp = unique("scale-model-copy"), unique("scale-model-runs")
    # Killed while version 5's stage is on its way (held by the proxy): the version exists,
    # copied with its run, but without its stage; versions 1-4 are done.
    held = proxy.add("POST", "/model-versions/transition-stage", nth=5, hang=True)
    done, listed = run_killed(model_args(name, dst_model, src.uri, proxy.uri, dst_exp), when=held.hit)
    assert (done, listed) == (4, VERSIONS)
    assert MlflowClient(dst.uri, registry_uri=dst.uri).get_model_version(dst_model, "5").current_stage == "None"

    args = model_args(name, dst_model, src.uri, dst.uri, dst_exp)
    resumed = run_cli(args)
    assert resumed.code == 0, resumed
    items = resumed.report["items"]
    assert [(i["src_id"], i["dst_id"]) for i in items] == [(str(v), str(v)) for v in range(1, VERSIONS + 1)]
    assert [i["status"] for i in items] == ["existing"] * 4 + ["resumed"] + ["created"] * (VERSIONS - 5), items
    assert_versions_copied(src.uri, name, dst.uri, dst_model, VERSIONS)
    # Each source run backs several versions: one copy of it serves them all.
    runs = copies_by_source(dst.uri, dst_exp)
    assert set(runs) == set(made.values()) and all(len(v) == 1 for v in runs.values()), runs
    again = run_cli(args)
    assert [i["status"] for i in again.report["items"]] == ["existing"] * VERSIONS, again


# ---------------------------------------------------------------- Databricks (emulator)

@pytest.fixture(scope="module")
def workspace():
    """One emulated workspace (like production) with its workspace registry and Unity Catalog."""
    from databricks_profiles import pat_profile, profiles_file
    from compare import WORKSPACE_ENV
    emu = Emulator(name="scale-ws", like_production=True)
    Emulator.start_all(emu)
    env = {**emu.pat_env(), "DATABRICKS_AUTH_TYPE": "pat", "MLFLOW_S3_ENDPOINT_URL": emu.s3_endpoint}
    WORKSPACE_ENV["databricks://scale-ws"] = WORKSPACE_ENV["databricks-uc://scale-ws"] = env
    try:
        with profiles_file({"scale-ws": pat_profile(emu)}) as cfg_dir:
            yield emu, cfg_dir
    finally:
        emu.stop()


def in_workspace(workspace, args, killed_after=None, then=None):
    emu, cfg_dir = workspace
    env = {"DATABRICKS_CONFIG_FILE": "/cfg/.databrickscfg",
           "MLFLOW_SRC_S3_ENDPOINT_URL": emu.s3_endpoint, "MLFLOW_DST_S3_ENDPOINT_URL": emu.s3_endpoint}
    flags = ("--dir", f"{cfg_dir}::/cfg")
    if killed_after is not None:
        return run_killed(args, after=killed_after, then=then, env=env, wasmtime_args=flags)
    return run_cli(args, env=env, wasmtime_args=flags)


def test_oss_to_workspace_killed_and_resumed_then_workspace_to_unity_catalog(src, workspace):
    from databricks_profiles import EXPERIMENT_ROOT
    ws, uc = "databricks://scale-ws", "databricks-uc://scale-ws"
    seeded = seed_migration.seed_experiment(src.uri, unique("scale-dbx"), 8, logged_models=1, long_history=300)
    dst_name = f"{EXPERIMENT_ROOT}/{unique('scale')}"
    args = experiment_args(seeded.name, dst_name, src.uri, ws)
    done, total = in_workspace(workspace, args, killed_after=2, then="artifacts: .* files to copy")
    assert total == len(seeded.active)
    resumed = in_workspace(workspace, args + ["--verify"])
    assert resumed.code == 0 and resumed.report["failed"] == 0, resumed
    assert sum(i["status"] == "existing" for i in resumed.report["items"]) >= done
    assert_each_run_copied_once(ws, dst_name, seeded)

    # The model: 4 versions OSS -> workspace registry (which has no aliases), then workspace
    # registry -> UC (which has no stages), deep; and OSS -> UC for the aliases.
    name = unique("scale-dbx-model")
    seed_migration.seed_model(src.uri, name, [r.run_id for r in seeded.active if r.role != "child"], 4)
    ws_model = unique("scale-ws-model")
    to_ws = in_workspace(workspace, model_args(name, ws_model, src.uri, ws, f"{EXPERIMENT_ROOT}/{unique('v')}"))
    assert to_ws.code == 0 and to_ws.report["created"] == 4, to_ws
    assert_versions_copied(src.uri, name, ws, ws_model, 4, aliases=False)

    uc_client = MlflowClient("databricks://scale-ws", registry_uri=uc)
    for source, registry, model in ((ws, ws_model, unique("ws_uc")), (src.uri, name, unique("oss_uc"))):
        uc_model = f"main.default.{model}".lower()
        args = model_args(registry, uc_model, source, uc, f"{EXPERIMENT_ROOT}/{unique('uc')}")
        to_uc = in_workspace(workspace, args)
        assert to_uc.code == 0 and to_uc.report["created"] == 4, to_uc
        assert_versions_copied(source, registry, uc, uc_model, 4, stages=False, aliases=source == src.uri)
        assert {v.status for v in uc_client.search_model_versions(f"name='{uc_model}'")} == {"READY"}
        again = in_workspace(workspace, args)
        assert [i["status"] for i in again.report["items"]] == ["existing"] * 4, again


# ---------------------------------------------------------------- damage found

def _change_tag(c, run):
    c.set_tag(run.info.run_id, "team", "someone-else")


def _delete_tag(c, run):
    c.delete_tag(run.info.run_id, "shard")


def _add_point(c, run):
    c.log_metric(run.info.run_id, "m0", 9.0, step=999, timestamp=1)


def _add_file(c, run):
    c.log_text(run.info.run_id, "surprise\n", "notes/extra.txt")


def _change_end_time(c, run):
    c.set_terminated(run.info.run_id, run.info.status, end_time=run.info.end_time + 1)  # runs/update


def _same_size_other_bytes(c, run):
    text = f"notes of run {run.info.run_name.rsplit('-', 1)[1]}\n"
    c.log_text(run.info.run_id, text.upper(), "notes/readme.txt")


# (damage, what the report must name: any of these)
DAMAGES = [
    (_change_tag, ('tag "team"', "tags.team")),
    (_delete_tag, ('tag "shard"', "tags.shard")),
    (_add_point, ('metric "m0"', "metrics.m0")),
    (_add_file, ("notes/extra.txt",)),
    (_change_end_time, ("end time", "end_time")),
]


@pytest.fixture(scope="module")
def clean_copy(src, dst, scaled):
    """Copies of seven runs without a parent (a damage each, and one spare), verified clean."""
    picked = [r.run_id for r in scaled.active if r.parent_id is None][:len(DAMAGES) + 2]
    dst_name = unique("scale-damage")
    copied = run_cli(experiment_args(scaled.name, dst_name, src.uri, dst.uri, "--run-ids", ",".join(picked),
                                     "--verify"))
    assert copied.code == 0 and copied.report["created"] == len(picked), copied
    return dst_name, [(i["src_id"], i["dst_id"]) for i in copied.report["items"]]


def reported(result, names):
    """The differences of a verify report that name any of `names`."""
    return [d for d in result.report["differences"] if any(n in str(d) for n in names)]


@pytest.mark.parametrize("damage,names", DAMAGES, ids=[d.__name__.strip("_") for d, _ in DAMAGES])
def test_verify_run_reports_each_damage_by_name(src, dst, clean_copy, damage, names):
    _, pairs = clean_copy
    src_id, dst_id = pairs[DAMAGES.index((damage, names))]
    clean = run_cli(verify_args(src_id, dst_id, src.uri, dst.uri))
    assert clean.code == 0 and clean.report["differences"] == [], clean
    client = MlflowClient(dst.uri)
    damage(client, client.get_run(dst_id))
    found = run_cli(verify_args(src_id, dst_id, src.uri, dst.uri))
    assert found.code != 0 and "error [conflict]" in found.stderr, found
    assert reported(found, names) and len(found.report["differences"]) == 1, found.report["differences"]


def test_verify_run_finds_a_file_of_the_same_size_with_other_bytes(src, dst, clean_copy):
    _, pairs = clean_copy
    src_id, dst_id = pairs[len(DAMAGES)]
    client = MlflowClient(dst.uri)
    _same_size_other_bytes(client, client.get_run(dst_id))
    found = run_cli(verify_args(src_id, dst_id, src.uri, dst.uri))
    assert found.code != 0, found
    differences = reported(found, ("artifacts.notes/readme.txt", 'artifact "notes/readme.txt"'))
    assert differences and "sha256" in str(differences), found.report["differences"]


def verify_experiment_args(src_name, dst_name, src_uri, dst_uri, *extra):
    return ["verify-experiment", "--src-experiment-name", src_name, "--dst-experiment-name", dst_name,
            "--src-mlflow-uri", src_uri, "--dst-mlflow-uri", dst_uri, *extra]


def test_verify_experiment_compares_every_run_and_names_a_missing_one(src, dst, scaled):
    dst_name = unique("scale-verify-exp")
    picked = [r.run_id for r in scaled.active if r.parent_id is None][:3]
    copied = run_cli(experiment_args(scaled.name, dst_name, src.uri, dst.uri, "--run-ids", ",".join(picked)))
    assert copied.code == 0, copied
    selection = ("--run-ids", ",".join(picked))
    clean = run_cli(verify_experiment_args(scaled.name, dst_name, src.uri, dst.uri, *selection))
    assert clean.code == 0, clean
    assert (clean.report["runs_compared"], clean.report["missing"], clean.report["differences"]) == (3, [], [])
    copy_of = {i["src_id"]: i["dst_id"] for i in copied.report["items"]}
    client = MlflowClient(dst.uri)
    client.delete_run(copy_of[picked[0]])
    client.set_tag(copy_of[picked[1]], "team", "someone-else")
    found = run_cli(verify_experiment_args(scaled.name, dst_name, src.uri, dst.uri, *selection))
    assert found.code != 0 and "error [conflict]" in found.stderr, found
    assert found.report["missing"] == [picked[0]]
    [difference] = found.report["differences"]  # names the run, the tag and the copy's value
    assert picked[1] in str(difference) and reported(found, ('tag "team"', "tags.team")), difference
    assert "someone-else" in str(difference)


def verify_version_args(src_model, version, dst_model, dst_version, src_uri, dst_uri, dst_experiment):
    """copy-model-version's flags (a deep copy, stages and aliases compared) and --dst-version."""
    return ["verify-model-version", "--src-model", src_model, "--src-version", version,
            "--dst-model", dst_model, "--dst-version", dst_version,
            "--src-registry-uri", src_uri, "--dst-registry-uri", dst_uri,
            "--dst-experiment-name", dst_experiment, "--copy-stages-and-aliases"]


def test_verify_model_version_reports_a_changed_tag_alias_and_stage(src, dst, scaled_model):
    name, _ = scaled_model
    dst_model, dst_exp = unique("scale-model-damage"), unique("scale-damage-runs")
    copied = run_cli(model_args(name, dst_model, src.uri, dst.uri, dst_exp, "--versions", f"{VERSIONS - 1},{VERSIONS}"))
    assert copied.code == 0, copied
    last, before = str(VERSIONS), str(VERSIONS - 1)
    # Copied into a new model, the two versions are its 1 and 2.
    pairs = {i["src_id"]: i["dst_id"] for i in copied.report["items"]}

    def verify(v):
        return run_cli(verify_version_args(name, v, dst_model, pairs[v], src.uri, dst.uri, dst_exp))
    for v in (before, last):
        clean = verify(v)
        assert clean.code == 0 and clean.report["differences"] == [], clean
    client = MlflowClient(dst.uri, registry_uri=dst.uri)
    client.set_model_version_tag(dst_model, pairs[last], "index", "tampered")
    client.set_registered_model_alias(dst_model, "challenger", pairs[before])  # moved off `last`
    client.transition_model_version_stage(dst_model, pairs[before], "Archived")  # the source: Production
    found = verify(last)
    assert found.code != 0 and "error [conflict]" in found.stderr, found
    assert reported(found, ('tag "index"', "tags.index")) and reported(found, ("aliases",)), found.report
    staged = verify(before)
    assert staged.code != 0 and reported(staged, ("stage",)) and reported(staged, ("aliases",)), staged.report

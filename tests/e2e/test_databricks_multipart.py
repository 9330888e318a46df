"""Large artifacts written in parts into Databricks workspaces, through the built component,
against the Databricks emulator with its Files API off (signed URLs only): S3 multipart uploads
through the workspace's multipart routes (thresholds lowered with MLflow's own variables), and
Azure Blob blocks with a block list. Copies are checked with MLflow's own client (compare.py)
and the storage requests the emulator saw."""
import os
import re
import sys

import pytest
import requests
from mlflow import MlflowClient

import seed
from compare import assert_run_copied
from conftest import copy_run_args, unique
from databricks_profiles import EXPERIMENT_ROOT, copy, signed_urls_only, workspace_profiles

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from databricks_emulator import Emulator  # noqa: E402

MiB = 1 << 20
# The 11 MiB file goes in three parts (5, 5, 1 MiB); the small files go whole.
# The Files API is skipped (MLflow's switch): these tests count every request of the signed-URL
# route, and a first attempt refused by the Files API would add a read of each file
# (test_databricks_artifacts_real.py covers that fallback).
S3_PARTS = {"MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE": str(6 * MiB),
            "MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE": str(5 * MiB),
            "MLFLOW_DISABLE_DATABRICKS_SDK_FOR_RUN_ARTIFACTS": "true"}
BIG = "big/blob.bin"


@pytest.fixture(scope="module")
def clouds():
    aws = Emulator(name="awsparts", like_production=True)
    azure = Emulator(name="azparts", cloud="azure", like_production=True)
    Emulator.start_all(aws, azure)
    try:
        with workspace_profiles(aws, azure) as cfg_dir:
            yield aws, azure, cfg_dir
    finally:
        aws.stop()
        azure.stop()


@pytest.fixture(scope="module")
def big_run(src):
    return seed.seed_rich_run(src.uri, unique("parts-source"), big_bytes=11 * MiB, metric_points=10,
                              with_model=False)


def copy_into(ws, cfg_dir, run_id, src_uri, env):
    """Copies a run into a new experiment of `ws` over signed URLs only: the experiment, the
    result, and the API and storage requests the copy made."""
    exp = f"{EXPERIMENT_ROOT}/{unique('parts')}"
    api_before, storage_before = len(ws.requests), len(ws.storage_requests())
    with signed_urls_only(ws):
        result = copy(cfg_dir, copy_run_args(run_id, exp, src_uri, f"databricks://{ws.name}"), env=env)
    return exp, result, ws.requests[api_before:], ws.storage_requests()[storage_before:]


def puts_of(storage, path):
    return [r for r in storage if r["method"] == "PUT" and r["path"].endswith(path)]


def test_a_large_file_goes_to_s3_in_parts(src, big_run, clouds):
    aws, _, cfg_dir = clouds
    exp, result, api, storage = copy_into(aws, cfg_dir, big_run, src.uri, S3_PARTS)
    assert result.code == 0, result
    parts = puts_of(storage, BIG)
    assert len(parts) == 3 and all({"partNumber", "uploadId"} <= set(r["query"]) for r in parts), parts
    assert all(r["status"] == 200 for r in parts)
    whole = [r for r in storage if r["method"] == "PUT" and not r["path"].endswith(BIG)]
    assert whole and not any("uploadId" in r["query"] for r in whole), "small files go in one PUT"
    paths = [r["path"] for r in api]
    assert paths.count("/api/2.0/mlflow/artifacts/create-multipart-upload") == 1
    assert paths.count("/api/2.0/mlflow/artifacts/complete-multipart-upload") == 1
    assert not any(r["has_bearer"] for r in storage), "no token ever reaches storage"
    assert_run_copied(src.uri, big_run, f"databricks://{aws.name}", result.report["dst_run_id"], exp,
                      databricks_dst=True)


class NthMatch:
    """A path pattern that matches only the n-th request whose path it matches."""

    def __init__(self, pattern, n):
        self.rx, self.n, self.seen = re.compile(pattern), n, 0

    def search(self, path):
        if not self.rx.search(path):
            return None
        self.seen += 1
        return self.seen == self.n


def refuse_nth_put(ws, path_regex, n, **error):
    """Like `inject_storage_error`, but for the n-th PUT of the path (a part in the middle of a
    file), not the first: the fault's pattern is swapped for one that counts."""
    ws.inject_storage_error(path_regex, method="PUT", times=1, **error)
    for storage in {id(s): s for s in (ws.storage, ws.ws_storage)}.values():
        storage.faults[-1]["rx"] = NthMatch(path_regex, n)


@pytest.mark.parametrize("source_ranges", [True, False], ids=["range", "source-ignores-range"])
def test_a_part_url_that_expired_mid_upload_is_fetched_again(src, big_run, clouds, src_proxy, source_ranges,
                                                             monkeypatch):
    """The second part's URL is refused as expired: a fresh one is asked for, and the rest of the
    file is read again from that part's offset with a Range GET, the first part kept. A source
    that ignores Range (the proxy drops the header) sends the whole file: its first part is
    skipped."""
    aws, _, cfg_dir = clouds
    if not source_ranges:
        import fault_proxy
        monkeypatch.setattr(fault_proxy, "HOP_BY_HOP", fault_proxy.HOP_BY_HOP | {"range"})
    # The resumed read relies on the source honouring Range: MLflow's artifact proxy (the route
    # the copy reads) and its /get-artifact route (for servers that do not proxy) both do.
    root = MlflowClient(src.uri).get_run(big_run).info.artifact_uri.removeprefix("mlflow-artifacts:/")
    for url in (f"{src.uri}/api/2.0/mlflow-artifacts/artifacts/{root}/{BIG}",
                f"{src.uri}/get-artifact?path={BIG}&run_uuid={big_run}"):
        full = requests.get(url, timeout=60).content
        ranged = requests.get(url, headers={"Range": f"bytes={5 * MiB}-"}, timeout=60)
        assert len(full) == 11 * MiB and ranged.status_code == 206 and ranged.content == full[5 * MiB:], url

    through_proxy = requests.get(f"{src_proxy.uri}/get-artifact?path={BIG}&run_uuid={big_run}",
                                 headers={"Range": "bytes=1-"}, timeout=60)
    assert through_proxy.status_code == (206 if source_ranges else 200)
    reads_before = len(src_proxy.traffic.matching("GET", BIG))

    refuse_nth_put(aws, r"big/blob\.bin$", 2, status=403, code="AccessDenied", message="Request has expired")
    exp, result, api, storage = copy_into(aws, cfg_dir, big_run, src_proxy.uri, S3_PARTS)
    assert result.code == 0, result
    refreshed = [r for r in api if r["path"] == "/api/2.0/mlflow/artifacts/get-presigned-upload-part-url"]
    assert len(refreshed) == 1, [r["path"] for r in api]
    parts = [r["status"] for r in puts_of(storage, BIG)]
    assert parts == [200, 403, 200, 200], "part 1 kept, part 2 refused then sent again, part 3"
    reads = len(src_proxy.traffic.matching("GET", BIG)) - reads_before
    assert reads == 2, "one read, and one from part 2 on"
    assert_run_copied(src_proxy.uri, big_run, f"databricks://{aws.name}", result.report["dst_run_id"], exp,
                      databricks_dst=True)


def test_a_part_that_fails_for_good_aborts_the_upload(src, big_run, clouds):
    aws, _, cfg_dir = clouds
    aws.inject_storage_error(r"big/blob\.bin$", status=400, code="InvalidArgument", message="injected",
                             method="PUT", times=1)
    _, result, api, storage = copy_into(aws, cfg_dir, big_run, src.uri, S3_PARTS)
    assert result.code == 1 and BIG in result.stderr and "400" in result.stderr, result
    aborts = [r for r in storage if r["method"] == "DELETE" and r["path"].endswith(BIG)]
    assert len(aborts) == 1 and "uploadId" in aborts[0]["query"] and aborts[0]["status"] == 204, aborts
    assert "/api/2.0/mlflow/artifacts/complete-multipart-upload" not in [r["path"] for r in api]


def test_azure_blobs_are_written_as_blocks_and_a_block_list(src, clouds):
    """Every file on Azure goes as blocks (1 MiB here) and one block list, the MLmodel rewritten
    for the copy too; a block refused as expired gets fresh credentials."""
    _, azure, cfg_dir = clouds
    run_id = seed.seed_rich_run(src.uri, unique("azure-source"), big_bytes=3 * MiB + 12345, metric_points=10)
    azure.inject_storage_error(r"big/blob\.bin$", status=403, code="AuthenticationFailed",
                               message="Signature not valid in the specified time frame", method="PUT", times=1)
    exp, result, api, storage = copy_into(azure, cfg_dir, run_id, src.uri,
                                          {"MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE": str(MiB)})
    assert result.code == 0, result
    big = puts_of(storage, BIG)
    blocks = [r for r in big if r["status"] == 201 and set(r["query"]) == {"comp", "blockid"}]
    lists = [r for r in big if set(r["query"]) == {"comp"}]
    assert len(blocks) == 4 and len(lists) == 1 and lists[0]["status"] == 201, big
    assert big[0]["status"] == 403, "the first block was refused once"
    writes = [r for r in storage if r["method"] == "PUT"]
    assert all("comp" in r["query"] for r in writes), "every file is blocks and a block list"
    assert any(r["path"].endswith("/MLmodel") for r in writes), "the logged model's MLmodel too"
    assert not any(r["has_bearer"] for r in storage)
    assert_run_copied(src.uri, run_id, f"databricks://{azure.name}", result.report["dst_run_id"], exp,
                      databricks_dst=True)

"""copy_experiment with `parallel` N and no `via`: N component instances at once, in threads,
as the Rust host does (hosts/rust/src/fan_out.rs). The component copies its items one at a time
(WASI 0.2 gives a guest no threads); a host can run several instances of it instead, and each
call of a `Copier` is an instance of its own that runs outside the GIL.

One instance plans (a dry run: each item names its parent item); the items then go in waves by
nesting depth, so that every parent's copy is there before its children are nested under it,
each wave's runs dealt out to N instances (each a copy-experiment of its share's `run_ids`:
every run a copy-run, idempotent). A child whose parent failed is not attempted, as the
component does it. The shares' reports merge into one."""
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List

COUNTED = ("created", "resumed", "existing", "failed")


def copy_experiment_in_instances(copier, request: Dict[str, Any], instances: int) -> dict:
    started = time.monotonic()
    shared = {**request, "parallel": None}
    plan = copier.call("copy-experiment", {**shared, "dry_run": True, "verify": None})
    if request.get("dry_run"):
        return plan
    report = {**plan, "dry_run": False, "items": [], "artifact_bytes": 0, "metric_points": 0,
              **{status: 0 for status in COUNTED}}
    failed = set()
    # A share's report cannot name parents outside the share: the plan's are kept.
    parents = {item["src_id"]: item["src_parent_id"] for item in plan["items"]}
    share_request = {**shared, "filter": None, "max_runs": None}
    with ThreadPoolExecutor(max_workers=instances) as pool:
        for wave in _waves(plan["items"]):
            ready = []
            for item in wave:
                if item["src_parent_id"] is not None and item["src_parent_id"] in failed:
                    _add(report, _not_attempted(item), failed)
                else:
                    ready.append(item)
            shares = _deal(ready, instances)
            copied = pool.map(lambda ids: copier.call("copy-experiment", {**share_request, "run_ids": ids}),
                              shares)
            for share in copied:
                report["dst"] = report["dst"] or share["dst"]
                for item in share["items"]:
                    _add(report, {**item, "src_parent_id": parents.get(item["src_id"])}, failed)
    report["elapsed_seconds"] = time.monotonic() - started
    return report


def _waves(items: List[dict]) -> List[List[dict]]:
    """The plan's items by nesting depth (the plan lists parents before their children)."""
    depth: Dict[str, int] = {}
    waves: List[List[dict]] = []
    for item in items:
        parent = item["src_parent_id"]
        d = depth[parent] + 1 if parent in depth else 0
        depth[item["src_id"]] = d
        while len(waves) <= d:
            waves.append([])
        waves[d].append(item)
    return waves


def _deal(items: List[dict], instances: int) -> List[List[str]]:
    """The runs' ids dealt round robin into at most `instances` shares."""
    shares: List[List[str]] = [[] for _ in range(min(instances, len(items)))]
    for i, item in enumerate(items):
        shares[i % instances].append(item["src_id"])
    return shares


def _not_attempted(item: dict) -> dict:
    message = f"not attempted: its parent run {item['src_parent_id']} failed (a re-run copies both, nested)"
    return {**item, "dst_id": None, "status": "failed", "detail": None, "artifact_bytes": 0,
            "metric_points": 0, "error": {"kind": "upstream", "message": message}}


def _add(report: dict, item: dict, failed: set) -> None:
    if item["status"] in COUNTED:
        report[item["status"]] += 1
    if item["status"] == "failed":
        failed.add(item["src_id"])
    report["artifact_bytes"] += item["artifact_bytes"]
    report["metric_points"] += item["metric_points"]
    report["items"].append(item)

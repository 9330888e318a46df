// copyExperiment with `parallel` N and no `via`: N component instances at once, each call a
// worker of its own, as the Rust host does (hosts/rust/src/fan_out.rs). The component copies
// its items one at a time (WASI 0.2 gives a guest no threads); a host can run several
// instances of it instead. One instance plans (a dry run: each item names its parent item);
// the items then go in waves by nesting depth, so that every parent's copy is there before its
// children are nested under it, each wave's runs dealt out to N instances (each a
// copyExperiment of its share's runIds: every run a copy-run, idempotent). A child whose parent
// failed is not attempted, as the component does it. The shares' reports merge into one.

const COUNTED = ['created', 'resumed', 'existing', 'failed'];

/** Runs the copy `request` asks for over `instances` instances; `copy` makes one call. */
export async function copyExperimentInInstances(copy, request, instances) {
  const started = Date.now();
  const shared = { ...request, parallel: undefined };
  const plan = await copy({ ...shared, dryRun: true, verify: undefined });
  if (request.dryRun) return plan;
  const report = {
    ...plan, dryRun: false, items: [], created: 0, resumed: 0, existing: 0, failed: 0,
    artifactBytes: 0, metricPoints: 0,
  };
  const failed = new Set();
  // A share's report cannot name parents outside the share: the plan's are kept.
  const parents = new Map(plan.items.map((item) => [item.srcId, item.srcParentId]));
  for (const wave of waves(plan.items)) {
    const ready = [];
    for (const item of wave) {
      if (item.srcParentId !== undefined && failed.has(item.srcParentId)) add(report, notAttempted(item), failed);
      else ready.push(item);
    }
    const shares = deal(ready, instances).map((runIds) =>
      copy({ ...shared, runIds, filter: undefined, maxRuns: undefined }));
    for (const share of await Promise.all(shares)) {
      report.dst = report.dst ?? share.dst;
      for (const item of share.items) add(report, { ...item, srcParentId: parents.get(item.srcId) }, failed);
    }
  }
  report.elapsedSeconds = (Date.now() - started) / 1000;
  return report;
}

/** The plan's items by nesting depth (the plan lists parents before their children). */
function waves(items) {
  const depth = new Map();
  const waves = [];
  for (const item of items) {
    const d = depth.has(item.srcParentId) ? depth.get(item.srcParentId) + 1 : 0;
    depth.set(item.srcId, d);
    (waves[d] ??= []).push(item);
  }
  return waves;
}

/** The runs' ids dealt round robin into at most `instances` shares. */
function deal(items, instances) {
  const shares = Array.from({ length: Math.min(instances, items.length) }, () => []);
  items.forEach((item, i) => shares[i % instances].push(item.srcId));
  return shares;
}

function notAttempted(item) {
  return {
    ...item, dstId: undefined, status: 'failed', detail: undefined, artifactBytes: 0, metricPoints: 0,
    error: { tag: 'upstream', val: `not attempted: its parent run ${item.srcParentId} failed (a re-run copies both, nested)` },
  };
}

function add(report, item, failed) {
  if (COUNTED.includes(item.status)) report[item.status] += 1;
  if (item.status === 'failed') failed.add(item.srcId);
  report.artifactBytes += item.artifactBytes;
  report.metricPoints += item.metricPoints;
  report.items.push(item);
}

// Copy MLflow runs and registered model versions between servers from Node.js:
// mlflow_copy.wasm (transpiled by jco, WASI by @bytecodealliance/preview2-shim), each copy in
// its own worker thread so the event loop is never blocked.
//
//   import { copyRun } from 'mlflow-copy';
//   const report = await copyRun({ runId: 'c62c…', experimentName: 'My_Experiment',
//     srcMlflowUri: 'http://localhost:5000', dstMlflowUri: 'http://localhost:5001' });
//
// Requests and reports use the WIT field names in camelCase. A failed copy rejects with a
// CopyError subclass, one per `copy-error` case. The guest sees only the credential variables
// (passedToGuest), never the rest of the environment.
import { Worker } from 'node:worker_threads';
import { transpiled, findWasm } from './component.js';
import { copyExperimentInInstances } from './fan-out.js';

export { findWasm };

// The host variables the guest may see: the credentials and HTTP settings MLflow clients read.
// One list for the package; the Rust and Python hosts apply the same rule.
export const GUEST_ENV_EXACT = ['MLFLOW_HTTP_REQUEST_TIMEOUT', 'MLFLOW_HTTP_REQUEST_MAX_RETRIES',
  'MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR', 'MLFLOW_HTTP_REQUEST_BACKOFF_JITTER',
  'MLFLOW_COPY_FILES_API_MAX_PUT', 'MLFLOW_COPY_ALLOWED_HOSTS', 'MLFLOW_COPY_VIA_TOKEN', 'MLFLOW_COPY_VIA_TIMEOUT',
  'MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE', 'MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE',
  'MLFLOW_SKIP_SIGNATURE_CHECK_FOR_UC_REGISTRY_MIGRATION', 'MLFLOW_USE_DATABRICKS_SDK_MODEL_ARTIFACTS_REPO_FOR_UC',
  'MLFLOW_DISABLE_DATABRICKS_SDK_FOR_RUN_ARTIFACTS', 'AWS_REGION', 'AWS_DEFAULT_REGION'];
export const GUEST_ENV_PREFIXES = ['DATABRICKS_'];

/** `MLFLOW_*TRACKING_*`, `MLFLOW_*S3_ENDPOINT_URL`, `GUEST_ENV_EXACT`, `DATABRICKS_*`. */
export function passedToGuest(name) {
  if (GUEST_ENV_EXACT.includes(name) || GUEST_ENV_PREFIXES.some((p) => name.startsWith(p))) return true;
  const rest = name.slice('MLFLOW_'.length);
  return name.startsWith('MLFLOW_') && (rest.includes('TRACKING_') || rest.endsWith('S3_ENDPOINT_URL'));
}

/** The part of an environment the guest sees: the variables passedToGuest names. */
export function guestEnv(env) {
  return Object.fromEntries(
    Object.entries(env).filter(([name, value]) => passedToGuest(name) && typeof value === 'string'));
}

/** A copy failed. `kind` is the WIT case in snake_case (`not_found`, …); the message names the
 * server and object and never contains credentials. */
export class CopyError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}
CopyError.prototype.kind = 'copy_error';
/** A malformed or unsupported URI, a bad field, a shallow copy the destination cannot reach. */
export class BadInput extends CopyError {}
BadInput.prototype.kind = 'bad_input';
/** The source run, model or version does not exist or is deleted. */
export class NotFound extends CopyError {}
NotFound.prototype.kind = 'not_found';
/** A server refused the credentials (HTTP 401/403). */
export class Unauthorized extends CopyError {}
Unauthorized.prototype.kind = 'unauthorized';
/** The destination holds something that conflicts, e.g. a deleted experiment of that name. */
export class Conflict extends CopyError {}
Conflict.prototype.kind = 'conflict';
/** A server was unreachable or failed (after retries), or answered something unexpected. */
export class Upstream extends CopyError {}
Upstream.prototype.kind = 'upstream';

const ERRORS = {
  'bad-input': BadInput, 'not-found': NotFound, unauthorized: Unauthorized, conflict: Conflict, upstream: Upstream,
};

// u64 counts come back as BigInt; every real count fits a Number.
function numbers(value) {
  if (typeof value === 'bigint') return Number(value);
  if (Array.isArray(value)) return value.map(numbers);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, numbers(v)]));
  }
  return value;
}

// Workers inherit the process's Node.js flags, but a worker given --input-type (as by
// `node --input-type=module -e …`) refuses to load worker.js from its file; -e/-p code is not
// the worker's either.
function workerFlags() {
  const flags = [];
  const args = process.execArgv;
  for (let i = 0; i < args.length; i++) {
    if (['--input-type', '-e', '--eval', '-p', '--print'].includes(args[i])) i++;
    else if (!args[i].startsWith('--input-type=')) flags.push(args[i]);
  }
  return flags;
}

async function call(fn, request, { wasm, env = process.env } = {}) {
  const module = await transpiled(wasm);
  const guest = guestEnv(env);
  return new Promise((resolve, reject) => {
    // The worker's own process.env is the guest's environment too, nothing more.
    const worker = new Worker(new URL('./worker.js', import.meta.url), {
      workerData: { module, fn, request, env: guest }, env: guest, execArgv: workerFlags(),
    });
    let settled = false;
    const settle = (action) => {
      if (settled) return;
      settled = true;
      worker.terminate();
      action();
    };
    worker.once('message', (msg) => settle(() => {
      if ('ok' in msg) resolve(numbers(msg.ok));
      else if ('err' in msg) reject(new (ERRORS[msg.err.tag] || CopyError)(msg.err.val));
      else reject(new Error(`mlflow-copy: the component failed: ${msg.crash}`));
    }));
    worker.once('error', (e) => settle(() => reject(e)));
    worker.once('exit', (code) => settle(() => reject(new Error(`mlflow-copy: worker exited with code ${code}`))));
  });
}

/**
 * Copies a run (with `copyChildren`, its child runs too) into the destination experiment.
 * request: { runId, experimentName, srcMlflowUri, dstMlflowUri, copyChildren?, concurrency? }.
 * options: { wasm?: path, env?: object (default process.env; filtered by passedToGuest) }.
 * Resolves to the report: { srcRunId, dstRunId, dstExperimentId, outcome, params, tags,
 * metricPoints, datasetInputs, loggedModels, artifactFiles, artifactBytes,
 * artifactFilesSkipped, traces, assessments, prompts, newTraceIds, childRunIds, elapsedSeconds }.
 */
export function copyRun(request, options) {
  return call('copyRun', request, options);
}

/**
 * Copies a registered model version (deep when `dstExperimentName` is given).
 * request: { srcModel, srcVersion, dstModel, srcRegistryUri, dstRegistryUri, dstExperimentName?,
 * copyPermissions?, copyStagesAndAliases?, copyLineageTags?, concurrency? }.
 * Resolves to the report: { srcModel, srcVersion, dstModel, dstVersion, dstRunId, dstSource,
 * deep, outcome, registeredModelCreated, tags, stage, aliases, permissions, run, elapsedSeconds }.
 */
export function copyModelVersion(request, options) {
  return call('copyModelVersion', request, options);
}

/**
 * Copies the runs of an experiment (all, `filter`ed, `runIds` or the newest `maxRuns`), parents
 * before children. request: { srcExperimentName? | srcExperimentId?, dstExperimentName,
 * srcMlflowUri, dstMlflowUri, filter?, runIds?, maxRuns?, dryRun?, verify?, concurrency? }.
 * Resolves to the migration report: { src, dst, dryRun, items: [{ srcId, dstId, status, detail,
 * error, artifactBytes, metricPoints }], created, resumed, existing, failed, artifactBytes,
 * metricPoints, elapsedSeconds }. Failed items are in the report (failed > 0), not thrown.
 */
export function copyExperiment(request, options) {
  const copy = (r) => call('copyExperiment', { runIds: [], ...r }, options);
  // `parallel` without `via`: N instances of the component at once, here (fan-out.js).
  if ((request.parallel ?? 1) > 1 && !request.via) {
    return copyExperimentInInstances(copy, request, request.parallel);
  }
  return copy(request);
}

/**
 * Copies versions of a registered model (all, or listed / in `stages` / holding `aliases`) in
 * ascending order, each as copyModelVersion does. Resolves to the migration report.
 */
export function copyModel(request, options) {
  return call('copyModel', { versions: [], stages: [], aliases: [], ...request }, options);
}

/**
 * Compares a copied run with its source. request: { srcRunId, dstRunId, srcMlflowUri,
 * dstMlflowUri }. Resolves to { srcRunId, dstRunId, params, tags, metricPoints, datasetInputs,
 * loggedModels, artifactFiles, artifactBytes, differences } (no differences: faithful).
 */
export function verifyRun(request, options) {
  return call('verifyRun', request, options);
}

/**
 * Compares what copyExperiment copied with this request (the same selection of runs) with its
 * source. request: copyExperiment's ({ srcExperimentName? | srcExperimentId?, dstExperimentName,
 * srcMlflowUri, dstMlflowUri, filter?, runIds?, maxRuns? }). Resolves to { srcExperimentId, dstExperimentId,
 * runsCompared, runsDiffering, missing, metricPoints, artifactBytes, differences }.
 */
export function verifyExperiment(request, options) {
  return call('verifyExperiment', { runIds: [], ...request }, options);
}

/**
 * Compares a copied model version with its source, as copyModelVersion made it. request:
 * { srcModel, srcVersion, dstModel, srcRegistryUri, dstRegistryUri, dstVersion?,
 * dstExperimentName?, copyStagesAndAliases?, copyLineageTags? }. Resolves to { srcModel,
 * srcVersion, dstModel, dstVersion, run, differences }.
 */
export function verifyModelVersion(request, options) {
  return call('verifyModelVersion', request, options);
}

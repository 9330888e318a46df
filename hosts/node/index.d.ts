export type Outcome = 'created' | 'resumed' | 'existing';

export interface CopyRunRequest {
  runId: string;
  experimentName: string;
  srcMlflowUri: string;
  dstMlflowUri: string;
  copyChildren?: boolean;
  concurrency?: number;
}

export interface CopyRunReport {
  srcRunId: string;
  dstRunId: string;
  dstExperimentId: string;
  outcome: Outcome;
  params: number;
  tags: number;
  metricPoints: number;
  datasetInputs: number;
  loggedModels: number;
  artifactFiles: number;
  artifactBytes: number;
  artifactFilesSkipped: number;
  /** MLflow 3 traces of the run and its logged models written by this call. */
  traces: number;
  /** Assessments (feedback, expectations) on those traces. */
  assessments: number;
  /** Linked prompt versions created or found at the destination. */
  prompts: number;
  /** [source trace id, copy's trace id] for the traces whose copy got a new id. */
  newTraceIds: [string, string][];
  childRunIds: string[];
  elapsedSeconds: number;
}

export interface CopyModelVersionRequest {
  srcModel: string;
  srcVersion: string;
  dstModel: string;
  srcRegistryUri: string;
  dstRegistryUri: string;
  dstExperimentName?: string;
  copyPermissions?: boolean;
  copyStagesAndAliases?: boolean;
  copyLineageTags?: boolean;
  concurrency?: number;
}

export interface CopyModelVersionReport {
  srcModel: string;
  srcVersion: string;
  dstModel: string;
  dstVersion: string;
  dstRunId?: string;
  dstSource: string;
  deep: boolean;
  outcome: Outcome;
  registeredModelCreated: boolean;
  tags: number;
  stage?: string;
  aliases: string[];
  permissions: number;
  run?: CopyRunReport;
  elapsedSeconds: number;
}

export interface Options {
  /** Path of mlflow_copy.wasm (used when MLFLOW_COPY_WASM is not set). */
  wasm?: string;
  /** Environment to take the guest's credentials from (default process.env), filtered by passedToGuest. */
  env?: Record<string, string | undefined>;
}

export function copyRun(request: CopyRunRequest, options?: Options): Promise<CopyRunReport>;
export function copyModelVersion(request: CopyModelVersionRequest, options?: Options): Promise<CopyModelVersionReport>;
export interface CopyExperimentRequest {
  srcExperimentName?: string;
  srcExperimentId?: string;
  dstExperimentName: string;
  srcMlflowUri: string;
  dstMlflowUri: string;
  filter?: string;
  runIds?: string[];
  maxRuns?: number;
  dryRun?: boolean;
  verify?: boolean;
  /** URL of mlflow-copy's HTTP function: each item one request to it (token: MLFLOW_COPY_VIA_TOKEN). */
  via?: string;
  /** Items in flight at once over `via` (default 4). */
  parallel?: number;
  concurrency?: number;
}

export interface CopyModelRequest {
  srcModel: string;
  dstModel: string;
  srcRegistryUri: string;
  dstRegistryUri: string;
  dstExperimentName?: string;
  versions?: string[];
  stages?: string[];
  aliases?: string[];
  copyPermissions?: boolean;
  copyStagesAndAliases?: boolean;
  copyLineageTags?: boolean;
  dryRun?: boolean;
  verify?: boolean;
  /** URL of mlflow-copy's HTTP function: each item one request to it (token: MLFLOW_COPY_VIA_TOKEN). */
  via?: string;
  /** Items in flight at once over `via` (default 4). */
  parallel?: number;
  concurrency?: number;
}

/** One run or version of a bulk copy (a line of the id map). */
export interface MigrationItem {
  srcId: string;
  dstId?: string;
  status: 'created' | 'resumed' | 'existing' | 'failed' | 'would-create' | 'would-resume';
  detail?: string;
  /** copy-experiment: the source run's parent when it is an item too (this item waits for it). */
  srcParentId?: string;
  /** The item's copy-error: tag is the kind ('bad-input', …), val the message. */
  error?: { tag: string; val: string };
  artifactBytes: number;
  metricPoints: number;
}

export interface MigrationReport {
  src: string;
  dst?: string;
  dryRun: boolean;
  items: MigrationItem[];
  created: number;
  resumed: number;
  existing: number;
  failed: number;
  artifactBytes: number;
  metricPoints: number;
  elapsedSeconds: number;
}

export interface VerifyRunRequest {
  srcRunId: string;
  dstRunId: string;
  srcMlflowUri: string;
  dstMlflowUri: string;
}

export interface VerifyReport {
  srcRunId: string;
  dstRunId: string;
  params: number;
  tags: number;
  metricPoints: number;
  datasetInputs: number;
  loggedModels: number;
  artifactFiles: number;
  artifactBytes: number;
  /** MLflow 3 traces of the run and its logged models, each compared with its copy. */
  traces: number;
  differences: string[];
}

/** The copyExperiment request whose result is verified (dryRun, verify, concurrency ignored). */
export type VerifyExperimentRequest = CopyExperimentRequest;

export interface ExperimentVerifyReport {
  srcExperimentId: string;
  dstExperimentId: string;
  runsCompared: number;
  runsDiffering: number;
  /** Selected source runs without a complete copy. */
  missing: string[];
  metricPoints: number;
  artifactBytes: number;
  differences: string[];
}

export interface VerifyModelVersionRequest {
  srcModel: string;
  srcVersion: string;
  dstModel: string;
  srcRegistryUri: string;
  dstRegistryUri: string;
  dstVersion?: string;
  dstExperimentName?: string;
  copyStagesAndAliases?: boolean;
  copyLineageTags?: boolean;
}

export interface ModelVersionVerifyReport {
  srcModel: string;
  srcVersion: string;
  dstModel: string;
  dstVersion: string;
  run?: VerifyReport;
  differences: string[];
}

export function copyExperiment(request: CopyExperimentRequest, options?: Options): Promise<MigrationReport>;
export function copyModel(request: CopyModelRequest, options?: Options): Promise<MigrationReport>;
export function verifyRun(request: VerifyRunRequest, options?: Options): Promise<VerifyReport>;
export function verifyExperiment(request: VerifyExperimentRequest, options?: Options): Promise<ExperimentVerifyReport>;
export function verifyModelVersion(request: VerifyModelVersionRequest, options?: Options): Promise<ModelVersionVerifyReport>;
export function passedToGuest(name: string): boolean;
export function findWasm(wasm?: string): string | undefined;
export const GUEST_ENV_EXACT: string[];
export const GUEST_ENV_PREFIXES: string[];

export class CopyError extends Error {
  readonly kind: 'bad_input' | 'not_found' | 'unauthorized' | 'conflict' | 'upstream' | 'copy_error';
}
export class BadInput extends CopyError {}
export class NotFound extends CopyError {}
export class Unauthorized extends CopyError {}
export class Conflict extends CopyError {}
export class Upstream extends CopyError {}

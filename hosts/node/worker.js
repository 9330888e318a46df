// One copy, in its own worker thread: the guest's calls block this thread, never the caller's
// event loop. The guest's environment is exactly workerData.env (the shim's _setEnv), which
// index.js has restricted to the credential variables.
import { parentPort, workerData } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';
import { _setEnv } from '@bytecodealliance/preview2-shim/cli';

const { module, fn, request, env } = workerData;
_setEnv(env);
try {
  const { copier } = await import(pathToFileURL(module).href);
  parentPort.postMessage({ ok: copier[fn](request) });
} catch (e) {
  // jco throws a `copy-error` result as an error whose payload is the variant ({tag, val}).
  if (e && e.payload && typeof e.payload.tag === 'string') parentPort.postMessage({ err: e.payload });
  else parentPort.postMessage({ crash: String((e && e.stack) || e) });
}

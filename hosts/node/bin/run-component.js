// Runs the component's command line (`wasi:cli/run`) with this process's arguments and
// environment; bin/mlflow-copy.js starts it and turns its outcome into an exit status.
import { pathToFileURL } from 'node:url';
import { _setArgs } from '@bytecodealliance/preview2-shim/cli';
import { transpiled } from '../component.js';

// Not 1 (the component's own failure): the component could not be run at all.
const HOST_FAILURE = 125;

_setArgs(['mlflow-copy', ...process.argv.slice(2)]);
let module;
try {
  module = await transpiled();
} catch (e) {
  console.error(`mlflow-copy: error: ${e.message}`);
  process.exit(HOST_FAILURE);
}
const { run } = await import(pathToFileURL(module).href);
try {
  run.run();
} catch (e) {
  // jco throws the `err` of run's result as an error carrying a payload: the component has
  // already said why on stderr. Anything else (a trap) is the host's to report.
  if (e && 'payload' in e) process.exit(1);
  console.error(`mlflow-copy: error: the component failed: ${(e && e.stack) || e}`);
  process.exit(HOST_FAILURE);
}

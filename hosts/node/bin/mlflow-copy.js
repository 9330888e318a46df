#!/usr/bin/env node
// `npx mlflow-copy copy-run …` / `copy-model-version …`: the component's own command line (its
// `wasi:cli/run` export), so the flags, `--help` and the JSON report on stdout are the
// component's, exactly as with `wasmtime run` and the Python package's console scripts.
//
// The component runs in a child Node.js process whose stderr passes through here: WASI 0.2 lets
// the guest exit only with success or failure, so the kind of a failure is read from the line the
// command line documents as its last on stderr, `mlflow-copy: error [KIND]: MESSAGE`, and becomes
// the exit status (the Python package's convention, `hosts/python/mlflow_copy/cli.py`).
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { guestEnv } from '../index.js';
import { exitCode, EXIT_FAILURE } from '../exit-codes.js';

// Enough for the error line (one line naming a server and an object).
const TAIL_BYTES = 64 * 1024;

const child = spawn(process.execPath, [fileURLToPath(new URL('./run-component.js', import.meta.url)),
  ...process.argv.slice(2)], {
  // The guest's environment: the credential and HTTP settings only (index.js passedToGuest).
  env: guestEnv(process.env),
  stdio: ['inherit', 'inherit', 'pipe'],
});
let tail = Buffer.alloc(0);
child.stderr.on('data', (chunk) => {
  process.stderr.write(chunk);
  tail = Buffer.concat([tail, chunk]);
  if (tail.length > TAIL_BYTES) tail = tail.subarray(tail.length - TAIL_BYTES);
});
child.on('error', (e) => {
  console.error(`mlflow-copy: error: ${e.message}`);
  process.exitCode = EXIT_FAILURE;
});
child.on('close', (code, signal) => {
  const lines = tail.toString('utf8').trimEnd().split('\n');
  process.exitCode = signal ? EXIT_FAILURE : exitCode(code === 0, code, lines[lines.length - 1] || '');
});

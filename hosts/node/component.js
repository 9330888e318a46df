// Finding mlflow_copy.wasm and transpiling it with jco (once per wasm content).
//
// The component is found at $MLFLOW_COPY_WASM when set, else at the explicit path given, else
// at the repository's release build (target/wasm32-wasip2/release/mlflow_copy.wasm, next to
// this package's checkout, or in the current directory or one of its parents). Its JavaScript
// translation goes to dist/<sha256 of the wasm>/ inside this package, so a rebuilt component
// is transpiled again and an unchanged one never is.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const RELEASE_BUILD = join('target', 'wasm32-wasip2', 'release', 'mlflow_copy.wasm');
export const DIST = join(here, 'dist');
const DEFAULT = join(DIST, 'default.json');

/** The wasm to use, or undefined when none is found. */
export function findWasm(wasm) {
  if (process.env.MLFLOW_COPY_WASM) return resolve(process.env.MLFLOW_COPY_WASM);
  if (wasm) return resolve(wasm);
  const candidates = [join(here, '..', '..', RELEASE_BUILD)];
  for (let d = process.cwd(); ; d = dirname(d)) {
    candidates.push(join(d, RELEASE_BUILD));
    if (dirname(d) === d) break;
  }
  return candidates.map((c) => resolve(c)).find((c) => existsSync(c) && statSync(c).isFile());
}

const hashes = new Map();

function sha256(path) {
  const { size, mtimeMs } = statSync(path);
  const key = `${path}\0${size}\0${mtimeMs}`;
  if (!hashes.has(key)) hashes.set(key, createHash('sha256').update(readFileSync(path)).digest('hex'));
  return hashes.get(key);
}

/**
 * The transpiled module (a file: path) for the wasm found by findWasm(wasm), transpiling it
 * first when this content was never transpiled. Without any wasm on disk, the translation made
 * by the last `npm run build` (dist/default.json) is used.
 */
export async function transpiled(wasm) {
  const path = findWasm(wasm);
  if (!path) {
    // Recorded relative to dist/, so that the translation `npm pack` carries works wherever
    // the package is installed.
    if (existsSync(DEFAULT)) return join(DIST, JSON.parse(readFileSync(DEFAULT, 'utf8')).module);
    throw new Error('mlflow_copy.wasm not found: set MLFLOW_COPY_WASM, pass { wasm: PATH }, or build it in the '
      + 'repository with `cargo build --target wasm32-wasip2 --release`');
  }
  if (!existsSync(path)) throw new Error(`mlflow_copy.wasm not found at ${path}`);
  const dir = join(DIST, sha256(path).slice(0, 32));
  const module = join(dir, 'mlflow_copy.js');
  if (!existsSync(module)) {
    const { transpile } = await importJco(path);
    const { files } = await transpile(readFileSync(path), { name: 'mlflow_copy', quiet: true });
    // Written aside and renamed, so a concurrent process never sees half a translation.
    const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
    for (const [name, bytes] of Object.entries(files)) {
      mkdirSync(dirname(join(tmp, name)), { recursive: true });
      writeFileSync(join(tmp, name), bytes);
    }
    try {
      renameSync(tmp, dir);
    } catch (e) {
      rmSync(tmp, { recursive: true, force: true });
      if (!existsSync(module)) throw e;
    }
  }
  return module;
}

// jco is needed only to transpile: an installed package (`npm pack`) carries its translation
// in dist/ and depends on preview2-shim alone.
async function importJco(wasm) {
  try {
    return await import('@bytecodealliance/jco');
  } catch {
    throw new Error(`transpiling ${wasm} needs @bytecodealliance/jco (npm install @bytecodealliance/jco); `
      + 'without MLFLOW_COPY_WASM the package uses the component it was packed with');
  }
}

/** Transpiles the wasm found by findWasm(wasm) and records it as the package's default. */
export async function build(wasm) {
  const source = findWasm(wasm);
  if (!source) {
    throw new Error('mlflow_copy.wasm not found: set MLFLOW_COPY_WASM, run `node build.js PATH`, or build it '
      + 'in the repository with `cargo build --target wasm32-wasip2 --release`');
  }
  const module = await transpiled(source);
  mkdirSync(DIST, { recursive: true });
  writeFileSync(DEFAULT, JSON.stringify({ wasm: source, module: relative(DIST, module) }, null, 2) + '\n');
  return { source, module };
}

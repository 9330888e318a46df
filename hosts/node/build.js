// `npm run build [-- PATH]`: transpiles mlflow_copy.wasm into dist/ with jco (`--clean`: empty
// dist/ first, as `npm pack` does, so the tarball carries one translation). The wasm:
// $MLFLOW_COPY_WASM, else PATH, else the repository's release build. `npm install` runs it as
// `prepare` with --if-found: no wasm yet is then not an error (a call transpiles it later).
import { rmSync } from 'node:fs';
import { build, findWasm, DIST } from './component.js';

const ifFound = process.argv.includes('--if-found');
const path = process.argv.slice(2).find((a) => !a.startsWith('--'));
// `npm pack` (prepack): dist/ then holds only this translation, the one the tarball carries.
if (process.argv.includes('--clean')) rmSync(DIST, { recursive: true, force: true });
if (ifFound && !findWasm(path)) {
  console.error('mlflow-copy: no mlflow_copy.wasm yet; it is transpiled on first use or by `npm run build`');
  process.exit(0);
}
try {
  const { source, module } = await build(path);
  console.error(`mlflow-copy: ${source} -> ${module}`);
} catch (e) {
  console.error(`mlflow-copy: ${e.message}`);
  process.exit(1);
}

// `npm run build [-- PATH]`: transpiles mlflow_copy.wasm into dist/ with jco. The wasm:
// $MLFLOW_COPY_WASM, else PATH, else the repository's release build. `npm install` runs it as
// `prepare` with --if-found: no wasm yet is then not an error (a call transpiles it later).
import { build, findWasm } from './component.js';

const ifFound = process.argv.includes('--if-found');
const path = process.argv.slice(2).find((a) => a !== '--if-found');
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

// `npm run build [-- PATH]` (also run by `npm install` as `prepare`): transpiles mlflow_copy.wasm
// into dist/ with jco. The wasm: $MLFLOW_COPY_WASM, else PATH, else the repository's release build.
import { build } from './component.js';

try {
  const { source, module } = await build(process.argv[2]);
  console.error(`mlflow-copy: ${source} -> ${module}`);
} catch (e) {
  console.error(`mlflow-copy: ${e.message}`);
  process.exit(1);
}

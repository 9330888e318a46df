// Exit statuses of `npx mlflow-copy`, the same as the Python package's console scripts: 2 is a
// usage error (as clap and click use it), then one per `copy-error` case of the WIT interface;
// 1 is anything else (the component not found, a crash).
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_CODES = { bad_input: 3, not_found: 4, unauthorized: 5, conflict: 6, upstream: 7 };

const ERROR_LINE = /^mlflow-copy: error \[([a-z_]+)\]: /;

/** The status for a finished command line: 0, the code of the error kind its last stderr line
 * names, a usage error when the component refused its arguments (it exits 1 with clap's message),
 * or the child's own status otherwise. */
export function exitCode(succeeded, childCode, lastStderrLine) {
  if (succeeded) return EXIT_OK;
  const match = ERROR_LINE.exec(lastStderrLine);
  if (match) return EXIT_CODES[match[1]] ?? EXIT_FAILURE;
  return childCode === 1 ? EXIT_USAGE : EXIT_FAILURE;
}

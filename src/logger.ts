/** Where ringreduce reports what it refuses or notices. Defaults to stderr. */
export interface Logger {
  warn(message: string): void;
  info(message: string): void;
}

export const stderrLogger: Logger = {
  warn: (m) => process.stderr.write(`ringreduce: warning: ${m}\n`),
  info: (m) => process.stderr.write(`ringreduce: ${m}\n`),
};

export const silentLogger: Logger = { warn: () => {}, info: () => {} };

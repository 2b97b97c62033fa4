import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Multi-process tests start real ranks; keep files in separate workers but bounded on 2 cores.
    pool: 'forks',
    maxWorkers: 2,
  },
});

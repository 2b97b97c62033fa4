import { grid } from './helpers/grid.js';
import { OPS } from './helpers/reference.js';

// World sizes 1..6 x counts {0, 1, 2, N-1, 7, 1000, 1_000_003} x every op, on in-process links.
grid('memory', [1, 2, 3, 4, 5, 6], { bigOps: OPS });

import { grid } from './helpers/grid.js';

// The same grid over real WebSockets on 127.0.0.1 (rendezvous, handshake, sockets), sizes 1..4.
grid('ws', [1, 2, 3, 4], { bigOps: ['sum', 'max'] });

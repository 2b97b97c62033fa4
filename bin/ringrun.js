#!/usr/bin/env node
// ringrun: starts N local ranks of a ringreduce job. The implementation is src/launcher/ (built to dist/).
import { main } from '../dist/launcher/cli.js';

main(process.argv.slice(2));

// Plots of benchmark results as SVG, drawn by Vega-Lite (rendered in Node, no browser, no canvas):
// busbw against message size, log axes, one line per library (or setting), one panel per N.
// Used by bench/compare.mjs --plot FILE; also `node bench/plot.mjs rows.json out.svg` for rows
// saved earlier ([{ series, n, bytes, busbwGBs }]).
import { readFileSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

/** An SVG (a string) of busbw vs size from `rows`: [{ series, n, bytes, busbwGBs }]. */
export async function busbwSvg(rows, { title = 'bus bandwidth', op = 'allreduce' } = {}) {
  const [vega, vegaLite] = await Promise.all([import('vega'), import('vega-lite')]);
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, subtitle: `${op}: busbw (nccl-tests' definition) against size, same run, same sizes` },
    data: { values: rows.filter((r) => r.busbwGBs > 0).map((r) => ({ ...r, N: `N=${r.n}` })) },
    facet: { column: { field: 'N', type: 'nominal', title: null } },
    spec: {
      width: 260,
      height: 200,
      mark: { type: 'line', point: true },
      encoding: {
        x: { field: 'bytes', type: 'quantitative', scale: { type: 'log', base: 2 }, title: 'size (bytes)', axis: { labelExpr: sizeLabel } },
        y: { field: 'busbwGBs', type: 'quantitative', scale: { type: 'log' }, title: 'busbw (GB/s)' },
        color: { field: 'series', type: 'nominal', title: null },
        tooltip: [{ field: 'series' }, { field: 'bytes' }, { field: 'busbwGBs', format: '.3f' }],
      },
    },
    config: { font: 'sans-serif', legend: { orient: 'bottom' } },
  };
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'none' });
  return view.toSVG();
}

/** Axis labels as 4 B, 64 KiB, 16 MiB (a Vega expression). */
const sizeLabel =
  "datum.value >= 1073741824 ? format(datum.value / 1073741824, '~g') + ' GiB' : datum.value >= 1048576 ? format(datum.value / 1048576, '~g') + ' MiB' : datum.value >= 1024 ? format(datum.value / 1024, '~g') + ' KiB' : format(datum.value, '~g') + ' B'";

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [input, output] = process.argv.slice(2);
  if (!input || !output) {
    console.error('Usage: node bench/plot.mjs ROWS.json OUT.svg   (rows: [{ series, n, bytes, busbwGBs }])');
    process.exit(2);
  }
  writeFileSync(output, await busbwSvg(JSON.parse(readFileSync(input, 'utf8'))));
  console.log(`# wrote ${output}`);
}

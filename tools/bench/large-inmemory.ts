/**
 * The CLI's export as it was before streaming, for the large-model bench to compare with (time, peak
 * memory, bytes): every weight compressed and held, then the data file's chunks and the .onnx
 * written. Usage: tsx large-inmemory.ts MODEL.onnx RECIPE.json OUT.onnx (external data beside OUT).
 */
import { readFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { parseModel } from '../../src/core/onnx/model.ts';
import { resolveRecipe } from '../../src/core/compress/recipe.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { modelSources } from '../../src/cli/files.ts';
import { writeFilesAtomically } from '../../src/cli/compress.ts';

const [source, recipePath, output] = process.argv.slice(2);
const sources = modelSources(source);
const model = parseModel(sources.main, sources.external);
const steps = resolveRecipe(JSON.parse(readFileSync(recipePath, 'utf8')));
const location = `${basename(output)}_data`;
const written = exportCompressed(model, compressModel(model, steps), { externalData: { location } });
writeFilesAtomically([
  { path: join(dirname(resolve(output)), location), chunks: written.externalData!.chunks },
  { path: output, chunks: [written.model] },
]);

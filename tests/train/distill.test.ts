/**
 * Distillation heals a real compressed model: stories260K pruned 2:4 by magnitude, trained for a few
 * steps on sequences its teacher (the original, in onnxruntime-node) generated, against that teacher's
 * soft labels. The KD loss on a fixed batch falls, held-out perplexity on ids.txt (never trained on)
 * falls, the 2:4 zeros stay, and the written file runs in onnxruntime exactly as the engine computes it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateCalibrationSequences } from '../../src/core/calibrate/generate.ts';
import { evaluatePerplexity } from '../../src/core/eval/perplexity.ts';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { parseIdsText } from '../../src/core/tokenizer.ts';
import { TrainGraph } from '../../src/core/train/graph.ts';
import {
  batchLoss,
  decoderValues,
  distill,
  sessionTeacher,
  trainableWeights,
  withWeights,
} from '../../src/core/train/distill.ts';
import { compressBytes } from '../helpers/compress.ts';
import { STORIES_DIR, STORIES_MODEL } from '../helpers/fixtures.ts';
import { ort } from '../helpers/ort.ts';

const heldOut = parseIdsText(readFileSync(join(STORIES_DIR, 'ids.txt'), 'utf8'));

async function perplexity(bytes: Uint8Array): Promise<number> {
  const session = await ort.InferenceSession.create(bytes);
  try {
    const model = parseModel(bytesSource('m.onnx', bytes));
    return (
      await evaluatePerplexity(session, ort.Tensor, summarizeInputs(model.graph), heldOut, {
        ctx: 64,
        stride: 32,
      })
    ).perplexity;
  } finally {
    await session.release();
  }
}

describe('knowledge distillation of stories260K pruned 2:4', () => {
  it('lowers the KD loss and held-out perplexity, keeps the sparsity, and exports what it trained', async () => {
    const teacherBytes = new Uint8Array(readFileSync(STORIES_MODEL));
    const teacherModel = parseModel(bytesSource('stories260K.onnx', teacherBytes));
    const pruned = compressBytes(teacherBytes, [{ method: 'prune', options: { pattern: '2:4' } }]).exported;
    const student = parseModel(bytesSource('pruned.onnx', pruned));

    const session = await ort.InferenceSession.create(teacherBytes);
    try {
      const inputs = summarizeInputs(teacherModel.graph);
      const generated = await generateCalibrationSequences(session, ort.Tensor, inputs, {
        count: 12,
        length: 48,
        seed: 5,
        bos: 1,
      });
      const train = generated.slice(0, 10);
      const probe = generated.slice(10);
      const teacher = sessionTeacher(session, ort.Tensor, inputs);
      const probeLogits = await teacher(probe);
      const kdOn = (model: typeof student) =>
        batchLoss(new TrainGraph(model, []), probe, probeLogits, {
          temperature: 2,
          alpha: 0.5,
          withGrad: false,
        });

      const result = await distill(student, teacher, train, {
        steps: 16,
        batch: 4,
        seq: 48,
        lr: 2e-3,
        seed: 1,
      });
      const written = withWeights(student, result.weights);
      const trained = parseModel(bytesSource('distilled.onnx', written));

      const before = kdOn(student);
      const after = kdOn(trained);
      expect(after.loss).toBeLessThan(before.loss * 0.8);
      expect(after.kl).toBeLessThan(before.kl);
      const pplBefore = await perplexity(pruned);
      const pplAfter = await perplexity(written);
      expect(pplAfter).toBeLessThan(pplBefore * 0.8);
      expect(result.history).toHaveLength(16);

      // every weight pruning zeroed is still zero; the rest moved
      for (const name of trainableWeights(student)) {
        const w0 = new TrainGraph(student, [name]).params.get(name)!;
        const w1 = result.weights.get(name)!;
        let zeros = 0;
        for (let i = 0; i < w0.length; i++)
          if (w0[i] === 0) {
            zeros++;
            expect(w1[i], `${name}[${i}]`).toBe(0);
          }
        if (/^l\d\.w/.test(name)) expect(zeros).toBe(w0.length / 2);
      }

      // the written file: onnxruntime computes what the engine computes with the trained weights
      const ids = heldOut[0].slice(0, 40);
      const mine = new TrainGraph(trained, []).forward(decoderValues(trained.graph, [ids]), {
        record: false,
      });
      const check = await ort.InferenceSession.create(written);
      try {
        const out = await check.run({
          input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]),
        });
        const ref = out.logits.data as Float32Array;
        const got = mine.values.get('logits')!.data;
        let max = 0;
        for (let i = 0; i < ref.length; i++) max = Math.max(max, Math.abs(ref[i] - got[i]));
        expect(max).toBeLessThan(1e-4);
      } finally {
        await check.release();
      }
    } finally {
      await session.release();
    }
  }, 300_000);
});

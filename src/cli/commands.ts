/**
 * What each command accepts. Kept apart from the commands themselves so that `--help` and argument
 * errors are answered without loading onnxruntime or the compression kernels.
 */
import type { CommandSpec, FlagSpec } from './args.ts';

const JSON_FLAG: FlagSpec = { type: 'boolean', help: 'print one JSON object instead of text' };
const HELP_FLAG: FlagSpec = { type: 'boolean', short: 'h', help: 'print this help and exit' };
const MODEL = {
  name: 'MODEL.onnx',
  help:
    'the ONNX model (external-data files beside it are read too), or a model folder in the Hugging Face / ' +
    'transformers.js layout: onnx/model.onnx, else onnx/decoder_model_merged.onnx, else its only .onnx',
};
const FILE_FLAG: FlagSpec = {
  type: 'string',
  value: 'NAME',
  help: 'with a model folder holding several .onnx files: the one to read (onnx/model_q4.onnx)',
};

export const INSPECT: CommandSpec = {
  name: 'inspect',
  summary: 'parameters, dtypes, operators and per-tensor statistics of a model',
  usage: ['inspect MODEL.onnx [--json]'],
  positionals: [MODEL],
  options: { file: FILE_FLAG, json: JSON_FLAG, help: HELP_FLAG },
};

export const PPL: CommandSpec = {
  name: 'ppl',
  summary: 'perplexity of a model on a text, with a strided sliding window',
  usage: [
    'ppl MODEL.onnx --text FILE --tokenizer DIR_OR_JSON [--ctx N] [--stride N] [--json]',
    'ppl MODEL.onnx --ids FILE [--ctx N] [--stride N] [--json]',
    'ppl COMPRESSED.onnx --base ORIGINAL.onnx (--text FILE --tokenizer DIR_OR_JSON | --ids FILE) [--json]',
  ],
  positionals: [MODEL],
  options: {
    text: { type: 'string', value: 'FILE', help: 'a UTF-8 text file to score (needs --tokenizer)' },
    tokenizer: {
      type: 'string',
      value: 'DIR_OR_JSON',
      help: "a Hugging Face tokenizer.json, or the folder holding one (the model's own folder, say)",
    },
    ids: {
      type: 'string',
      value: 'FILE',
      help: 'pre-tokenized ids instead: one sequence per line, or a JSON array of id arrays',
    },
    ctx: {
      type: 'string',
      value: 'N',
      help: "window length in tokens, 2 up to the model's context (default: config.json's context, else the position table's size, else 512)",
    },
    file: FILE_FLAG,
    stride: { type: 'string', value: 'N', help: 'tokens between windows, 1…ctx (default ctx/2)' },
    base: {
      type: 'string',
      value: 'ORIGINAL.onnx',
      help: 'also run the original on the same tokens: KL divergence, same top, RMS Δp, PPL ratio (± standard errors)',
    },
    json: JSON_FLAG,
    help: HELP_FLAG,
  },
};

export const COMPRESS: CommandSpec = {
  name: 'compress',
  summary: 'apply a recipe (or the shorthand flags) and write the compressed model',
  usage: [
    'compress MODEL.onnx --recipe RECIPE.json -o OUT.onnx [--external-data] [--json]',
    'compress MODEL.onnx --copy -o OUT.onnx        rewrite the model unchanged (byte-identical)',
    'compress MODEL.onnx [--prune S [--global] | --nm N:M]',
    '         [--int8 [--per-tensor] | --int4 [--block N] [--format F] | --kmeans K [--per-channel] [--dense] | --fp16]',
    '         [--asym] [--include PATTERNS] [--exclude PATTERNS] [--embeddings] [--lm-head]',
    '         -o OUT.onnx [--external-data] [--json]',
    'compress MODEL.onnx [--sparsegpt S|N:M | --wanda S|N:M] [--gptq [--int8 | --block N] [--asym] | --w8a8]',
    '         (--calib-generate N [--calib-seed S] [--calib-bos ID] | --calib-ids FILE | --calib-text FILE --tokenizer DIR_OR_JSON)',
    '         [--calib-len L] [--calib-samples N] -o OUT.onnx',
    'compress MODEL.onnx --llm-int8 [--outlier-threshold T] (--calib-… as above) -o OUT.onnx',
    'compress MODEL.onnx [--heads F] [--neurons F] [--blocks N] [--importance magnitude|activation|taylor]',
    '         [--structure-scope layer|global] [--multiple N] [any method above] -o OUT.onnx',
    'compress MODEL.onnx --awq [--gptq] [--block N] [--asym] [--format F] (--calib-… as above) -o OUT.onnx',
    'compress MODEL.onnx (--auto-bits B | --auto-kl K) [--candidates LIST] [--auto-ids F | --auto-text F --auto-tokenizer D]',
    '         [--auto-tokens N] [--sensitivity-cache FILE] [--save-recipe FILE] -o OUT.onnx [--json]',
  ],
  positionals: [MODEL],
  options: {
    output: { type: 'string', short: 'o', value: 'OUT.onnx', help: 'where to write the compressed model' },
    'auto-bits': {
      type: 'string',
      value: 'B',
      help: 'mixed precision: choose each tensor among --candidates by KL per byte, at most B bits/weight',
    },
    'auto-kl': {
      type: 'string',
      value: 'K',
      help: 'mixed precision: the fewest bytes whose summed per-tensor KL is at most K',
    },
    candidates: {
      type: 'string',
      value: 'LIST',
      help: 'with --auto-*: keep,fp16,int8,int4b16|32|64|128[a],kmeansK[c] (default keep,fp16,int8,int4b128,int4b64,int4b32,kmeans16,kmeans8,kmeans4)',
    },
    'auto-ids': { type: 'string', value: 'FILE', help: 'with --auto-*: token ids of the sensitivity slice' },
    'auto-text': { type: 'string', value: 'FILE', help: 'with --auto-*: text of the sensitivity slice' },
    'auto-tokenizer': { type: 'string', value: 'DIR_OR_JSON', help: 'with --auto-text: its tokenizer' },
    'auto-tokens': {
      type: 'string',
      value: 'N',
      help: 'with --auto-*: tokens of the slice (default 1024; without a text, sampled from BOS)',
    },
    'sensitivity-cache': {
      type: 'string',
      value: 'FILE',
      help: 'with --auto-*: JSON cache of measured KLs per (model, tensor, step, text) (default in the temp folder)',
    },
    'save-recipe': { type: 'string', value: 'FILE', help: 'with --auto-*: write the planned recipe here' },
    recipe: {
      type: 'string',
      value: 'FILE',
      help: 'a recipe JSON file (see `methods`); no shorthand flags with it',
    },
    prune: { type: 'string', value: 'S', help: 'magnitude pruning to sparsity S, 0…0.99' },
    global: { type: 'boolean', help: 'with --prune: one threshold for all selected tensors' },
    nm: { type: 'string', value: 'N:M', help: 'N:M structured pruning instead: 2:4 or 4:8' },
    int8: { type: 'boolean', help: 'int8 weights (per output channel)' },
    'per-tensor': { type: 'boolean', help: 'with --int8: one scale per tensor' },
    int4: { type: 'boolean', help: 'block-wise int4 weights' },
    block: { type: 'string', value: 'N', help: 'with --int4: block size, 16, 32, 64 or 128 (default 32)' },
    format: {
      type: 'string',
      value: 'F',
      help: 'with --int4: matmulnbits (default) or dequantize (opset 21)',
    },
    asym: { type: 'boolean', help: 'with --int8 or --int4: zero points (asymmetric)' },
    kmeans: { type: 'string', value: 'K', help: 'k-means weight sharing with K clusters, 2…256' },
    'per-channel': { type: 'boolean', help: 'with --kmeans: one codebook per output channel' },
    dense: { type: 'boolean', help: 'with --kmeans: export dense weights instead of a palette' },
    fp16: { type: 'boolean', help: 'float16 weights' },
    gptq: {
      type: 'boolean',
      help: 'GPTQ: int4 block-wise (--block, --asym, --format), or int8 per channel with --int8; needs calibration',
    },
    awq: {
      type: 'boolean',
      help: 'AWQ-style int4: activation-aware scales searched per layer (--block, --asym, --format; with --gptq, GPTQ rounding); needs calibration',
    },
    sparsegpt: {
      type: 'string',
      value: 'S|N:M',
      help: 'SparseGPT pruning to sparsity S (0…0.99) or N:M (2:4, 4:8); needs calibration',
    },
    wanda: {
      type: 'string',
      value: 'S|N:M',
      help: 'Wanda pruning (|weight| × activation norm) to sparsity S or N:M; needs calibration',
    },
    'llm-int8': {
      type: 'boolean',
      help: 'int8 per channel, weights of outlier input features (calibrated max |x| > T) kept float; needs calibration',
    },
    'outlier-threshold': {
      type: 'string',
      value: 'T',
      help: 'with --llm-int8: the activation magnitude above which a feature is an outlier (default 6)',
    },
    w8a8: {
      type: 'boolean',
      help: 'int8 weights per channel and int8 activations (static, calibrated QDQ); needs calibration',
    },
    'calib-generate': {
      type: 'string',
      value: 'N',
      help: 'calibrate on N sequences the model generates from BOS (seeded; for models without text)',
    },
    'calib-ids': {
      type: 'string',
      value: 'FILE',
      help: 'calibrate on pre-tokenized ids (one sequence per line), cut into --calib-len windows',
    },
    'calib-text': {
      type: 'string',
      value: 'FILE',
      help: 'calibrate on a UTF-8 text (needs --tokenizer), cut into --calib-len windows',
    },
    tokenizer: {
      type: 'string',
      value: 'DIR_OR_JSON',
      help: 'with --calib-text: a Hugging Face tokenizer.json, or the folder holding one',
    },
    'calib-len': {
      type: 'string',
      value: 'L',
      help: "tokens per calibration sequence, ≥ 2 (default 128, or the model's context if shorter)",
    },
    'calib-samples': {
      type: 'string',
      value: 'N',
      help: 'with --calib-ids / --calib-text: at most N windows (default 128)',
    },
    'calib-seed': {
      type: 'string',
      value: 'S',
      help: 'with --calib-generate: the sampling seed (default 0)',
    },
    'calib-bos': {
      type: 'string',
      value: 'ID',
      help: "with --calib-generate: the first token (default config.json's bos_token_id, else 1)",
    },
    heads: {
      type: 'string',
      value: 'F',
      help: 'structured pruning: remove this share of attention heads (0…<1; GQA: whole KV groups), before any method',
    },
    neurons: {
      type: 'string',
      value: 'F',
      help: 'structured pruning: remove this share of MLP neurons (0…<1)',
    },
    blocks: { type: 'string', value: 'N', help: 'structured pruning: remove the N least important blocks' },
    importance: {
      type: 'string',
      value: 'K',
      help: 'with --heads/--neurons/--blocks: magnitude (default, data-free), activation or taylor (gradients; both need --calib-…)',
    },
    'structure-scope': {
      type: 'string',
      value: 'S',
      help: 'with --heads/--neurons: layer (default: each block loses the same share) or global (one ranking)',
    },
    multiple: {
      type: 'string',
      value: 'N',
      help: 'with --neurons: round the neurons each block keeps to a multiple of N (default 1)',
    },
    include: {
      type: 'string',
      value: 'PATTERNS',
      help: 'only tensors matching these (comma-separated globs or /regex/)',
    },
    exclude: { type: 'string', value: 'PATTERNS', help: 'not the tensors matching these' },
    embeddings: { type: 'boolean', help: 'also compress embedding tables' },
    'lm-head': { type: 'boolean', help: 'also compress the output projection' },
    'external-data': { type: 'boolean', help: 'write the weights to OUT.onnx_data beside the model' },
    workers: {
      type: 'string',
      value: 'N',
      help: 'kernel worker threads (default: one per core; 1 runs every kernel in this thread)',
    },
    copy: { type: 'boolean', help: 'no method: rewrite the model as it is (a round trip)' },
    file: FILE_FLAG,
    json: JSON_FLAG,
    help: HELP_FLAG,
  },
  notes: [
    'The shorthands give at most one pruning step followed by one storage format; a --recipe chains more.',
    'GPTQ, AWQ, SparseGPT, Wanda, LLM.int8 and W8A8 read activations: give calibration data (--calib-generate, --calib-ids or ' +
      '--calib-text with --tokenizer), also with a --recipe whose "calibration" names ids or text. ' +
      'Calibration progress goes to stderr.',
    'Structured pruning (--heads, --neurons, --blocks) removes whole heads, neurons and blocks: the model gets smaller ' +
      'and faster, then any method flag compresses the smaller weights (--heads 0.25 --int4).',
  ],
};

export const DISTILL: CommandSpec = {
  name: 'distill',
  summary: "train a compressed student on its teacher's soft labels (knowledge distillation)",
  usage: [
    'distill TEACHER.onnx STUDENT.onnx -o OUT.onnx [--steps N] [--batch B] [--seq L] [--lr X]',
    '        [--temperature T] [--alpha A] [--schedule cosine|linear|constant] [--warmup N] [--train WHICH]',
    '        (--train-text FILE --tokenizer DIR_OR_JSON | --train-ids FILE | --train-generate N [--train-bos ID])',
    '        [--eval-text FILE | --eval-ids FILE] [--seed S] [--json]',
    '        [--qat int4 [--block N] [--asym] | --qat int8 [--asym] | --qat kmeans [--k K] [--refit-every N]]',
    '        [--learn-scales [--scale-lr F]]',
  ],
  positionals: [
    { name: 'TEACHER.onnx', help: 'the original model, whose logits the student learns' },
    { name: 'STUDENT.onnx', help: 'the compressed (pruned, float) model to train; same vocabulary' },
  ],
  options: {
    output: { type: 'string', short: 'o', value: 'OUT.onnx', help: 'where to write the trained student' },
    steps: { type: 'string', value: 'N', help: 'optimizer steps (default 100)' },
    batch: { type: 'string', value: 'B', help: 'sequences per step (default 8)' },
    seq: {
      type: 'string',
      value: 'L',
      help: "tokens per sequence, ≥ 2 (default 128, or the model's context if shorter)",
    },
    lr: { type: 'string', value: 'X', help: 'peak learning rate of AdamW (default 1e-3)' },
    temperature: { type: 'string', value: 'T', help: 'softmax temperature of the soft labels (default 2)' },
    alpha: {
      type: 'string',
      value: 'A',
      help: 'weight of the distillation term; 1 − A weighs the next-token loss (default 0.5)',
    },
    schedule: {
      type: 'string',
      value: 'S',
      help: 'learning-rate decay after warm-up: cosine (default), linear or constant',
    },
    warmup: { type: 'string', value: 'N', help: 'linear warm-up steps (default min(20, steps/10))' },
    'weight-decay': {
      type: 'string',
      value: 'W',
      help: "AdamW's decoupled weight decay on matrices (default 0.01)",
    },
    beta2: {
      type: 'string',
      value: 'B',
      help: "AdamW's second-moment decay (default 0.999; llama2.c uses 0.95)",
    },
    'grad-clip': {
      type: 'string',
      value: 'N',
      help: 'clip the gradients to this global L2 norm before each update (default: no clipping)',
    },
    train: {
      type: 'string',
      value: 'WHICH',
      help: 'which weights train: all (default), no-embeddings, or norms-biases',
    },
    'train-text': { type: 'string', value: 'FILE', help: 'train on a UTF-8 text (needs --tokenizer)' },
    tokenizer: {
      type: 'string',
      value: 'DIR_OR_JSON',
      help: 'with --train-text / --eval-text: a Hugging Face tokenizer.json, or the folder holding one',
    },
    'train-ids': { type: 'string', value: 'FILE', help: 'train on pre-tokenized ids, one sequence per line' },
    'train-generate': {
      type: 'string',
      value: 'N',
      help: 'train on N sequences the teacher samples from BOS (for models without text)',
    },
    'train-bos': {
      type: 'string',
      value: 'ID',
      help: "with --train-generate: the first token (default config.json's bos_token_id, else 1)",
    },
    'eval-text': {
      type: 'string',
      value: 'FILE',
      help: 'held-out text for perplexity before and after (default: the last tenth of the training data)',
    },
    'eval-ids': { type: 'string', value: 'FILE', help: 'held-out pre-tokenized ids instead' },
    seed: {
      type: 'string',
      value: 'S',
      help: 'seeds the training windows and generated sequences (default 0)',
    },
    qat: {
      type: 'string',
      value: 'METHOD',
      help: 'quantization-aware training: int4, int8 or kmeans; writes the quantized model',
    },
    block: {
      type: 'string',
      value: 'N',
      help: 'with --qat int4: block size, 16, 32, 64 or 128 (default 32)',
    },
    asym: { type: 'boolean', help: 'with --qat int4 or int8: zero points (asymmetric)' },
    k: { type: 'string', value: 'K', help: 'with --qat kmeans: clusters, 2…256 (default 16)' },
    'refit-every': {
      type: 'string',
      value: 'N',
      help: 'with --qat kmeans: re-fit the codebook every N steps (default 0: the codebook stays fixed)',
    },
    'learn-scales': {
      type: 'boolean',
      help: 'with --qat int4 or int8: the scales train too (LSQ, learned step sizes); the output stores them',
    },
    'scale-lr': {
      type: 'string',
      value: 'F',
      help: "with --learn-scales: the scales' learning rate as a multiple of --lr (default 1, as LSQ)",
    },
    json: JSON_FLAG,
    help: HELP_FLAG,
  },
  notes: [
    'The loss is A·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − A)·cross-entropy of the next token. ' +
      'Weights that a pruning step zeroed stay zero. A student stored quantized (MatMulNBits, DequantizeLinear, ' +
      'k-means palettes) is refused: distil the float pruned model, then quantize the result. ' +
      'Progress goes to stderr; the held-out text is never trained on.',
    'With --qat the forward pass reads every linear weight as the method stores it (fake quantization, ' +
      'straight-through gradient; k-means keeps its codebook, or re-fits it every --refit-every steps) and the output is the ' +
      "quantized file (MatMulNBits, DequantizeLinear, palette) of the trained weights; 'before' is the same " +
      "quantization without training. With --learn-scales the int4 / int8 scales start from the step's own " +
      'and train by the LSQ gradient (Esser et al. 2020; zero points stay), in their own AdamW group ' +
      '(no weight decay), and the output stores the learned scales with the levels the last forward pass read.',
  ],
};

export const METHODS_SPEC: CommandSpec = {
  name: 'methods',
  summary: 'every compression method, its options and their defaults',
  usage: ['methods [--json]'],
  positionals: [],
  options: { json: JSON_FLAG, help: HELP_FLAG },
};

export const COMMAND_SPECS: readonly CommandSpec[] = [INSPECT, PPL, COMPRESS, DISTILL, METHODS_SPEC];

// Turns the vendored onnx.proto into the JSON descriptor protobufjs/light loads at run time
// (so no .proto parser ships to the browser). Run after updating onnx.proto.
import { readFileSync, writeFileSync } from 'node:fs';
import protobuf from 'protobufjs';

const dir = new URL('../src/core/onnx/', import.meta.url);
const root = protobuf.parse(readFileSync(new URL('onnx.proto', dir), 'utf8'), { keepCase: true }).root;
writeFileSync(new URL('onnx-schema.json', dir), JSON.stringify(root.toJSON()));

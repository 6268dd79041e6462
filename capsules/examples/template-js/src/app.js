// A HyperMesh capsule in JavaScript, built into a WebAssembly component by
// jco / componentize-js:
//   npm install @bytecodealliance/jco@1.15.4 @bytecodealliance/componentize-js@0.18.5
//   hypermesh capsule build DIR
// Imports follow manifest.json `capabilities.requires`.
import { log } from "hypermesh:capsule/log@0.1.0";

export function handle(input) {
  log("info", `handling ${input.length} bytes`);
  return input;
}

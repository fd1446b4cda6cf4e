// Reproducible production build: one ES module (the components v2 entry) in ../build/viewer.js.
import { build } from 'esbuild';

// vtk.js's XML readers (never used by a 2-D stack viewport) import Node's `url` and `events`; resolve them
// to an empty module instead of shipping polyfills.
const STUBS = {
  events: 'class EventEmitter { on() { return this; } once() { return this; } off() { return this; } '
    + 'removeListener() { return this; } emit() { return false; } }\n'
    + 'module.exports = EventEmitter; module.exports.EventEmitter = EventEmitter;',
  url: 'module.exports = { URL: globalThis.URL, URLSearchParams: globalThis.URLSearchParams };',
};
// vtk.js's XML writer and the YAML reader are imported at module level but never called by a 2-D viewer of
// in-memory pixels: replaced by a stand-in whose every property and call result is itself (about 300 kB less).
// dcmjs stays: Cornerstone's metadata rules need its DICOM dictionary when they load.
const UNUSED = /^(xmlbuilder2|js-yaml)$/;
const UNUSED_STUB = `const handler = { get: (t, p) => (p === Symbol.toPrimitive ? () => '' : stub),
  apply: () => stub,
  construct: () => { throw new Error('not part of the viewer bundle'); } };
const stub = new Proxy(function unused() {}, handler);
export default stub;
export const create = stub, load = stub, dump = stub;`;
const unusedStub = {
  name: 'unused-packages-stub',
  setup(b) {
    b.onResolve({ filter: UNUSED }, (args) => ({ path: args.path, namespace: 'unused' }));
    b.onLoad({ filter: /.*/, namespace: 'unused' }, () => ({ contents: UNUSED_STUB, loader: 'js' }));
  },
};
const nodeBuiltinsStub = {
  name: 'node-builtins-stub',
  setup(b) {
    b.onResolve({ filter: /^(url|events|fs|path|crypto)$/ }, (args) => ({ path: args.path, namespace: 'stub' }));
    b.onLoad({ filter: /.*/, namespace: 'stub' }, (args) => ({ contents: STUBS[args.path] || 'module.exports = {};', loader: 'js' }));
  },
};

await build({
  entryPoints: ['src/index.js'],
  outfile: '../build/viewer.js',
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['chrome110', 'firefox110', 'safari16'],
  minify: true,
  legalComments: 'eof',
  sourcemap: false,
  logLevel: 'info',
  plugins: [unusedStub, nodeBuiltinsStub],
  define: { 'process.env.NODE_ENV': '"production"' },
});

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
  plugins: [nodeBuiltinsStub],
  define: { 'process.env.NODE_ENV': '"production"' },
});

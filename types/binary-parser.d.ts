// binary-parser ships its types beside the CJS build only; NodeNext resolution needs this one-line bridge.
declare module 'binary-parser' { export * from 'binary-parser/dist/binary_parser.js'; }

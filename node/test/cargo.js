'use strict';
// Build a Rust example of this workspace with cargo and return the path of
// its executable (for the interop tests and the benchmark).
const { execFileSync } = require('node:child_process');

function buildExample(name, pkg = 'shmport-node') {
  const out = execFileSync('cargo', ['build', '-p', pkg, '--release', '--example', name,
    '--message-format=json-render-diagnostics'], { cwd: __dirname, stdio: ['ignore', 'pipe', 'inherit'] });
  for (const line of out.toString().split('\n')) {
    if (!line.startsWith('{')) continue;
    const m = JSON.parse(line);
    if (m.reason === 'compiler-artifact' && m.target.name === name && m.executable) return m.executable;
  }
  throw new Error(`cargo built no ${name} executable`);
}

module.exports = { buildExample };

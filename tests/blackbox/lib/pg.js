'use strict';
// A throwaway PostgreSQL for black-box tests (tests/pg/pg-test.sh): one
// server per test process, started on first use and stopped by pid when
// the process exits; a fresh database per daemon.
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const SCRIPT = path.resolve(__dirname, '../../pg/pg-test.sh');
let server = null; // { dir, url }
let dbs = 0;

function run(args) {
  return execFileSync(SCRIPT, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

function pgServer() {
  if (server) return server;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kb-pg-'));
  const url = run(['start', dir]);
  server = { dir, url };
  process.on('exit', () => {
    try {
      run(['stop', dir]);
    } catch {
      /* the exit goes on */
    }
  });
  return server;
}

// psql against database `db` (default the server's own).
function psql(sql, db = 'postgres') {
  const s = pgServer();
  const url = s.url.replace(/\/[^/]*$/, `/${db}`);
  return execFileSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-qAtc', sql], { encoding: 'utf8' }).trim();
}

// A new empty database; returns its postgres:// URL.
function freshDb() {
  const s = pgServer();
  const name = `kb_${process.pid}_${dbs++}`;
  psql(`CREATE DATABASE ${name}`);
  return { name, url: s.url.replace(/\/[^/]*$/, `/${name}`) };
}

// Stops the server (keeping its data) and starts it again on its port.
// mode 'immediate' stops it as a crash would (recovery at the start).
function pausePg(mode = 'fast') {
  run(['pause', pgServer().dir, mode]);
}
function resumePg() {
  run(['resume', pgServer().dir]);
}

module.exports = { pgServer, psql, freshDb, pausePg, resumePg };

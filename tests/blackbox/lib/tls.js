'use strict';
// lib/tls.js - throwaway certificates and HTTPS helpers for the TLS tests.
//
// makePki(dir) runs the `openssl` CLI to make a test CA and server
// certificates it signs, each naming 127.0.0.1 and localhost, with fixed
// serial numbers a test can recognise on the wire. Nothing is committed:
// every run makes its own, in its own temp dir.

const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const https = require('node:https');
const path = require('node:path');

const OPENSSL = process.env.OPENSSL || 'openssl';

function openssl(args, cwd) {
  execFileSync(OPENSSL, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
}

// { dir, ca, server(serialHex) -> { cert, key, serial } } with files in dir.
function makePki(dir) {
  openssl(
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Keybrake Test CA'],
    dir,
  );
  fs.writeFileSync(
    path.join(dir, 'server.ext'),
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' +
      'keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n',
  );
  const server = (serial) => {
    const base = `server-${serial}`;
    openssl(
      ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', '/CN=localhost'],
      dir,
    );
    openssl(
      ['x509', '-req', '-in', `${base}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key',
        '-set_serial', `0x${serial}`, '-days', '2', '-extfile', 'server.ext', '-out', `${base}.pem`],
      dir,
    );
    return { cert: path.join(dir, `${base}.pem`), key: path.join(dir, `${base}.key`), serial };
  };
  return { dir, ca: path.join(dir, 'ca.pem'), caPem: fs.readFileSync(path.join(dir, 'ca.pem')), server };
}

// One HTTPS request: { status, headers, text, json, serial, protocol, alpn, reused }.
// opts: port, method, path, headers, body, ca (PEM), agent (default: none).
function httpsRequest({ port, method = 'GET', path: p = '/', headers = {}, body, ca, agent = false,
  servername }) {
  return new Promise((resolve, reject) => {
    const h = { ...headers };
    const buf = body === undefined ? undefined : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    if (buf) {
      h['content-length'] = String(buf.length);
      if (!h['content-type']) h['content-type'] = 'application/json';
    }
    const req = https.request(
      { host: '127.0.0.1', port, method, path: p, headers: h, ca, agent, servername, ALPNProtocols: ['http/1.1'] },
      (res) => {
        const sock = res.socket;
        const peer = sock.getPeerCertificate();
        const info = {
          serial: peer && peer.serialNumber ? peer.serialNumber.toUpperCase() : null,
          protocol: sock.getProtocol(),
          alpn: sock.alpnProtocol,
          reused: req.reusedSocket,
          localPort: sock.localPort,
        };
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json;
          try {
            json = text ? JSON.parse(text) : undefined;
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode, headers: res.headers, text, json, ...info });
        });
      },
    );
    req.setTimeout(30_000, () => req.destroy(new Error('https request timed out')));
    req.on('error', reject);
    if (buf) req.write(buf);
    req.end();
  });
}

// Runs a command to its exit under a deadline: { code, signal, stdout, stderr }.
function run(cmd, args, { env, cwd, timeoutMs = 60_000, input } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (c) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c) => (stderr += c));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    if (input !== undefined) child.stdin.end(input);
    else child.stdin.end();
  });
}

module.exports = { makePki, httpsRequest, run };

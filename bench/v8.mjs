// The time one cached request costs the filter in V8, Envoy's Wasm engine: each build of
// oidc.wasm runs in Node behind a minimal proxy-wasm host (the one of bench/instructions.py,
// in JavaScript), and requests are timed in rounds that alternate the builds, after a
// warm-up long enough for V8 to tier up. The host's own JavaScript is in the time, the
// same for every build. Run by bench/bench.py:
//
//     node bench/v8.mjs FIXTURES.json SCENARIO a.wasm [b.wasm ...]
//
// FIXTURES.json: bench/instructions.py --fixtures (configuration, IdP documents, credentials).
// Prints one JSON line per build: {"wasm", "median_us", "min_us", "max_us"}.
import fs from 'node:fs';
import { WASI } from 'node:wasi';

const [fixtures, scenario, ...paths] = process.argv.slice(2);
const J = JSON.parse(fs.readFileSync(fixtures, 'utf8'));
const enc = new TextEncoder(), dec = new TextDecoder();

function pairsEncode(pairs) {
  let size = 4 + 8 * pairs.length;
  for (const [k, v] of pairs) size += k.length + v.length + 2;
  const b = new Uint8Array(size), dv = new DataView(b.buffer);
  dv.setUint32(0, pairs.length, true);
  let off = 4;
  for (const [k, v] of pairs) { dv.setUint32(off, k.length, true); dv.setUint32(off + 4, v.length, true); off += 8; }
  for (const [k, v] of pairs) { b.set(k, off); off += k.length + 1; b.set(v, off); off += v.length + 1; }
  return b;
}
function pairsDecode(b) {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const n = dv.getUint32(0, true); const lens = [];
  for (let i = 0; i < n; i++) lens.push([dv.getUint32(4 + 8 * i, true), dv.getUint32(8 + 8 * i, true)]);
  let off = 4 + 8 * n; const out = [];
  for (const [kl, vl] of lens) { out.push([b.slice(off, off + kl), b.slice(off + kl + 1, off + kl + 1 + vl)]); off += kl + vl + 2; }
  return out;
}
const eq = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

async function host(path, scenario) {
  const cfg = enc.encode(J.configs[scenario]);
  const st = { maps: { 0: [], 2: [], 6: [] }, body: new Uint8Array(), pending: [], next: 1, shared: new Map(), reply: null, logs: [] };
  let inst, mem;
  const u8 = () => new Uint8Array(mem.buffer);
  const dv = () => new DataView(mem.buffer);
  const read = (p, n) => u8().slice(p, p + n);
  const give = (data, pp, sp) => {
    const ptr = data.length ? inst.exports.proxy_on_memory_allocate(data.length) : 0;
    if (data.length) u8().set(data, ptr);
    dv().setUint32(pp, ptr, true); dv().setUint32(sp, data.length, true); return 0;
  };
  const env = {
    proxy_log: (_level, p, n) => { st.logs.push(dec.decode(read(p, n))); return 0; },
    proxy_get_current_time_nanoseconds: (p) => { dv().setBigUint64(p, BigInt(Date.now()) * 1000000n, true); return 0; },
    proxy_get_buffer_bytes: (kind, start, size, pp, sp) => {
      size = size >>> 0;
      const d = kind === 7 ? cfg : kind === 4 ? st.body : null;
      return d ? give(d.slice(start, start + size), pp, sp) : 1;
    },
    proxy_get_header_map_pairs: (m, pp, sp) => give(pairsEncode(st.maps[m] || []), pp, sp),
    proxy_get_header_map_value: (m, kp, kn, pp, sp) => {
      const k = read(kp, kn); const f = (st.maps[m] || []).find(([hk]) => eq(hk, k));
      return f ? give(f[1], pp, sp) : 1;
    },
    proxy_replace_header_map_value: (m, kp, kn, vp, vn) => { const k = read(kp, kn); st.maps[m] = (st.maps[m] || []).filter(([hk]) => !eq(hk, k)); st.maps[m].push([k, read(vp, vn)]); return 0; },
    proxy_add_header_map_value: (m, kp, kn, vp, vn) => { (st.maps[m] ||= []).push([read(kp, kn), read(vp, vn)]); return 0; },
    proxy_remove_header_map_value: (m, kp, kn) => { const k = read(kp, kn); st.maps[m] = (st.maps[m] || []).filter(([hk]) => !eq(hk, k)); return 0; },
    proxy_send_local_response: (status) => { st.reply = status; return 0; },
    proxy_http_call: (up, upn, hp, hn, bp, bn, tp, tn, timeout, tokp) => {
      const h = pairsDecode(read(hp, hn)); const path = dec.decode(h.find(([k]) => dec.decode(k) === ':path')[1]);
      const t = st.next++; st.pending.push([t, path]); dv().setUint32(tokp, t, true); return 0;
    },
    proxy_get_shared_data: (kp, kn, pp, sp, cp) => {
      const k = dec.decode(read(kp, kn)); const f = st.shared.get(k); if (!f) return 1;
      give(f[0], pp, sp); dv().setUint32(cp, f[1], true); return 0;
    },
    proxy_set_shared_data: (kp, kn, vp, vn, cas) => {
      const k = dec.decode(read(kp, kn)); const cur = st.shared.get(k);
      if (cas && cur && cur[1] !== cas) return 8; st.shared.set(k, [read(vp, vn), cur ? cur[1] + 1 : 1]); return 0;
    },
    proxy_get_property: () => 1,
    proxy_define_metric: (k, np, nn, idp) => { dv().setUint32(idp, 1, true); return 0; },
  };
  const mod = await WebAssembly.compile(fs.readFileSync(path));
  const imports = { env: {} };
  for (const i of WebAssembly.Module.imports(mod)) if (i.module === 'env') imports.env[i.name] = env[i.name] || (() => 0);
  const wasi = new WASI({ version: 'preview1' });
  imports.wasi_snapshot_preview1 = wasi.wasiImport;
  inst = await WebAssembly.instantiate(mod, imports);
  mem = inst.exports.memory;
  const x = inst.exports;
  wasi.initialize(inst);
  const body = (p) => enc.encode(JSON.stringify(p.includes('well-known') ? J.disc : p.endsWith('/jwks') ? J.jwks : p.includes('introspection') ? J.introspection : J.tokenresp));
  const serve = (ctx) => {
    while (st.pending.length) {
      const [t, p] = st.pending.shift(); st.body = body(p);
      st.maps[6] = [[enc.encode(':status'), enc.encode('200')]];
      x.proxy_on_http_call_response(ctx, t, 1, st.body.length, 0);
    }
  };
  x.proxy_on_context_create(1, 0); x.proxy_on_vm_start(1, 0);
  if (x.proxy_on_configure(1, cfg.length) !== 1) throw new Error('configure: ' + st.logs.slice(-3));
  for (let i = 0; i < 2; i++) { x.proxy_on_tick(1); serve(1); }
  const hdrs = [[':method', 'GET'], [':path', '/api/things?x=1'], [':authority', 'gw.example'], [':scheme', 'https'],
    ['user-agent', 'wrk'], ['accept', '*/*'], ['authorization', J.auth[scenario]], ['x-forwarded-proto', 'https'],
    ['x-request-id', '5d3c1c1e-1b1a-4a4e-9b1e-3c2b1a0f9e8d']].map(([k, v]) => [enc.encode(k), enc.encode(v)]);
  let ctx = 2;
  return (n) => {
    for (let i = 0; i < n; i++) {
      const c = ctx++;
      st.maps[0] = hdrs.slice(); st.maps[2] = [[enc.encode(':status'), enc.encode('200')]]; st.reply = null;
      x.proxy_on_context_create(c, 1);
      x.proxy_on_request_headers(c, hdrs.length, 1);
      serve(c);
      if (st.reply !== null) throw new Error('replied ' + st.reply + ' ' + st.logs.slice(-3));
      x.proxy_on_response_headers(c, 1, 1); x.proxy_on_log(c); x.proxy_on_done(c); x.proxy_on_delete(c);
    }
  };
}

const runs = await Promise.all(paths.map((p) => host(p, scenario)));
runs.forEach((r) => r(20000)); // warm-up, tier-up
const times = paths.map(() => []);
for (let round = 0; round < 6; round++) {
  runs.forEach((r, i) => { const t = process.hrtime.bigint(); r(20000); times[i].push(Number(process.hrtime.bigint() - t) / 20000 / 1000); });
}
paths.forEach((p, i) => {
  const v = times[i].sort((a, b) => a - b);
  console.log(JSON.stringify({ wasm: p, median_us: (v[2] + v[3]) / 2, min_us: v[0], max_us: v[5] }));
});

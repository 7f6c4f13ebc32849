// Validates the Kubernetes manifests in envoy/ (Istio WasmPlugin, Envoy Gateway
// EnvoyExtensionPolicy, and what goes with them) against the CRD schemas, and the plugin
// configuration inside them with the filter's own parser.
//
//   node tests/k8s/validate.mjs [--tool target/debug/oidc-envoy-config] FILE.yaml...
//
// The schemas: npm's @kubernetes-models/{istio,envoy-gateway} and kubernetes-models ship the
// CRDs' (and Kubernetes') openAPIV3Schema compiled to JSON Schema validators (ajv). A
// Kubernetes structural schema accepts unknown fields (the API server prunes them, and
// `kubectl apply` refuses them), so on top of the schema every object is checked for fields
// the schema does not know: the validator is run on proxies that record which properties it
// reads, and a present field it never read is unknown. Objects whose schema is free-form
// (x-kubernetes-preserve-unknown-fields, like pluginConfig) are read by nothing and skipped.
//
// Ends with "N passed, M failed"; exits 1 on any failure.

import { readFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import YAML from "yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
const modules = path.join(here, "node_modules");

// apiVersion/kind -> compiled schema (a file of the packages, imported by path: the
// packages' "exports" do not list their _schemas).
const SCHEMAS = {
  "extensions.istio.io/v1alpha1/WasmPlugin": "@kubernetes-models/istio/_schemas/ExtensionsIstioIoV1alpha1WasmPlugin.js",
  "networking.istio.io/v1/ServiceEntry": "@kubernetes-models/istio/_schemas/NetworkingIstioIoV1ServiceEntry.js",
  "networking.istio.io/v1/DestinationRule": "@kubernetes-models/istio/_schemas/NetworkingIstioIoV1DestinationRule.js",
  "gateway.envoyproxy.io/v1alpha1/EnvoyExtensionPolicy":
    "@kubernetes-models/envoy-gateway/_schemas/ComGithubEnvoyproxyGatewayApiV1alpha1EnvoyExtensionPolicy.js",
  "gateway.envoyproxy.io/v1alpha1/EnvoyPatchPolicy":
    "@kubernetes-models/envoy-gateway/_schemas/ComGithubEnvoyproxyGatewayApiV1alpha1EnvoyPatchPolicy.js",
  "gateway.envoyproxy.io/v1alpha1/EnvoyProxy":
    "@kubernetes-models/envoy-gateway/_schemas/ComGithubEnvoyproxyGatewayApiV1alpha1EnvoyProxy.js",
  "v1/ConfigMap": "kubernetes-models/_schemas/IoK8sApiCoreV1ConfigMap.js",
  "v1/Secret": "kubernetes-models/_schemas/IoK8sApiCoreV1Secret.js",
};

async function validator(doc) {
  const file = SCHEMAS[`${doc.apiVersion}/${doc.kind}`];
  if (!file) return null;
  const mod = await import(pathToFileURL(path.join(modules, file)).href);
  return mod.validate;
}

// Wraps `value` so that every property the validator reads (or tests with `in`) is recorded.
function recorder(value, at, seen) {
  if (value === null || typeof value !== "object") return value;
  const reads = new Set();
  seen.push({ at, value, reads });
  const inner = Array.isArray(value)
    ? value.map((v, i) => recorder(v, `${at}/${i}`, seen))
    : Object.fromEntries(Object.entries(value).map(([k, v]) => [k, recorder(v, `${at}/${k}`, seen)]));
  return new Proxy(inner, {
    get(target, key, receiver) {
      if (typeof key === "string") reads.add(key);
      return Reflect.get(target, key, receiver);
    },
    has(target, key) {
      if (typeof key === "string") reads.add(key);
      return Reflect.has(target, key);
    },
  });
}

function unknownFields(seen) {
  const out = [];
  for (const { at, value, reads } of seen) {
    if (Array.isArray(value) || reads.size === 0) continue; // a list, or a free-form object
    for (const key of Object.keys(value)) {
      if (!reads.has(key)) out.push(`${at}/${key}`);
    }
  }
  return out;
}

// The filter's own check of a plugin configuration (oidc-envoy-config --check).
function checkPlugin(tool, config) {
  const r = spawnSync(tool, ["-", "--check"], { input: JSON.stringify(config), encoding: "utf8" });
  if (r.error) throw new Error(`${tool}: ${r.error.message} (cargo build --locked -p oidc-envoy-config)`);
  if (r.status !== 0) return { error: (r.stderr || "").trim() };
  return { summary: JSON.parse(r.stdout) };
}

// Cross-checks: the plugin names the clusters the manifests create.
function clusterNames(docs) {
  const names = new Set();
  for (const d of docs) {
    if (d.kind === "ServiceEntry") {
      const dr = docs.filter((x) => x.kind === "DestinationRule");
      for (const host of d.spec.hosts ?? []) {
        for (const port of d.spec.ports ?? []) {
          names.add(`outbound|${port.number}||${host}`);
          for (const r of dr.filter((x) => x.spec.host === host)) {
            for (const s of r.spec.subsets ?? []) names.add(`outbound|${port.number}|${s.name}|${host}`);
          }
        }
      }
    }
    if (d.kind === "EnvoyPatchPolicy") {
      for (const p of d.spec.jsonPatches ?? []) {
        if (p.type === "type.googleapis.com/envoy.config.cluster.v3.Cluster" && p.operation?.op === "add") {
          names.add(p.operation.value?.name ?? p.name);
        }
      }
    }
  }
  return names;
}

function describe(e) {
  return `${e.instancePath || "/"}: ${e.message ?? `${e.keyword} ${JSON.stringify(e.params)}`}`;
}

// The checks must be able to fail: a copy of each object with an unknown field, and one with
// a wrong type, must both be refused.
async function selfTest(doc) {
  const validate = await validator(doc);
  const target = doc.spec ? "spec" : "metadata";
  const unknown = structuredClone(doc);
  unknown[target].notAField = 1;
  const seen = [];
  validate(recorder(unknown, "", seen));
  const wrongType = structuredClone(doc);
  wrongType.metadata.name = 42;
  return unknownFields(seen).includes(`/${target}/notAField`) && !validate(wrongType);
}

function pluginConfigs(doc) {
  if (doc.kind === "WasmPlugin") return [["spec.pluginConfig", doc.spec?.pluginConfig]];
  if (doc.kind === "EnvoyExtensionPolicy") {
    return (doc.spec?.wasm ?? []).map((w, i) => [`spec.wasm[${i}].config`, w.config]);
  }
  return [];
}

async function main() {
  const args = process.argv.slice(2);
  let tool = path.join(here, "..", "..", "target", "debug", "oidc-envoy-config");
  const files = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--tool") tool = args[++i];
    else files.push(args[i]);
  }
  let passed = 0;
  let failed = 0;
  const fail = (what, why) => {
    failed++;
    console.log(`FAIL ${what}: ${why}`);
  };
  for (const file of files) {
    const docs = YAML.parseAllDocuments(readFileSync(file, "utf8"))
      .map((d) => {
        if (d.errors.length) throw new Error(`${file}: ${d.errors[0].message}`);
        return d.toJSON();
      })
      .filter((d) => d);
    const clusters = clusterNames(docs);
    for (const doc of docs) {
      const what = `${file}: ${doc.kind} ${doc.metadata?.name}`;
      const validate = await validator(doc);
      if (!validate) {
        fail(what, `no schema for ${doc.apiVersion} ${doc.kind}`);
        continue;
      }
      const seen = [];
      const ok = validate(recorder(doc, "", seen));
      const problems = [];
      if (!ok) problems.push(...validate.errors.map(describe));
      problems.push(...unknownFields(seen).map((f) => `${f}: unknown field (not in the schema)`));
      for (const [where, config] of pluginConfigs(doc)) {
        if (!config) {
          problems.push(`${where}: missing`);
          continue;
        }
        const r = checkPlugin(tool, config);
        if (r.error) {
          problems.push(`${where}: ${r.error}`);
          continue;
        }
        for (const key of ["idp_cluster", "tls_client_auth_cluster"]) {
          const name = r.summary[key];
          if (name && !clusters.has(name)) {
            problems.push(`${where}.${key}: cluster \`${name}\` is not made by this file (${[...clusters].join(", ")})`);
          }
        }
      }
      if (!(await selfTest(doc))) problems.push("the checks accept a broken copy of this object");
      if (problems.length) {
        fail(what, "\n  " + problems.join("\n  "));
      } else {
        passed++;
        console.log(`ok   ${what}`);
      }
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.log(`FAIL ${e.message}`);
  console.log("0 passed, 1 failed");
  process.exit(1);
});

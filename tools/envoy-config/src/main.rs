//! oidc-envoy-config: see `--help`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use oidc_envoy_config::render::{Addr, Options};
use oidc_envoy_config::{check, run_reporting, Request};

const USAGE: &str = "\
oidc-envoy-config: a complete Envoy bootstrap for the envoy-oidc filter from one plugin configuration

usage: oidc-envoy-config PLUGIN.yaml|PLUGIN.json|- [options]

PLUGIN is this filter's configuration (YAML or JSON, as in envoy/demo.yaml), or Kong's
openid-connect plugin as the Admin API shows it ({\"name\": \"openid-connect\", \"config\": {...}},
or a {\"data\": [...]} list) or as decK shows it (plugins: - name: openid-connect, at any level):
Kong's is detected and translated, and the Kong fields this filter does not support are listed
on stderr. `idp_cluster` / `tls_client_auth_cluster` default to `idp` / `idp-mtls` (for a policy
with another IdP: `idp-POLICY` / `idp-POLICY-mtls`).

A decK file with routes is translated whole: its global openid-connect plugin (else the first
one a route takes) is the default policy, every other plugin a policy named after its route or service, and
every Kong route an Envoy route whose metadata names its policy (its plugin, else its service's,
else the global one; none: the filter is off on it); any other request gets Kong's 404. Every
route goes to --upstream.

options:
  --out FILE              write the bootstrap to FILE (default: stdout)
  --client-cert FILE      client certificate (chain) presented to the IdP (tls_client_auth)
  --client-key FILE       its private key
  --idp-ca FILE           CA that signs the IdP's server certificate
                          (default: /etc/ssl/certs/ca-certificates.crt)
  --verify-depth N        max_verify_depth of the IdP's certificate chain (default: 4)
  --discovery FILE        the IdP's saved discovery document: the client-certificate cluster
                          then follows its mtls_endpoint_aliases
  --listen HOST:PORT      listener address (default: 0.0.0.0:8000)
  --upstream HOST:PORT    the protected application (default: 127.0.0.1:9080)
  --admin PORT            admin interface on 127.0.0.1 (default: 9901; 0: none)
  --wasm FILE             the filter module (default: dist/oidc.wasm)
  --sds                   reference the client certificate through file-based SDS: writes
                          OUT-client-cert-sds.yaml beside --out (which it needs)
  --from-kong             the input is Kong's (also a bare Kong `config` object)
  --kong-plugin SELECTOR  only this openid-connect plugin, for every request, when the input
                          has several (its id, instance_name, or position from 1); a decK
                          file's routes are then not rendered
  --check                 only validate PLUGIN as the filter will load it (ours as it is,
                          Kong's translated) and print a JSON summary; no rendering
  --verbose               also list the Kong fields dropped at their defaults
  -h, --help              this text
  --version               the version
";

struct Cli {
    input: String,
    check: bool,
    out: Option<PathBuf>,
    sds: bool,
    verbose: bool,
    discovery: Option<PathBuf>,
    req_from_kong: bool,
    kong_plugin: Option<String>,
    options: Options,
}

fn parse_args(args: Vec<String>) -> Result<Option<Cli>, String> {
    let mut input = None;
    let mut out = None;
    let mut sds = false;
    let mut verbose = false;
    let mut check = false;
    let mut discovery = None;
    let mut from_kong = false;
    let mut kong_plugin = None;
    let mut cert = None;
    let mut key = None;
    let mut options = Options {
        source: String::new(),
        listen: Addr { host: "0.0.0.0".into(), port: 8000 },
        upstream: Addr { host: "127.0.0.1".into(), port: 9080 },
        admin: Some(9901),
        wasm: "dist/oidc.wasm".into(),
        client_cert: None,
        idp_ca: None,
        verify_depth: 4,
        sds_path: None,
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value =
            |name: &str| -> Result<String, String> { inline.clone().or_else(|| it.next()).ok_or_else(|| format!("{name} needs a value")) };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--version" => {
                println!("oidc-envoy-config {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "--out" | "-o" => out = Some(PathBuf::from(value("--out")?)),
            "--client-cert" => cert = Some(value("--client-cert")?),
            "--client-key" => key = Some(value("--client-key")?),
            "--idp-ca" => options.idp_ca = Some(value("--idp-ca")?),
            "--verify-depth" => {
                options.verify_depth = value("--verify-depth")?.parse().map_err(|_| "--verify-depth: a number".to_string())?
            }
            "--discovery" => discovery = Some(PathBuf::from(value("--discovery")?)),
            "--listen" => options.listen = Addr::parse(&value("--listen")?).map_err(|e| format!("--listen: {e}"))?,
            "--upstream" => options.upstream = Addr::parse(&value("--upstream")?).map_err(|e| format!("--upstream: {e}"))?,
            "--admin" => {
                let port: u16 = value("--admin")?.parse().map_err(|_| "--admin: a port number".to_string())?;
                options.admin = (port != 0).then_some(port);
            }
            "--wasm" => options.wasm = value("--wasm")?,
            "--sds" => sds = true,
            "--from-kong" => from_kong = true,
            "--kong-plugin" => kong_plugin = Some(value("--kong-plugin")?),
            "--verbose" | "-v" => verbose = true,
            "--check" => check = true,
            f if f.starts_with('-') && f != "-" => return Err(format!("unknown option {f}")),
            _ => {
                if input.replace(arg).is_some() {
                    return Err("one plugin configuration file only".into());
                }
            }
        }
    }
    let input = input.ok_or("the plugin configuration file is missing")?;
    options.client_cert = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err("--client-cert and --client-key go together".into()),
    };
    Ok(Some(Cli { input, check, out, sds, verbose, discovery, req_from_kong: from_kong, kong_plugin, options }))
}

/// `dir/envoy.yaml` → `dir/envoy-client-cert-sds.yaml`, absolute (Envoy resolves a relative
/// path against its working directory).
fn sds_path(out: &Path) -> Result<PathBuf, String> {
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("envoy");
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir = dir.canonicalize().map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir.join(format!("{stem}-client-cert-sds.yaml")))
}

fn main() -> ExitCode {
    let cli = match parse_args(std::env::args().skip(1).collect()) {
        Ok(Some(cli)) => cli,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("oidc-envoy-config: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match render(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oidc-envoy-config: {e}");
            ExitCode::FAILURE
        }
    }
}

fn render(mut cli: Cli) -> Result<(), String> {
    let input = if cli.input == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| format!("stdin: {e}"))?;
        s
    } else {
        std::fs::read_to_string(&cli.input).map_err(|e| format!("{}: {e}", cli.input))?
    };
    cli.options.source = if cli.input == "-" { "standard input".into() } else { cli.input.clone() };
    if cli.check {
        let (report, summary) = check(&input, cli.req_from_kong, cli.kong_plugin.as_deref(), cli.verbose)
            .map_err(|e| format!("{}: {e}", cli.options.source))?;
        for line in &report {
            eprintln!("oidc-envoy-config: {line}");
        }
        println!("{summary}");
        return Ok(());
    }
    let discovery = match &cli.discovery {
        Some(p) => Some(std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    let sds = if cli.sds {
        let out = cli.out.as_deref().ok_or("--sds writes its file beside --out: give --out")?;
        if cli.options.client_cert.is_none() {
            return Err("--sds needs --client-cert and --client-key".into());
        }
        let path = sds_path(out)?;
        cli.options.sds_path = Some(path.to_string_lossy().into_owned());
        Some(path)
    } else {
        None
    };
    for (what, file) in [
        cli.options.client_cert.as_ref().map(|(c, _)| ("--client-cert", c.as_str())),
        cli.options.client_cert.as_ref().map(|(_, k)| ("--client-key", k.as_str())),
        cli.options.idp_ca.as_deref().map(|c| ("--idp-ca", c)),
        Some(("--wasm", cli.options.wasm.as_str())),
    ]
    .into_iter()
    .flatten()
    {
        if !Path::new(file).exists() {
            eprintln!("oidc-envoy-config: warning: {what} {file} does not exist here (Envoy opens it where it runs)");
        }
    }

    let req =
        Request { input, from_kong: cli.req_from_kong, kong_plugin: cli.kong_plugin.clone(), discovery, options: cli.options.clone() };
    let mut report = Vec::new();
    let result = run_reporting(&req, cli.verbose, &mut report);
    for line in &report {
        eprintln!("oidc-envoy-config: {line}");
    }
    let rendered = result?;
    if let (Some(path), Some(content)) = (&sds, &rendered.sds) {
        write_atomically(path, content)?;
        eprintln!("oidc-envoy-config: wrote {}", path.display());
    }
    match &cli.out {
        Some(out) => {
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            write_atomically(out, &rendered.bootstrap)?;
            eprintln!("oidc-envoy-config: wrote {}", out.display());
        }
        None => print!("{}", rendered.bootstrap),
    }
    Ok(())
}

/// Write beside, then rename: Envoy watches SDS files and must never read half of one.
fn write_atomically(path: &Path, content: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

"""The native build (dist/liboidc.so, an Envoy dynamic module): what only it has to prove.

- A panic inside the module (the test-only `panic-test` build of it, dist/panic-test/)
  answers 500 and Envoy keeps serving: no panic crosses the C ABI.
- native/check_abi.py, which `make build-native` runs, matches the library against the
  installed Envoy, and refuses a library calling a callback Envoy does not export (it
  would not load: the library is bound when Envoy opens it).
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

import harness

PANIC_BUILD = harness.REPO_ROOT / "dist" / "panic-test" / "liboidc.so"
CHECK_ABI = harness.REPO_ROOT / "native" / "check_abi.py"


def test_a_panic_in_the_module_answers_500_and_envoy_keeps_serving(envoy, build, jwt_idp):
    harness.needs(build, "native", "a panic traps the Wasm VM, which Envoy then replaces; unwinding is the native module's concern")
    if not PANIC_BUILD.exists():
        pytest.fail(f"{PANIC_BUILD} not found: make build-native-panic-test", pytrace=False)
    proxy = envoy(harness.mtls_plugin_config(jwt_idp, ["bearer"]), idp=jwt_idp, native_path=PANIC_BUILD,
                  concurrency=1)
    token = harness.idp_jwt(jwt_idp)
    bearer = {"authorization": f"Bearer {token}"}
    assert proxy.get("/", headers=bearer).status_code == 200
    for _ in range(3):
        r = proxy.get("/", headers={**bearer, "x-oidc-test-panic": "1"})
        assert r.status_code == 500 and r.json() == {"error": "internal_error"}, r.text
    proxy.wait_for_log("a panic in request_headers was caught", timeout=5)
    # the same worker goes on serving, with its caches
    assert proxy.get("/", headers=bearer).status_code == 200
    assert proxy.get("/").status_code == 401
    assert proxy.returncode is None


def check_abi(lib: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK_ABI), str(lib), harness.envoy_binary(), *flags],
                          capture_output=True, text=True, timeout=60)


# What the README's table of Envoy versions says of the native build: a callback each
# unsupported line lacks (the library would not load there).
UNSUPPORTED = {
    (1, 36): "envoy_dynamic_module_callback_http_get_header",
    (1, 37): "envoy_dynamic_module_callback_http_filter_config_http_callout",
    (1, 38): "envoy_dynamic_module_callback_http_filter_config_record_histogram_value",
}


def envoy_line() -> tuple[int, int]:
    version = subprocess.run([harness.envoy_binary(), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"/(\d+)\.(\d+)\.\d+/", version)
    assert m, version
    return int(m.group(1)), int(m.group(2))


def test_the_library_matches_the_installed_envoy_or_is_refused_as_the_readme_says():
    line = envoy_line()
    r = check_abi(harness.NATIVE_PATH, "--abi-mismatch-ok")
    if line in UNSUPPORTED:
        assert r.returncode == 1, r.stdout
        assert f"calls {UNSUPPORTED[line]}, which" in r.stderr, r.stderr
        return
    # Envoy 1.39 speaks ABI v0.1.0 and loads this v0.2.0 library with a warning.
    assert r.returncode == 0, r.stderr
    assert "callbacks exported" in r.stdout
    if line == (1, 40):
        assert "ABI v0.2.0: Envoy carries v0.2.0\n" in r.stdout, r.stdout
        assert check_abi(harness.NATIVE_PATH).returncode == 0


def test_a_library_calling_a_callback_envoy_lacks_is_refused(tmp_path):
    src = tmp_path / "lib.c"
    src.write_text(
        "extern void envoy_dynamic_module_callback_http_no_such_callback(void);\n"
        "const char* envoy_dynamic_module_on_program_init(void) {\n"
        "  envoy_dynamic_module_callback_http_no_such_callback(); return \"v0.2.0\"; }\n"
        "void envoy_dynamic_module_on_http_filter_no_such_hook(void) {}\n")
    lib = tmp_path / "liboidc.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    r = check_abi(lib)
    assert r.returncode == 1
    assert "envoy_dynamic_module_callback_http_no_such_callback" in r.stderr
    assert "envoy_dynamic_module_on_http_filter_no_such_hook" in r.stderr

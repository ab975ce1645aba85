//! With the `ebpf` feature, compiles the kernel telemetry collector
//! (`src/ebpf/collector.bpf.c`) to BPF bytecode with clang; without it, does nothing.
//! Needs Debian's `clang` and `libbpf-dev` (the `bpf/bpf_helpers.h` headers).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CLANG");
    if std::env::var_os("CARGO_FEATURE_EBPF").is_none() {
        return;
    }
    let source = "src/ebpf/collector.bpf.c";
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("collector.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // linux/bpf.h includes <asm/types.h>, which Debian keeps under the multiarch triple.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .arg(format!("-I{multiarch}"))
        .args(["-c", source, "-o"])
        .arg(&object)
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "{clang} could not compile {source} ({status}): the `ebpf` feature needs \
             `apt-get install -y clang libbpf-dev`"
        ),
        Err(error) => panic!(
            "cannot run {clang} ({error}): the `ebpf` feature needs \
             `apt-get install -y clang libbpf-dev` (or set CLANG to a clang with the bpf target)"
        ),
    }
}

//! Compiles the eBPF crate (nightly, bpfel-unknown-none) into OUT_DIR so the
//! CLI can embed it with `include_bytes_aligned!`. `cargo xtask setup`
//! installs what this needs (nightly rust-src, bpf-linker).
fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../scope-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "scope-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

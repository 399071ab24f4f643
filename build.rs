//! Records the Rust target triple this binary is built for (`TARGET`, which cargo gives only
//! to build scripts), so that an `update_agent` offer for another target is refused before
//! any download and the privileged half checks the signed `target=` against it
//! (`rig_agent::TARGET`).

fn main() {
    let target = std::env::var("TARGET").expect("cargo sets TARGET for build scripts");
    println!("cargo:rustc-env=RIG_AGENT_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}

//! Builds `nsbox-helper` (src/helper/nsbox-helper.c), which the library embeds and execs from a memfd.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "src/helper/nsbox-helper.c";
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("nsbox-helper");
    let compiler = cc::Build::new().opt_level(2).warnings(true).get_compiler();
    let mut cmd: Command = compiler.to_command();
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-o"]).arg(&out).arg(src);
    let status = cmd.status().expect("cannot run the C compiler");
    assert!(status.success(), "building {src} failed");
}

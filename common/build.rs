//! Compiles `../proto` with protox (no system `protoc`) into tonic/prost
//! code, and writes the encoded descriptor set for gRPC reflection.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "pulp/tasking/v1/tasks.proto",
        "pulp/tasking/v1/task_groups.proto",
        "pulp/tasking/v1/workers.proto",
        "pulp/content/v1/artifacts.proto",
        "pulp/content/v1/contents.proto",
        "pulp/content/v1/repositories.proto",
        "pulp/content/v1/publications.proto",
        "pulp/content/v1/exporters.proto",
    ];
    println!("cargo:rerun-if-changed=../proto");
    let fds = protox::compile(files, ["../proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("pulp_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // `Workers.Connect` would clash with the generated `connect`
        // constructor: clients wrap a `Channel` with `new` instead.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}

//! Generates Envoy's rate limit service (RLS) v3 from `proto/rls.proto` with a pure-Rust
//! protobuf compiler (protox), so building needs no `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/rls.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}

// Compiles the .proto files with the protoc shipped by `protoc-bin-vendored`, so a fresh
// machine needs no system protoc. Also writes a descriptor set for gRPC server reflection.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("laundry_descriptor.bin"))
        .btree_map(".")
        .compile_protos(&["proto/inventory.proto", "proto/raft.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
